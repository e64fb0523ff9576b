/// Redis key and channel names of one cluster, all under its namespace.
struct ClusterKeys: Sendable {
    let namespace: String
    let userPattern: String
    let fdPattern: String

    init(_ configuration: ClusterConfiguration) {
        namespace = configuration.namespace
        userPattern = configuration.userRelateFDKey
        fdPattern = configuration.fdRelateUserKey
    }

    func user(_ uid: String) -> String { "\(namespace):" + Self.fill(userPattern, uid) }
    func fd(_ fd: DistributedFD) -> String { "\(namespace):" + Self.fill(fdPattern, fd.description) }

    /// The seed's `sprintf`-style pattern: `%s` replaced by `value`.
    static func fill(_ pattern: String, _ value: String) -> String {
        pattern.split(separator: "%s", omittingEmptySubsequences: false).joined(separator: value)
    }
    /// Every fd a node has bound, so a janitor can clean up after it.
    func nodeFDs(_ node: String) -> String { "\(namespace):node-fds:\(node)" }
    /// Heartbeat: the node's epoch, expiring after the liveness window.
    func alive(_ node: String) -> String { "\(namespace):alive:\(node)" }
    /// The set of nodes that have announced themselves.
    var nodes: String { "\(namespace):nodes" }

    /// Nodes with at least one member of a room (queue driver routing).
    func roomNodes(_ room: String) -> String { "\(namespace):room-nodes:\(room)" }
    /// Rooms a node has members of, so a janitor can clean up after it.
    func nodeRooms(_ node: String) -> String { "\(namespace):node-rooms:\(node)" }
    /// A node's durable inbox (queue driver).
    func queue(_ node: String) -> String { "\(namespace):queue:\(node)" }
    /// The consumer group reading every node's queue.
    var queueGroup: String { "\(namespace):workers" }

    /// An idempotency key's claim and then its publish's result.
    func idempotency(_ key: String) -> String { "\(namespace):idempotency:\(key)" }

    func nodeChannel(_ node: String) -> String { "\(namespace):node:\(node)" }
    var allChannel: String { "\(namespace):all" }
    func userChannel(_ uid: String) -> String { "\(namespace):user:\(uid)" }
    func roomChannel(_ room: String) -> String { "\(namespace):room:\(room)" }
}
