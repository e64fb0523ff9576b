/// What ``ClusterNode/health()`` reports.
public struct ClusterHealth: Sendable, Hashable {
    /// The command connection answers `PING`.
    public var redis: Bool
    /// The subscriber connection is up.
    public var subscriber: Bool
    /// Open WebSocket connections on this node.
    public var connections: Int
    /// On a Redis Cluster: masters whose link is down (a failover under way);
    /// their slots' sends fail fast meanwhile. Not part of ``isHealthy``: the
    /// node still serves every other shard. Always 0 on one Redis server.
    public var shardsDown = 0
    /// Both Redis connections are up.
    public var isHealthy: Bool { redis && subscriber }
}
