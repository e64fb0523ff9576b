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
    let reachedHere: TargetCounts
    /// The part for the other nodes; `nil` when nothing leaves this node (a
    /// connection of this node, or of an earlier run of it).
    let remote: RemoteDelivery?
}

/// What a driver carries to the other nodes: the destination and the
/// envelope, checked when the plan was made. A `PUBLISH` writes it straight
/// into its command (one buffer); drivers that pass it on as an argument of
/// their own commands encode it with ``envelope``.
struct RemoteDelivery: Sendable {
    let destination: Destination
    /// The message, ``Envelope/validate()``d.
    let message: Envelope
    /// The envelope's bytes (encoded on each use).
    var envelope: ByteBuffer { message.encodedValidated() }
    /// Per target, 1 when this node has it too (pub/sub counts this node
    /// among a channel's subscribers; the drivers answer for the others only).
    let reachedHere: TargetCounts
    /// Written to the destination's history and published with its position
    /// (a user or room stream with `history` on).
    var keepsHistory = false
}

/// Per target of a send (one, or one per uid of ``Destination/users(_:)``):
/// how many nodes had it. A single-target send keeps its one count inline, so
/// the hot path allocates no array for it.
struct TargetCounts: Sendable, Equatable {
    private enum Storage: Sendable, Equatable {
        case one(Int)
        case many([Int])
    }

    private let storage: Storage

    /// One target's count.
    static func one(_ count: Int) -> TargetCounts { TargetCounts(storage: .one(count)) }

    private init(storage: Storage) { self.storage = storage }

    /// One count per target.
    init(_ counts: [Int]) { storage = counts.count == 1 ? .one(counts[0]) : .many(counts) }

    var count: Int {
        switch storage {
        case .one: 1
        case .many(let counts): counts.count
        }
    }

    /// The count of target `index` (0 past the end).
    subscript(index: Int) -> Int {
        switch storage {
        case .one(let value): index == 0 ? value : 0
        case .many(let counts): counts.indices.contains(index) ? counts[index] : 0
        }
    }

    var array: [Int] {
        switch storage {
        case .one(let value): [value]
        case .many(let counts): counts
        }
    }

    /// Target by target (as many as the shorter has).
    static func + (lhs: TargetCounts, rhs: TargetCounts) -> TargetCounts {
        if case .one(let left) = lhs.storage, case .one(let right) = rhs.storage { return .one(left + right) }
        return TargetCounts(zip(lhs.array, rhs.array).map(+))
    }
}
