/// The Redis commands that record and remove who is connected where, in one
/// place (binding, re-registering after being declared dead, cleanup after a
/// close, the janitor), so they cannot drift apart.
struct RelationCommands: Sendable {
    let keys: ClusterKeys
    let ttl: Duration

    private var ttlArgument: RedisArgument { .integer(ttl.wholeSeconds) }

    /// Records that `fd` is `uid`'s: the user's set, the fd's key, the node's set of fds.
    func bind(_ fd: DistributedFD, uid: String) -> [RedisCommand] {
        let member = RedisArgument.string(fd.description)
        return [
            RedisCommand("SADD", .string(keys.user(uid)), member),
            RedisCommand("EXPIRE", .string(keys.user(uid)), ttlArgument),
            RedisCommand("SET", .string(keys.fd(fd)), .string(uid), "EX", ttlArgument),
            RedisCommand("SADD", .string(keys.nodeFDs(fd.node)), member),
        ]
    }

    /// Removes what ``bind(_:uid:)`` recorded.
    func unbind(_ fd: DistributedFD, uid: String) -> [RedisCommand] {
        [
            RedisCommand("SREM", .string(keys.user(uid)), .string(fd.description)),
            RedisCommand("DEL", .string(keys.fd(fd))),
            RedisCommand("SREM", .string(keys.nodeFDs(fd.node)), .string(fd.description)),
        ]
    }

    /// Renews the expiry of a binding.
    func refresh(_ fd: DistributedFD, uid: String) -> [RedisCommand] {
        [RedisCommand("EXPIRE", .string(keys.user(uid)), ttlArgument),
         RedisCommand("EXPIRE", .string(keys.fd(fd)), ttlArgument)]
    }

    /// Records that `node` has members of `room` (the queue driver routes rooms by it).
    func join(node: String, room: String) -> [RedisCommand] {
        [RedisCommand("SADD", .string(keys.roomNodes(room)), .string(node)),
         RedisCommand("SADD", .string(keys.nodeRooms(node)), .string(room))]
    }

    /// Removes `node` from `rooms`.
    func leave(node: String, rooms: [String]) -> [RedisCommand] {
        rooms.flatMap { room in
            [RedisCommand("SREM", .string(keys.roomNodes(room)), .string(node)),
             RedisCommand("SREM", .string(keys.nodeRooms(node)), .string(room))]
        }
    }
}

extension RedisCommands {
    /// Sends `commands` in pipelined batches of at most 1,000 (one flush each),
    /// throwing the first failure.
    func send(inBatches commands: [RedisCommand]) async throws {
        for start in stride(from: 0, to: commands.count, by: 1_000) {
            try await send(batch: Array(commands[start..<min(start + 1_000, commands.count)])).throwFirstFailure()
        }
    }
}
