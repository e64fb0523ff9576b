import Synchronization

/// Names one message cluster-wide: the node that sent it, that node's run
/// (epoch) and the message's number in that run.
package struct MessageID: Hashable, Sendable {
    package var originNode: String
    package var originEpoch: UInt64
    package var sequence: UInt64

    package init(originNode: String, originEpoch: UInt64, sequence: UInt64) {
        self.originNode = originNode
        self.originEpoch = originEpoch
        self.sequence = sequence
    }
}

/// Numbers a node's outgoing envelopes, from 1.
final class MessageSequence: Sendable {
    private let last = Atomic<UInt64>(0)

    /// The next number; never 0 (0 means "no id").
    func next() -> UInt64 {
        let value = last.add(1, ordering: .relaxed).newValue
        return value == 0 ? last.add(1, ordering: .relaxed).newValue : value
    }
}

/// The last `capacity` message ids a router has seen, to deliver a message
/// received twice only once. On a Redis Cluster a node subscribes each
/// sharded channel on the shard's master and on one of its replicas (Redis
/// passes a shard's messages to every node of the shard), so a failover —
/// planned or not — leaves no window without a subscription; every message
/// then arrives twice, a few milliseconds apart, and the second copy is
/// dropped here.
///
/// Memory is bounded: the oldest id is forgotten when a new one comes past
/// `capacity` (a copy arriving more than `capacity` messages late is
/// delivered again; the two copies travel a few milliseconds apart).
struct RecentMessageIDs {
    private var ring: [MessageID?]
    private var next = 0
    private var seen: Set<MessageID>

    init(capacity: Int) {
        let capacity = max(capacity, 1)
        ring = Array(repeating: nil, count: capacity)
        seen = Set(minimumCapacity: capacity)
    }

    /// Records `id`; `false` when it was already among the recent ones (a duplicate).
    mutating func insert(_ id: MessageID) -> Bool {
        guard seen.insert(id).inserted else { return false }
        if let oldest = ring[next] { seen.remove(oldest) }
        ring[next] = id
        next = next + 1 == ring.count ? 0 : next + 1
        return true
    }

    /// Ids currently remembered.
    var count: Int { seen.count }
}
