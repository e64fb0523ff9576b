import Logging
import NIOCore
import Synchronization

/// Carries the part of a send that leaves this node, and brings in what
/// other nodes send to it when that does not come through pub/sub.
///
/// Three implementations: ``PubSubDriver`` (one Redis or a Redis Cluster),
/// ``QueueDriver`` (one Redis: a routing script per send) and
/// ``ClusterQueueDriver`` (a Redis Cluster: routing read from the node, then
/// one write per target stream). ``ClusterNode`` picks one when it is made;
/// nothing else knows which driver or topology is in use.
protocol DeliveryDriver: Sendable {
    /// Delivers to the other nodes and waits for Redis's answer: per target
    /// (one, or one per uid of ``Destination/users(_:)``), how many other
    /// nodes got it.
    func send(_ delivery: RemoteDelivery) async throws -> TargetCounts

    /// The same without waiting, in call order with the caller's other posts
    /// and sends. A failure is counted (`clusterws_drops_total{reason="post_failed"}`)
    /// and logged, never thrown.
    func post(_ delivery: RemoteDelivery)

    /// Whether the Redis connection a post from here would use has more
    /// unanswered posts than its pacing mark (``waitForPostRoom()`` then).
    var isPostBacklogged: Bool { get }

    /// Returns once a post from here may go without piling up behind Redis.
    func waitForPostRoom() async

    /// Runs what the driver runs beside the router until cancelled (the queue
    /// drivers' consumers), handing every envelope that arrives to `route`.
    func run(route: @escaping @Sendable (Envelope) async -> Void) async
}

extension DeliveryDriver {
    func run(route: @escaping @Sendable (Envelope) async -> Void) async {}
    var isPostBacklogged: Bool { false }
    func waitForPostRoom() async {}
}
