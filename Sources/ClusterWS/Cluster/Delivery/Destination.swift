import NIOCore

/// Where a message goes: every kind of send names one of these.
enum Destination: Sendable, Equatable {
    /// Every connection of a user, on every node.
    case user(String)
    /// Every connection of any of these users (distinct), on every node.
    case users([String])
    /// Every member of a room, on every node.
    case room(String)
    /// These connections of one node, if it still runs in `epoch`.
    case connections(node: String, epoch: UInt64, fds: [UInt64])
    /// Every connection of every node, except these.
    case everyone(except: [DistributedFD])

    /// What the envelope says to the receiving node.
    var envelopeTarget: Envelope.Target {
        switch self {
        case .user(let uid): .user(uid)
        case .users(let uids): .users(uids)
        case .room(let room): .room(room)
        case .connections(_, let epoch, let fds): .fds(epoch: epoch, fds)
        case .everyone(let except): .all(except: except)
        }
    }

    /// The `target` dimension of `clusterws_messages_out_total`.
    var metricLabel: String {
        switch self {
        case .user: "user"
        case .users: "users"
        case .room: "room"
        case .connections: "fd"
        case .everyone: "all"
        }
    }

    /// How many answers a send returns: one per uid of `.users`, else one.
    var targetCount: Int {
        if case .users(let uids) = self { return uids.count }
        return 1
    }
}

/// A send, resolved: what this node writes itself, and the part that goes to
/// Redis for the other nodes. `send` and `post` carry out the same plan; they
/// differ only in whether they wait for Redis.
struct DeliveryPlan: Sendable {
    /// This node's own connections to write to.
    enum Local: Sendable {
        case sockets([WebSocket])
        case everyone(except: Set<UInt64>)
    }

    let message: WebSocketMessage
    let destination: Destination
    let local: Local
    /// Per target (see ``Destination/targetCount``): 1 when this node has it.
    let reachedHere: [Int]
    /// The part for the other nodes; `nil` when nothing leaves this node (a
    /// connection of this node, or of an earlier run of it).
    let remote: RemoteDelivery?
}

/// What a driver carries to the other nodes: the destination and the
/// envelope, encoded once.
struct RemoteDelivery: Sendable {
    let destination: Destination
    let envelope: ByteBuffer
    /// Per target, 1 when this node has it too (pub/sub counts this node
    /// among a channel's subscribers; the drivers answer for the others only).
    let reachedHere: [Int]
}
