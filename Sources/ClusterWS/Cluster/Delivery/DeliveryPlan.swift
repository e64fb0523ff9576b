import NIOCore

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
    /// Written to the destination's history and published with its position
    /// (a user or room stream with `history` on).
    var keepsHistory = false
}
