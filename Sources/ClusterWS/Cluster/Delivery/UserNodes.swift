/// Each user's connections by node, read from the users' relation sets:
/// the routing of ``Destination/users(_:)`` when no script can do it (keys in
/// several slots of a Redis Cluster).
struct UserNodes {
    /// Per uid, the other nodes it has connections on.
    var nodesOf: [Set<String>] = []
    /// Every other node found, with the epoch its connections were made in.
    var epochs: [String: UInt64] = [:]

    /// Reads the sets of `uids` in one pipelined batch (split per master on a
    /// cluster); this node counts among the nodes only `includingSelf`.
    static func read(_ uids: [String], from redis: any RedisCommands, context: DriverContext,
                     includingSelf: Bool = false) async throws -> UserNodes {
        let sets = try await redis.send(batch: uids.map { RedisCommand("SMEMBERS", .string(context.keys.user($0))) })
        var result = UserNodes()
        for set in sets {
            var nodes = Set<String>()
            for case let fd? in (try set.get().array ?? []).map({ $0.string.flatMap(DistributedFD.init) })
            where includingSelf || fd.node != context.id {
                nodes.insert(fd.node)
                result.epochs[fd.node] = fd.epoch
            }
            result.nodesOf.append(nodes)
        }
        return result
    }

    /// Per uid, how many of its nodes are in `reached`.
    func counts(reached: Set<String>) -> [Int] {
        nodesOf.map { $0.intersection(reached).count }
    }
}
