import Logging

/// Who is connected where, kept in Redis with the seed's key patterns:
/// a user's key holds the SET of its distributed fds (every device), an fd's
/// key holds its user; both expire after `ttl` unless their node refreshes them.
///
/// Answers never include an fd whose node is dead (no heartbeat within the
/// liveness window) or has restarted since (another epoch).
public struct Relations: Sendable {
    let node: ClusterNode

    /// Every live connection of `uid`, on any node. Seed: `findUserFd`.
    /// - Throws: ``ClusterError/invalidName(_:)`` for a bad uid.
    public func findUserFDs(uid: String) async throws -> [DistributedFD] {
        try node.check(uid: uid)
        let members = try await node.redis.send(RedisCommand("SMEMBERS", .string(node.keys.user(uid))))
        let fds = (members.array ?? []).compactMap { $0.string.flatMap(DistributedFD.init) }
        return try await node.live(fds)
    }

    /// `true` if `uid` has at least one live connection anywhere.
    public func isOnline(uid: String) async throws -> Bool {
        try await !findUserFDs(uid: uid).isEmpty
    }

    /// The uid a connection is bound to, if it is live and bound.
    public func user(of fd: DistributedFD) async throws -> String? {
        try node.check(fd: fd)
        guard try await !node.live([fd]).isEmpty else { return nil }
        return try await node.redis.send(RedisCommand("GET", .string(node.keys.fd(fd)))).string
    }
}

extension ClusterNode {
    /// Binds a connection of this node to `uid`: the node subscribes to the
    /// user's channel (if this is its first local connection of that user)
    /// and records the relation in Redis. A connection has one uid at a time.
    /// Seed: `bindRelation`.
    /// - Throws: ``ClusterError/invalidName(_:)`` for a bad uid,
    ///   ``ClusterError/unknownConnection(_:)`` if `fd` is not open on this node.
    public func bind(_ fd: DistributedFD, uid: String) async throws {
        try check(uid: uid)
        guard fd.node == id, fd.epoch == epoch else { throw ClusterError.unknownConnection(fd.description) }
        let previous = try await registry.bind(fd.fd, uid: uid)
        var commands: [RedisCommand] = []
        if let previous { commands += removalCommands(fd, uid: previous) }
        let member = RedisArgument.string(fd.description)
        let ttl = RedisArgument.integer(configuration.ttl.wholeSeconds)
        commands += [
            RedisCommand("SADD", .string(keys.user(uid)), member),
            RedisCommand("EXPIRE", .string(keys.user(uid)), ttl),
            RedisCommand("SET", .string(keys.fd(fd)), .string(uid), "EX", ttl),
            RedisCommand("SADD", .string(keys.nodeFDs(id)), member),
        ]
        try await redis.send(batch: commands).throwFirstFailure()
    }

    /// Unbinds a connection of this node from its uid. Seed: `removeRelation`.
    public func unbind(_ fd: DistributedFD) async throws {
        guard fd.node == id, fd.epoch == epoch else { throw ClusterError.unknownConnection(fd.description) }
        if let uid = try await registry.unbind(fd.fd) {
            try await redis.send(batch: removalCommands(fd, uid: uid)).throwFirstFailure()
        }
    }

    /// Adds a connection of this node to a room. The node records in Redis
    /// that it has members of the room (for the queue driver's routing).
    /// - Throws: ``ClusterError/invalidName(_:)`` for a bad room name,
    ///   ``ClusterError/tooManyRooms(limit:)`` past `limits.maxRoomsPerConnection`,
    ///   ``ClusterError/unknownConnection(_:)`` if `fd` is not open on this node.
    public func join(_ fd: DistributedFD, room: String) async throws {
        try check(room: room)
        guard fd.node == id, fd.epoch == epoch else { throw ClusterError.unknownConnection(fd.description) }
        let first: Bool
        do {
            first = try await registry.join(fd.fd, room: room, maxRooms: configuration.limits.maxRoomsPerConnection)
        } catch ClusterError.tooManyRooms(let limit) {
            counters.hit(.roomsPerConnection)
            throw ClusterError.tooManyRooms(limit: limit)
        }
        if first {
            try await redis.send(batch: [
                RedisCommand("SADD", .string(keys.roomNodes(room)), .string(id)),
                RedisCommand("SADD", .string(keys.nodeRooms(id)), .string(room)),
            ]).throwFirstFailure()
        }
    }

    /// Removes a connection of this node from a room.
    public func leave(_ fd: DistributedFD, room: String) async throws {
        try check(room: room)
        guard fd.node == id, fd.epoch == epoch else { throw ClusterError.unknownConnection(fd.description) }
        if try await registry.leave(fd.fd, room: room) {
            try await redis.send(batch: roomRemovalCommands(node: id, rooms: [room])).throwFirstFailure()
        }
    }

    func roomRemovalCommands(node: String, rooms: [String]) -> [RedisCommand] {
        rooms.flatMap { room in
            [RedisCommand("SREM", .string(keys.roomNodes(room)), .string(node)),
             RedisCommand("SREM", .string(keys.nodeRooms(node)), .string(room))]
        }
    }

    func removalCommands(_ fd: DistributedFD, uid: String) -> [RedisCommand] {
        [
            RedisCommand("SREM", .string(keys.user(uid)), .string(fd.description)),
            RedisCommand("DEL", .string(keys.fd(fd))),
            RedisCommand("SREM", .string(keys.nodeFDs(fd.node)), .string(fd.description)),
        ]
    }

    /// The subset of `fds` whose node is alive in the same epoch.
    func live(_ fds: [DistributedFD]) async throws -> [DistributedFD] {
        let nodes = Array(Set(fds.map(\.node)))
        guard !nodes.isEmpty else { return [] }
        let epochs = try await values(of: nodes.map(keys.alive))
        var alive: [String: UInt64] = [:]
        for (node, value) in zip(nodes, epochs) {
            if let text = value.string, let epoch = UInt64(text, radix: 16) { alive[node] = epoch }
        }
        return fds.filter { alive[$0.node] == $0.epoch }
    }
}

extension Array where Element == Result<RedisValue, RedisError> {
    /// Throws the first failed command's error.
    func throwFirstFailure() throws {
        for result in self { _ = try result.get() }
    }
}
