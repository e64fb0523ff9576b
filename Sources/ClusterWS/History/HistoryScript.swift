import NIOCore

/// The Redis scripts of history: one step that appends a message to its
/// stream and hands it on with its position — published (pub/sub driver) or
/// appended to each target node's queue (queue driver) — so the offset order
/// is the delivery order on every node; and the read of a stream's current
/// position.
enum HistoryScript {
    /// The common first part: the stream's epoch (a new one when it has
    /// none) and next offset (`top`), the `XADD` with exact `MAXLEN` and the
    /// expiries; leaves `msg`, the envelope followed by its history block
    /// (offset u64, epoch u16 + bytes).
    ///
    /// KEYS: meta, stream. ARGV 1–6: channel, envelope, max length, stream
    /// TTL ms, meta TTL ms, a new epoch.
    private static let append = """
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
    local msg = ARGV[2] .. be(top, 8) .. be(#epoch, 2) .. epoch

    """

    /// Appends and publishes (pub/sub driver). ARGV 7: the publish verb.
    /// Returns `{offset, epoch, subscribers}`.
    static let publish = LuaScript(append + """
    return {top, epoch, redis.call(ARGV[7], ARGV[1], msg)}
    """)

    /// Appends and queues (queue driver, one Redis server): the message goes
    /// to the queue of every node with a connection of the user (or a member
    /// of the room) — this node's too, so every node delivers in offset order.
    /// ARGV 7–11: namespace, mode (user|room), room name, user key, queue max length.
    /// Returns `{offset, epoch, nodes}`.
    static let queue = LuaScript(append + """
    local ns, mode, target, userKey, maxlen = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
    local targetEpoch = ''
    \(QueueScript.targets)
    local count = 0
    for node, nodeEpoch in pairs(epochs) do
      redis.call('XADD', ns .. ':queue:' .. node, 'MAXLEN', '~', maxlen, '*', 'epoch', nodeEpoch, 'env', msg)
      count = count + 1
    end
    return {top, epoch, count}
    """)

    /// Appends only (queue driver on a Redis Cluster, where the nodes' queues
    /// are in other slots: the node writes them next). Returns `{offset, epoch}`.
    static let appendOnly = LuaScript(append + """
    return {top, epoch}
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

    /// Every script of history (loaded on each Redis connection when history is on).
    static var all: [LuaScript] { [publish, queue, appendOnly, current] }

    /// A new epoch: 12 random base-36 characters.
    static func newEpoch() -> String {
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz")
        return String((0..<12).map { _ in alphabet[Int.random(in: 0..<alphabet.count)] })
    }
}

extension HistoryScript {
    /// KEYS and ARGV 1–6 of the scripts above for a message to `channel`'s stream.
    static func call(_ delivery: RemoteDelivery, channel: String, history: ClusterConfiguration.History)
        -> (keys: [String], arguments: [RedisArgument]) {
        let keys = HistoryKeys(channel: channel)
        return ([keys.meta, keys.stream], [
            .string(channel), .bytes(delivery.envelope), .integer(history.maxLength),
            .integer(history.maxAge.milliseconds), .integer(history.epochLifetime.milliseconds), .string(newEpoch()),
        ])
    }

    /// The position a script answered (`{offset, epoch, …}`).
    static func position(in reply: RedisValue) throws -> StreamPosition {
        guard let parts = reply.array, parts.count >= 2, let top = parts[0].int, top > 0, let epoch = parts[1].string else {
            throw RedisError.protocolError("unexpected reply to the history script")
        }
        return StreamPosition(offset: UInt64(top), epoch: epoch)
    }
}
