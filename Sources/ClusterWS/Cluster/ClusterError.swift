/// Errors of the cluster runtime's API.
///
/// Every check of an application's argument (a name, a target list, a room
/// count) fails with one of these before anything is sent, so a value that
/// came from a client can be passed on as it is and the failure reported back.
public enum ClusterError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The connection is not open on this node (closed, or it lives on another node).
    case unknownConnection(String)
    /// A configuration value is not usable.
    case invalidConfiguration(String)
    /// A uid, room, node id or namespace breaks the naming rules (see ``NameError``).
    case invalidName(NameError)
    /// A call named more targets (uids, excluded connections) than
    /// ``ClusterConfiguration/Limits/maxTargetsPerCall`` allows.
    case tooManyTargets(count: Int, limit: Int)
    /// The connection is already in ``ClusterConfiguration/Limits/maxRoomsPerConnection`` rooms.
    case tooManyRooms(limit: Int)
    /// A message does not fit the wire format (a name over 65,535 bytes, a
    /// list over 2³²−1 entries). The API's own limits keep this from happening.
    case unencodable(String)
    /// On a Redis Cluster: the message's shard has no reachable master (a
    /// failover is under way) and none came within
    /// ``ClusterConfiguration/Failover/wait``. Nothing was sent; retry, or
    /// tell the client. Local deliveries of the same call were made.
    case shardUnavailable(slot: Int)
    /// Queue driver on a Redis Cluster with `queue.replicaAcks` > 0: the
    /// entry for `node` is on its stream's master, but no replica confirmed it
    /// within `queue.replicaAckTimeout`. It will probably be delivered; if that
    /// master fails now it may be lost. A retry may deliver it twice.
    case notReplicated(node: String)

    public var description: String {
        switch self {
        case .unknownConnection(let fd): "no open connection \(fd) on this node"
        case .invalidConfiguration(let why): "invalid configuration: \(why)"
        case .invalidName(let error): error.description
        case .tooManyTargets(let count, let limit): "\(count) targets in one call; the limit is \(limit)"
        case .tooManyRooms(let limit): "the connection is already in \(limit) rooms (the limit)"
        case .unencodable(let why): "the message cannot be encoded: \(why)"
        case .notReplicated(let node): "the entry for node \(node) was written, but no replica confirmed it in time"
        case .shardUnavailable(let slot): "no reachable Redis master for slot \(slot) (a failover is under way); nothing was sent"
        }
    }
}
