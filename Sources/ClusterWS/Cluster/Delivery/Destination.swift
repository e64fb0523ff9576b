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
