/// What ``ClusterNode/health()`` reports.
public struct ClusterHealth: Sendable, Hashable {
    /// The command connection answers `PING`.
    public var redis: Bool
    /// The subscriber connection is up.
    public var subscriber: Bool
    /// Open WebSocket connections on this node.
    public var connections: Int
    /// Both Redis connections are up.
    public var isHealthy: Bool { redis && subscriber }
}
