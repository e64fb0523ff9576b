public import NIOCore

/// Where ``Sender/publish(_:to:idempotencyKey:)`` sends: the targets of the
/// `send…` calls, as one value (what the HTTP publish API decodes into).
public enum PublishTarget: Sendable, Hashable {
    /// Every connection of a user.
    case user(String)
    /// Every connection of each of these users.
    case users([String])
    /// One connection, on whichever node it is.
    case connection(DistributedFD)
    /// Every member of a room.
    case room(String)
    /// Every connection of every node.
    case everyone
}

/// What a publish reached: the count the matching `send…` call returns.
public struct PublishResult: Sendable, Hashable {
    /// Nodes that had a target (`send(uid:)`, `send(room:)`, `sendAll`), or 1/0 for one connection.
    public var reached: Int
    /// Per user, for ``PublishTarget/users(_:)`` (as `sendMulti` returns it).
    public var perUser: [String: Int]?
    /// `true` when an earlier publish with the same idempotency key did the
    /// work, and this is its result: nothing was delivered this time.
    public var duplicate: Bool

    /// A result.
    public init(reached: Int, perUser: [String: Int]? = nil, duplicate: Bool = false) {
        self.reached = reached
        self.perUser = perUser
        self.duplicate = duplicate
    }

    /// The text stored under an idempotency key: the count, then `uid TAB count` lines.
    var stored: String {
        var lines = ["\(reached)"]
        for (uid, count) in (perUser ?? [:]).sorted(by: { $0.key < $1.key }) { lines.append("\(uid)\t\(count)") }
        return lines.joined(separator: "\n")
    }

    /// Parses ``stored`` (as a duplicate's answer).
    init?(stored: String) {
        let lines = stored.split(separator: "\n", omittingEmptySubsequences: false)
        guard let first = lines.first, let reached = Int(first) else { return nil }
        var perUser: [String: Int] = [:]
        for line in lines.dropFirst() {
            let parts = line.split(separator: "\t")
            guard parts.count == 2, let count = Int(parts[1]) else { return nil }
            perUser[String(parts[0])] = count
        }
        self.init(reached: reached, perUser: lines.count > 1 ? perUser : nil, duplicate: true)
    }
}

extension Sender {
    /// Sends `message` to `target` and waits for Redis, like the matching
    /// `send…` call; with an `idempotencyKey`, at most once per key within
    /// `idempotencyWindow` (default 5 min) across the cluster: a second
    /// publish with the same key — concurrent, on another node, or a retry —
    /// delivers nothing and answers with the first one's result
    /// (`duplicate: true`), waiting for it if the first is still running.
    /// A publish that fails gives its key back, so a retry can deliver.
    /// - Throws: ``ClusterError`` for bad names or a bad key (the naming
    ///   rules); an error of the Redis layer when Redis cannot be reached.
    public func publish(_ message: WebSocketMessage, to target: PublishTarget,
                        idempotencyKey: String? = nil) async throws -> PublishResult {
        guard let idempotencyKey else { return try await deliver(message, to: target) }
        try node.checks.counted { () throws(ClusterError) in
            try Names.check(idempotencyKey, .idempotencyKey, maxBytes: node.configuration.limits.maxNameBytes)
        }
        let key = node.keys.idempotency(idempotencyKey)
        let window = node.configuration.idempotencyWindow
        let clock = ContinuousClock()
        // A first publish still running after this long (it waits for Redis at most a command timeout) is given up on.
        let deadline = clock.now + .seconds(10)
        while true {
            // Claim the key, or read what the first publish left there.
            let claimed = try await node.redis.send(RedisCommand("SET", .string(key), "", "NX", "PX", .integer(window.milliseconds)))
            if !claimed.isNull {
                do {
                    let result = try await deliver(message, to: target)
                    _ = try? await node.redis.send(RedisCommand("SET", .string(key), .string(result.stored), "XX", "KEEPTTL"))
                    return result
                } catch {
                    _ = try? await node.redis.send(RedisCommand("DEL", .string(key)))
                    throw error
                }
            }
            let stored = try await node.redis.send(RedisCommand("GET", .string(key)))
            if let text = stored.string, !text.isEmpty, let result = PublishResult(stored: text) { return result }
            // Still running elsewhere (empty), or it failed and gave the key back (gone): look again shortly.
            guard clock.now < deadline else { throw RedisError.timeout }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    private func deliver(_ message: WebSocketMessage, to target: PublishTarget) async throws -> PublishResult {
        switch target {
        case .user(let uid): PublishResult(reached: try await send(uid: uid, message))
        case .users(let uids):
            try await {
                let perUser = try await sendMulti(uids: uids, message)
                return PublishResult(reached: perUser.values.reduce(0, +), perUser: perUser)
            }()
        case .connection(let fd): PublishResult(reached: try await send(to: fd, message) ? 1 : 0)
        case .room(let room): PublishResult(reached: try await send(room: room, message))
        case .everyone: PublishResult(reached: try await sendAll(message))
        }
    }
}
