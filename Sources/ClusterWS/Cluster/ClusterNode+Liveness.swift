import Logging
import Synchronization

extension ClusterNode {
    /// Announces this node: its epoch under the heartbeat key (expiring after
    /// the liveness window) and its id in the set of nodes.
    func heartbeat() async throws {
        let window = configuration.livenessWindow.milliseconds
        let replies = try await redis.send(batch: [
            RedisCommand("SET", .string(keys.alive(id)), .string(String(epoch, radix: 16)), "PX", .integer(window), "GET"),
            RedisCommand("SADD", .string(keys.nodes), .string(id)),
        ])
        try replies.throwFirstFailure()
        // Our heartbeat had lapsed (Redis was out of reach past the liveness
        // window), or a janitor took us out of the node set (it does that
        // last, after removing our relations — so this also catches a janitor
        // that saw us dead just before our heartbeat came back). Put them back.
        let lapsed = (try? replies[0].get())?.isNull == true
        let removed = (try? replies[1].get())?.int == 1
        if announced.exchange(true, ordering: .relaxed), lapsed || removed {
            logger.warning("this node was considered dead; registering its connections again")
            try await reregister()
        }
    }

    /// Writes every local binding and room membership to Redis again.
    func reregister() async throws {
        let ttl = RedisArgument.integer(configuration.ttl.wholeSeconds)
        var commands: [RedisCommand] = []
        for (fd, uid) in registry.bindings() {
            let address = distributedFD(local: Int(fd))
            commands += [
                RedisCommand("SADD", .string(keys.user(uid)), .string(address.description)),
                RedisCommand("EXPIRE", .string(keys.user(uid)), ttl),
                RedisCommand("SET", .string(keys.fd(address)), .string(uid), "EX", ttl),
                RedisCommand("SADD", .string(keys.nodeFDs(id)), .string(address.description)),
            ]
        }
        for room in registry.localRooms() {
            commands += [RedisCommand("SADD", .string(keys.roomNodes(room)), .string(id)),
                         RedisCommand("SADD", .string(keys.nodeRooms(id)), .string(room))]
        }
        for start in stride(from: 0, to: commands.count, by: 1_000) {
            try await redis.send(batch: Array(commands[start..<min(start + 1_000, commands.count)])).throwFirstFailure()
        }
    }

    /// Heartbeats, the janitor and relation refreshes, until cancelled.
    func keepAlive() async {
        let clock = ContinuousClock()
        var lastRefresh = clock.now
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: configuration.heartbeatInterval)
            } catch {
                return
            }
            do {
                try await heartbeat()
                try await removeDeadNodes()
                if clock.now - lastRefresh >= configuration.ttl / 3 {
                    try await refreshRelations()
                    lastRefresh = clock.now
                }
            } catch {
                logger.warning("liveness round failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Renews the TTL of every relation of this node, in one pipelined batch.
    func refreshRelations() async throws {
        let ttl = RedisArgument.integer(configuration.ttl.wholeSeconds)
        var commands: [RedisCommand] = []
        for (fd, uid) in registry.bindings() {
            commands.append(RedisCommand("EXPIRE", .string(keys.user(uid)), ttl))
            commands.append(RedisCommand("EXPIRE", .string(keys.fd(distributedFD(local: Int(fd)))), ttl))
        }
        for start in stride(from: 0, to: commands.count, by: 1_000) {
            _ = try await redis.send(batch: Array(commands[start..<min(start + 1_000, commands.count)]))
        }
    }

    /// The janitor: every node whose heartbeat has lapsed loses its relations.
    func removeDeadNodes() async throws {
        let nodes = try await redis.send(RedisCommand("SMEMBERS", .string(keys.nodes))).array?.compactMap(\.string) ?? []
        let others = nodes.filter { $0 != id }
        guard !others.isEmpty else { return }
        let alive = try await values(of: others.map(keys.alive))
        for (node, value) in zip(others, alive) where value.isNull {
            logger.info("node is gone; removing its relations", metadata: ["dead": "\(node)"])
            try await removeRelations(ofNode: node, keepEpoch: nil)
            try await removeRoomMemberships(ofNode: node)
            _ = try await redis.send(RedisCommand("SREM", .string(keys.nodes), .string(node)))
        }
    }

    /// Removes the relations `node` recorded, except those of `keepEpoch`.
    func removeRelations(ofNode node: String, keepEpoch: UInt64?) async throws {
        let members = try await redis.send(RedisCommand("SMEMBERS", .string(keys.nodeFDs(node)))).array ?? []
        let fds = members.compactMap { $0.string.flatMap(DistributedFD.init) }.filter { $0.epoch != keepEpoch }
        guard !fds.isEmpty else { return }
        let users = try await redis.send(batch: fds.map { RedisCommand("GET", .string(keys.fd($0))) })
        var commands: [RedisCommand] = []
        for (fd, user) in zip(fds, users) {
            if let uid = try? user.get().string {
                commands += removalCommands(fd, uid: uid)
            } else {
                commands += [RedisCommand("DEL", .string(keys.fd(fd))),
                             RedisCommand("SREM", .string(keys.nodeFDs(node)), .string(fd.description))]
            }
        }
        _ = try await redis.send(batch: commands)
    }

    /// Removes `node` from every room it had members of.
    func removeRoomMemberships(ofNode node: String) async throws {
        let rooms = try await redis.send(RedisCommand("SMEMBERS", .string(keys.nodeRooms(node)))).array?.compactMap(\.string) ?? []
        guard !rooms.isEmpty else { return }
        _ = try await redis.send(batch: roomRemovalCommands(node: node, rooms: rooms))
    }

    /// At start: relations left by an earlier run of this node id (a crash) go.
    func removeStaleRelationsOfThisNode() async {
        do {
            try await removeRelations(ofNode: id, keepEpoch: epoch)
            try await removeRoomMemberships(ofNode: id)
        } catch {
            logger.warning("could not remove relations of an earlier run", metadata: ["error": "\(error)"])
        }
    }

    /// On shutdown: this node's relations and heartbeat go, so nobody is sent
    /// to a connection that no longer exists.
    func leaveCluster() async {
        do {
            try await removeRelations(ofNode: id, keepEpoch: nil)
            try await removeRoomMemberships(ofNode: id)
            _ = try await redis.send(batch: [
                RedisCommand("DEL", .string(keys.alive(id))),
                RedisCommand("SREM", .string(keys.nodes), .string(id)),
                RedisCommand("DEL", .string(keys.nodeFDs(id))),
            ])
        } catch {
            logger.warning("could not remove this node's relations on shutdown", metadata: ["error": "\(error)"])
        }
    }

    /// `GET` of each key, pipelined (not `MGET`: on a Redis Cluster the keys
    /// live in different slots). A failed read counts as present, so nothing
    /// is removed because of an error.
    func values(of keys: [String]) async throws -> [RedisValue] {
        try await redis.send(batch: keys.map { RedisCommand("GET", .string($0)) }).map { result in
            (try? result.get()) ?? .simpleString("?")
        }
    }
}
