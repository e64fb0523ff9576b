import NIOCore

/// The queue driver on one Redis server (the seed's `QueueDriver`): every
/// node has a durable inbox, a Redis Stream read through a consumer group
/// (``QueueConsumers``). A send is one run of a routing script that resolves
/// the destination (a user's connections, a room's nodes, the live nodes) and
/// appends the envelope to each target node's stream with that node's epoch,
/// atomically. At-least-once.
struct QueueDriver: DeliveryDriver {
    let redis: any RedisCommands
    let context: DriverContext
    let consumers: QueueConsumers

    func send(_ delivery: RemoteDelivery) async throws -> [Int] {
        if case .users(let uids) = delivery.destination {
            let reply = try await redis.evaluate(MultiUserScript.script, MultiUserScript.arguments(
                uids, envelope: delivery.envelope, transport: "xadd", context: context))
            return MultiUserScript.counts(reply, expected: uids.count)
        }
        return [try await redis.evaluate(QueueScript.script, QueueScript.arguments(delivery, context: context)).int ?? 0]
    }

    func post(_ delivery: RemoteDelivery) {
        let context = self.context
        if case .users(let uids) = delivery.destination {
            return redis.post(MultiUserScript.script, MultiUserScript.arguments(
                uids, envelope: delivery.envelope, transport: "xadd", context: context)) { context.postFailed($0) }
        }
        redis.post(QueueScript.script, QueueScript.arguments(delivery, context: context)) { context.postFailed($0) }
    }

    func run(route: @escaping @Sendable (Envelope) async -> Void) async {
        await consumers.run(route: route)
    }
}
