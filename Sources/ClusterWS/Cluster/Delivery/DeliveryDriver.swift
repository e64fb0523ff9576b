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
    func send(_ delivery: RemoteDelivery) async throws -> [Int]

    /// The same without waiting, in call order with the caller's other posts
    /// and sends. A failure is counted (`clusterws_drops_total{reason="post_failed"}`)
    /// and logged, never thrown.
    func post(_ delivery: RemoteDelivery)

    /// Runs what the driver runs beside the router until cancelled (the queue
    /// drivers' consumers), handing every envelope that arrives to `route`.
    func run(route: @escaping @Sendable (Envelope) async -> Void) async
}

extension DeliveryDriver {
    func run(route: @escaping @Sendable (Envelope) async -> Void) async {}
}

/// What every driver needs to know about its node.
struct DriverContext: Sendable {
    let id: String
    let epoch: UInt64
    let keys: ClusterKeys
    let queue: ClusterConfiguration.Queue
    let counters: NodeCounters
    let logger: Logger

    /// A post's Redis part failed: counted and logged (rate-limited).
    func postFailed(_ error: any Error) {
        counters.drop(.postFailed, metadata: ["error": "\(error)"])
    }
}

/// Posts that need Redis's answers before they can be written (routing read
/// first, on a Redis Cluster) run one after another in call order: each waits
/// for the previous one, none waits for the caller.
final class PostChain: Sendable {
    private let last = Mutex<Task<Void, Never>?>(nil)

    /// Runs `work` after every earlier one has finished.
    func append(_ work: @escaping @Sendable () async -> Void) {
        last.withLock { previous in
            previous = Task { [previous] in
                await previous?.value
                await work()
            }
        }
    }
}

/// Each user's connections by node, read from the users' relation sets:
/// the routing of ``Destination/users(_:)`` when no script can do it (keys in
/// several slots of a Redis Cluster).
struct UserNodes {
    /// Per uid, the other nodes it has connections on.
    var nodesOf: [Set<String>] = []
    /// Every other node found, with the epoch its connections were made in.
    var epochs: [String: UInt64] = [:]

    /// Reads the sets of `uids` in one pipelined batch (split per master on a cluster).
    static func read(_ uids: [String], from redis: any RedisCommands, context: DriverContext) async throws -> UserNodes {
        let sets = try await redis.send(batch: uids.map { RedisCommand("SMEMBERS", .string(context.keys.user($0))) })
        var result = UserNodes()
        for set in sets {
            var nodes = Set<String>()
            for case let fd? in (try set.get().array ?? []).map({ $0.string.flatMap(DistributedFD.init) })
            where fd.node != context.id {
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
