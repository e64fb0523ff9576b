import NIOCore

/// The pub/sub driver (the seed's `SubscribeDriver`): a message for other
/// nodes is one `PUBLISH` on the user's, room's, node's or the broadcast
/// channel, which Redis routes to the nodes subscribed to it. At-most-once.
///
/// On a Redis Cluster (`sharded`) user, room and node channels are sharded
/// (`SPUBLISH`, to the channel's master only) and the broadcast channel stays
/// classic (the cluster bus carries it to every node). A message to many
/// users goes once to each node that has any of them: by one script run on
/// one Redis, by a read and then one `SPUBLISH` per node on a cluster.
struct PubSubDriver: DeliveryDriver {
    let redis: any RedisCommands
    let sharded: Bool
    let context: DriverContext
    /// Posts to many users on a cluster read first, so they run in lanes (in order per destination).
    private let lanes = PostLanes()

    init(redis: any RedisCommands, sharded: Bool, context: DriverContext) {
        self.redis = redis
        self.sharded = sharded
        self.context = context
    }

    func send(_ delivery: RemoteDelivery) async throws -> TargetCounts {
        if delivery.keepsHistory, let (keys, arguments) = historyCall(delivery) {
            let reply = try await redis.evaluate(HistoryScript.publish, keys: keys, arguments)
            return .one(reply.array.flatMap { $0.count == 3 ? $0[2].int : nil } ?? 0)
        }
        guard case .users(let uids) = delivery.destination else {
            let subscribers = try await redis.send(publishCommand(delivery)).int ?? 0
            // This node counts among the subscribers of a channel it has members of.
            return .one(max(subscribers - delivery.reachedHere[0], 0))
        }
        if !sharded {
            let reply = try await redis.evaluate(MultiUserScript.script, MultiUserScript.arguments(
                uids, envelope: delivery.envelope, transport: "publish", context: context))
            return TargetCounts(MultiUserScript.counts(reply, expected: uids.count))
        }
        let found = try await UserNodes.read(uids, from: redis, context: context)
        let nodes = Array(found.epochs.keys)
        let replies = try await redis.send(batch: nodes.map { node in
            RedisCommand("SPUBLISH", .string(context.keys.nodeChannel(node)), .bytes(delivery.envelope))
        })
        var reached = Set<String>()
        for (node, reply) in zip(nodes, replies) where ((try? reply.get())?.int ?? 0) > 0 { reached.insert(node) }
        return TargetCounts(found.counts(reached: reached))
    }

    var isPostBacklogged: Bool { redis.isPostBacklogged }

    func waitForPostRoom() async {
        await redis.waitForPostRoom()
    }

    func post(_ delivery: RemoteDelivery) {
        let context = self.context
        if delivery.keepsHistory, let (keys, arguments) = historyCall(delivery) {
            return redis.post(HistoryScript.publish, keys: keys, arguments) { context.postFailed($0) }
        }
        guard case .users(let uids) = delivery.destination else {
            return redis.post(publishCommand(delivery)) { context.postFailed($0) }
        }
        if !sharded {
            return redis.post(MultiUserScript.script, MultiUserScript.arguments(
                uids, envelope: delivery.envelope, transport: "publish", context: context)) { context.postFailed($0) }
        }
        lanes.append(lane: delivery.destination.lane) {
            // A post never waits out a failover: a shard without a master drops it at once (counted).
            do { _ = try await RedisClusterClient.$failoverWait.withValue(.zero) { try await send(delivery) } } catch {
                context.postFailed(error)
            }
        }
    }

    /// `PUBLISH` (or `SPUBLISH`) of the envelope on the destination's channel.
    private func publishCommand(_ delivery: RemoteDelivery) -> RedisCommand {
        let channel = channel(of: delivery.destination)
        return RedisCommand(publish: verb(channel), channel: channel, envelope: delivery.message)
    }

    private func channel(of destination: Destination) -> String {
        let keys = context.keys
        switch destination {
        case .user(let uid): return keys.userChannel(uid)
        case .room(let room): return keys.roomChannel(room)
        case .connections(let node, _, _): return keys.nodeChannel(node)
        case .everyone, .users: return keys.allChannel
        }
    }

    private func verb(_ channel: String) -> String {
        sharded && channel != context.keys.allChannel ? "SPUBLISH" : "PUBLISH"
    }

    /// The keys and arguments of ``HistoryScript/publish`` for a user or room message.
    private func historyCall(_ delivery: RemoteDelivery) -> (keys: [String], arguments: [RedisArgument])? {
        switch delivery.destination {
        case .user, .room: break
        default: return nil
        }
        let channel = channel(of: delivery.destination)
        let (keys, arguments) = HistoryScript.call(delivery, channel: channel, history: context.history)
        return (keys, arguments + [.string(verb(channel))])
    }
}
