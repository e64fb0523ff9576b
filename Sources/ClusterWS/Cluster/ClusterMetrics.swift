package import CoreMetrics

/// The node's metrics, through swift-metrics (bootstrap any backend, e.g.
/// swift-prometheus; without one they cost next to nothing). Every metric
/// carries a `node` dimension.
///
/// | name | type | dimensions |
/// |---|---|---|
/// | `clusterws_connections` | meter | node |
/// | `clusterws_messages_in_total` | counter | kind (text, binary) — counted by the transport |
/// | `clusterws_messages_out_total` | counter | node, target (user, users, room, fd, all) |
/// | `clusterws_deliveries_total` | counter | node, path (local, routed) |
/// | `clusterws_drops_total` | counter | node, reason (see ``DropReason``; counted by ``NodeCounters``) |
/// | `clusterws_limit_hits_total` | counter | node, limit (see ``LimitKind``; counted by ``NodeCounters``) |
/// | `clusterws_redis_command_duration_seconds` | timer | node |
/// | `clusterws_redis_reconnects_total` | counter | node |
final class ClusterMetrics: Sendable {
    let connections: Meter
    let messagesOut: [String: Counter]
    let deliveredLocal: Counter
    let deliveredRouted: Counter
    let redisCommand: Timer
    let redisReconnects: Counter

    init(node: String, factory: any MetricsFactory) {
        let base = [("node", node)]
        connections = Meter(label: "clusterws_connections", dimensions: base, factory: factory)
        messagesOut = Dictionary(uniqueKeysWithValues: ["user", "users", "room", "fd", "all"].map {
            ($0, Counter(label: "clusterws_messages_out_total", dimensions: base + [("target", $0)], factory: factory))
        })
        deliveredLocal = Counter(label: "clusterws_deliveries_total", dimensions: base + [("path", "local")], factory: factory)
        deliveredRouted = Counter(label: "clusterws_deliveries_total", dimensions: base + [("path", "routed")], factory: factory)
        redisCommand = Timer(label: "clusterws_redis_command_duration_seconds", dimensions: base, factory: factory)
        redisReconnects = Counter(label: "clusterws_redis_reconnects_total", dimensions: base, factory: factory)
    }
}
