/// The Redis scripts of history: one step that appends a message to its
/// stream and publishes it with its position, so the offset order is the
/// delivery order on every node; and the read of a stream's current position.
enum HistoryScript {
    /// Appends and publishes.
    ///
    /// KEYS: meta, stream. ARGV: channel, envelope, max length, stream TTL ms,
    /// meta TTL ms, a new epoch (used when the stream has none), publish verb.
    /// Returns `{offset, epoch, subscribers}`. The published message is the
    /// envelope followed by its history block (offset u64, epoch u16 + bytes).
    static let publish = LuaScript("""
    local epoch = redis.call('HGET', KEYS[1], 'epoch')
    if not epoch then
      epoch = ARGV[6]
      redis.call('DEL', KEYS[2])
      redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
    end
    local top = redis.call('HINCRBY', KEYS[1], 'top', 1)
    redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], string.format('%d-0', top), 'm', ARGV[2])
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    local function be(n, width)
      local out = {}
      for i = width, 1, -1 do out[i] = string.char(n % 256); n = math.floor(n / 256) end
      return table.concat(out)
    end
    local reached = redis.call(ARGV[7], ARGV[1], ARGV[2] .. be(top, 8) .. be(#epoch, 2) .. epoch)
    return {top, epoch, reached}
    """)

    /// The stream's current position, starting an epoch if it has none (so a
    /// client told "position 0 of epoch E" can recover from it later).
    ///
    /// KEYS: meta. ARGV: meta TTL ms, a new epoch. Returns `{top, epoch}`.
    static let current = LuaScript("""
    local epoch = redis.call('HGET', KEYS[1], 'epoch')
    if not epoch then
      epoch = ARGV[2]
      redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
      redis.call('PEXPIRE', KEYS[1], ARGV[1])
    end
    return {tonumber(redis.call('HGET', KEYS[1], 'top')), epoch}
    """)

    /// A new epoch: 12 random base-36 characters.
    static func newEpoch() -> String {
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz")
        return String((0..<12).map { _ in alphabet[Int.random(in: 0..<alphabet.count)] })
    }
}
