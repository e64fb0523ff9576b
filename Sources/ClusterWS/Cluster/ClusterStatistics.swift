import Synchronization

/// What the router has done since the node started. It reads the node's
/// drop counters (the ones its metrics report).
public final class ClusterStatistics: Sendable {
    private let counters: NodeCounters
    private let routedEnvelopes = Atomic<Int>(0)
    private let duplicateEnvelopes = Atomic<Int>(0)

    init(counters: NodeCounters) {
        self.counters = counters
    }

    func countRouted() { routedEnvelopes.add(1, ordering: .relaxed) }
    func countDuplicate() { duplicateEnvelopes.add(1, ordering: .relaxed) }

    /// Messages on the cluster's channels that were not valid envelopes, dropped.
    public var garbageDropped: Int { counters.dropped(.garbage) }
    /// Messages for connections of an earlier epoch of this node, dropped.
    public var staleDropped: Int { counters.dropped(.stale) }
    /// Envelopes routed from Redis to local connections.
    public var routed: Int { routedEnvelopes.load(ordering: .relaxed) }
    /// Second copies of an envelope, dropped (on a Redis Cluster each sharded
    /// channel is subscribed on two nodes of its shard: every message comes twice).
    public var duplicatesDropped: Int { duplicateEnvelopes.load(ordering: .relaxed) }
    /// Posted messages whose Redis part failed (see ``Sender/post(uid:_:)-(String,WebSocketMessage)``).
    public var postFailed: Int { counters.dropped(.postFailed) }
    /// Posts dropped because their Redis Cluster shard had no reachable master (a failover).
    public var shardUnavailableDropped: Int { counters.dropped(.shardUnavailable) }
    /// Messages from Redis dropped because the router's buffer was full.
    public var subscriberOverflows: Int { counters.dropped(.subscriberOverflow) }
}
