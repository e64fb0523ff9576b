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
        try node.checks.check(uid: uid)
        let members = try await node.redis.send(RedisCommand("SMEMBERS", .string(node.keys.user(uid))))
        let fds = (members.array ?? []).compactMap { $0.string.flatMap(DistributedFD.init) }
        return try await node.liveness.live(fds)
    }

    /// `true` if `uid` has at least one live connection anywhere.
    public func isOnline(uid: String) async throws -> Bool {
        try await !findUserFDs(uid: uid).isEmpty
    }

    /// The uid a connection is bound to, if it is live and bound.
    public func user(of fd: DistributedFD) async throws -> String? {
        try node.checks.check(node: fd.node)
        guard try await !node.liveness.live([fd]).isEmpty else { return nil }
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
        try checks.check(uid: uid)
        try requireLocal(fd)
        try await registration.bind(fd, uid: uid)
    }

    /// Unbinds a connection of this node from its uid. Seed: `removeRelation`.
    public func unbind(_ fd: DistributedFD) async throws {
        try requireLocal(fd)
        if let uid = try await registry.unbind(fd.fd) {
            registry.session(fd.fd)?.end(.user(uid))
            try await redis.send(batch: commands.unbind(fd, uid: uid)).throwFirstFailure()
        }
    }

    /// Adds a connection of this node to a room. The node records in Redis
    /// that it has members of the room (for the queue driver's routing).
    ///
    /// With `presence.rooms` on, the connection is also added to the room's
    /// member list with `metadata` (and its uid at this moment), and a
    /// ``PresenceEvent`` `join` is published if it is its user's first
    /// connection in the room. Joining again updates the metadata.
    /// - Throws: ``ClusterError/invalidName(_:)`` for a bad room name,
    ///   ``ClusterError/tooManyRooms(limit:)`` past `limits.maxRoomsPerConnection`,
    ///   ``ClusterError/unknownConnection(_:)`` if `fd` is not open on this node,
    ///   ``ClusterError/invalidConfiguration(_:)`` for metadata over
    ///   `limits.maxNameBytes` × 16 bytes or with a NUL.
    public func join(_ fd: DistributedFD, room: String, metadata: String? = nil) async throws {
        try checks.check(room: room)
        try requireLocal(fd)
        let baseline = await recovery.baseline(registry.session(fd.fd), .room(room))
        let first: Bool
        do {
            first = try await registry.join(fd.fd, room: room, maxRooms: configuration.limits.maxRoomsPerConnection)
        } catch ClusterError.tooManyRooms(let limit) {
            counters.hit(.roomsPerConnection)
            throw ClusterError.tooManyRooms(limit: limit)
        }
        if first { try await redis.send(batch: commands.join(node: id, room: room)).throwFirstFailure() }
        if let presence {
            if let metadata, metadata.utf8.count > configuration.limits.maxNameBytes * 16 || metadata.utf8.contains(0) {
                throw ClusterError.invalidConfiguration("presence metadata over \(configuration.limits.maxNameBytes * 16) bytes or with a NUL")
            }
            // Local members get the room's events: its channel is subscribed before the join is published.
            if first, let presenceHub, presenceHub.notifiesMembers { try await presenceHub.retain(room) }
            _ = try await presence.join(fd, uid: registry.uid(of: fd.fd) ?? fd.description, room: room, metadata: metadata)
        }
        // A client-protocol connection: the room's stream, recovered (the channel is subscribed).
        if let session = registry.session(fd.fd) { await recovery.start(session, .room(room), baseline: baseline) }
    }

    /// Removes a connection of this node from a room.
    public func leave(_ fd: DistributedFD, room: String) async throws {
        try checks.check(room: room)
        try requireLocal(fd)
        registry.session(fd.fd)?.end(.room(room))
        let emptied = try await registry.leave(fd.fd, room: room)
        if let presence { _ = try await presence.leave(fd, room: room) }
        if emptied {
            if let presenceHub, presenceHub.notifiesMembers { await presenceHub.release(room) }
            try await redis.send(batch: commands.leave(node: id, rooms: [room])).throwFirstFailure()
        }
    }

    /// Every member of `room` on every node, with the metadata given at join
    /// (members of a node that died are removed within the liveness window).
    /// - Throws: ``ClusterError/invalidConfiguration(_:)`` when `presence.rooms` is off.
    public func presence(room: String) async throws -> [PresenceMember] {
        try checks.check(room: room)
        guard let presence else { throw ClusterError.invalidConfiguration("presence.rooms is off") }
        return try await presence.members(of: room)
    }

    /// `room`'s join and leave events, per user, cluster-wide, from now on:
    /// a user's first connection joining is a `join`; its last one leaving,
    /// closing, or its node dying (found by a janitor within the liveness
    /// window) is a `leave` — each published once. The stream ends when the
    /// caller stops iterating; a reader that falls `presence.eventBuffer`
    /// events behind loses the oldest.
    /// - Throws: ``ClusterError/invalidConfiguration(_:)`` when `presence.rooms` is off.
    public func presenceEvents(room: String) async throws -> AsyncStream<PresenceEvent> {
        try checks.check(room: room)
        guard let presenceHub else { throw ClusterError.invalidConfiguration("presence.rooms is off") }
        return try await presenceHub.events(room: room, buffer: configuration.presence.eventBuffer)
    }

    private func requireLocal(_ fd: DistributedFD) throws(ClusterError) {
        guard fd.node == id, fd.epoch == epoch else { throw .unknownConnection(fd.description) }
    }
}

extension Array where Element == Result<RedisValue, RedisError> {
    /// Throws the first failed command's error.
    func throwFirstFailure() throws {
        for result in self { _ = try result.get() }
    }
}
