import NIOCore

/// The queue driver on one Redis server (the seed's `QueueDriver`): every
/// node has a durable inbox, a Redis Stream read through a consumer group
/// (``QueueConsumers``). A send is one run of a routing script that resolves
/// the destination (a user's connections, a room's nodes, the live nodes) and
/// appends the envelope to each target node's stream with that node's epoch,
/// atomically. At-least-once. With history on for the destination, the same
/// script first appends the message to the stream's history, and queues it
/// with its position for this node too (``HistoryScript/queue``).
struct QueueDriver: DeliveryDriver {
    let redis: any RedisCommands
    let context: DriverContext
    let consumers: QueueConsumers

    func send(_ delivery: RemoteDelivery) async throws -> TargetCounts {
        if delivery.keepsHistory, let (keys, arguments) = historyCall(delivery) {
            let reply = try await redis.evaluate(HistoryScript.queue, keys: keys, arguments)
            return .one(reply.array.flatMap { $0.count == 3 ? $0[2].int : nil } ?? 0)
        }
        if case .users(let uids) = delivery.destination {
            let reply = try await redis.evaluate(MultiUserScript.script, MultiUserScript.arguments(
                uids, envelope: delivery.envelope, transport: "xadd", context: context))
            return TargetCounts(MultiUserScript.counts(reply, expected: uids.count))
        }
        return .one(try await redis.evaluate(QueueScript.script, QueueScript.arguments(delivery, context: context)).int ?? 0)
    }

    var isPostBacklogged: Bool { redis.isPostBacklogged }

    func waitForPostRoom() async {
        await redis.waitForPostRoom()
    }

    func post(_ delivery: RemoteDelivery) {
        let context = self.context
        if delivery.keepsHistory, let (keys, arguments) = historyCall(delivery) {
            return redis.post(HistoryScript.queue, keys: keys, arguments) { context.postFailed($0) }
        }
        if case .users(let uids) = delivery.destination {
            return redis.post(MultiUserScript.script, MultiUserScript.arguments(
                uids, envelope: delivery.envelope, transport: "xadd", context: context)) { context.postFailed($0) }
        }
        redis.post(QueueScript.script, QueueScript.arguments(delivery, context: context)) { context.postFailed($0) }
    }

    func run(route: @escaping @Sendable (Envelope) async -> Void) async {
        await consumers.run(route: route)
    }

    /// The keys and arguments of ``HistoryScript/queue`` for a user or room message.
    private func historyCall(_ delivery: RemoteDelivery) -> (keys: [String], arguments: [RedisArgument])? {
        let keys = context.keys
        let (channel, mode, room, userKey): (String, String, String, String)
        switch delivery.destination {
        case .user(let uid): (channel, mode, room, userKey) = (keys.userChannel(uid), "user", "", keys.user(uid))
        case .room(let name): (channel, mode, room, userKey) = (keys.roomChannel(name), "room", name, "")
        default: return nil
        }
        let (scriptKeys, arguments) = HistoryScript.call(delivery, channel: channel, history: context.history)
        return (scriptKeys, arguments + [.string(keys.namespace), .string(mode), .string(room), .string(userKey),
                                         .integer(context.queue.maxLength)])
    }
}
