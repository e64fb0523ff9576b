/// The scripts of room presence. Each changes one room's member hash and
/// user counts and publishes the per-user event in the same step, so a
/// join is published only by the script that added a user's first
/// connection, and a leave only by the one that removed its last — once,
/// whichever node (or janitor) runs it.
///
/// KEYS: members hash, users hash (``PresenceKeys``).
/// Event payload: `join|leave` NUL room NUL uid NUL fd NUL metadata.
enum PresenceScripts {
    /// The shared Lua helpers: remove one member (`drop`), publish (`emit`).
    /// ARGV 1–3 of every script: events channel, publish verb, room.
    private static let helpers = """
    local function emit(kind, uid, fd, meta)
      redis.call(ARGV[2], ARGV[1], kind .. '\\0' .. ARGV[3] .. '\\0' .. uid .. '\\0' .. fd .. '\\0' .. meta)
    end
    local function drop(fd, value)
      redis.call('HDEL', KEYS[1], fd)
      local cut = string.find(value, '\\0', 1, true)
      local uid = cut and string.sub(value, 1, cut - 1) or value
      if redis.call('HINCRBY', KEYS[2], uid, -1) <= 0 then
        redis.call('HDEL', KEYS[2], uid)
        emit('leave', uid, fd, '')
        return 1
      end
      return 0
    end

    """

    /// ARGV 4–6: fd, uid, metadata. Returns 1 when it was the user's first connection in the room.
    static let join = LuaScript(helpers + """
    local fd, uid, meta = ARGV[4], ARGV[5], ARGV[6]
    local previous = redis.call('HGET', KEYS[1], fd)
    redis.call('HSET', KEYS[1], fd, uid .. '\\0' .. meta)
    if previous then return 0 end
    if redis.call('HINCRBY', KEYS[2], uid, 1) == 1 then
      emit('join', uid, fd, meta)
      return 1
    end
    return 0
    """)

    /// ARGV 4: fd. Returns 1 when it was the user's last connection in the room.
    static let leave = LuaScript(helpers + """
    local value = redis.call('HGET', KEYS[1], ARGV[4])
    if not value then return 0 end
    return drop(ARGV[4], value)
    """)

    /// Every member of a node (a dead one, or this one shutting down or
    /// restarted) leaves. ARGV 4–5: node, an epoch (hex) to keep or ''.
    /// Returns how many users left.
    static let leaveNode = LuaScript(helpers + """
    local all = redis.call('HGETALL', KEYS[1])
    local left = 0
    for i = 1, #all, 2 do
      local node, epoch = string.match(all[i], '^(.*)#(%x+)#%d+$')
      if node == ARGV[4] and epoch ~= ARGV[5] then left = left + drop(all[i], all[i + 1]) end
    end
    return left
    """)

    static var all: [LuaScript] { [join, leave, leaveNode] }
}
