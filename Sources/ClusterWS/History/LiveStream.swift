import NIOCore

/// One stream of one client-protocol connection once it is live: messages
/// go out in offset order, each once, whatever order they arrive in.
///
/// Messages can arrive out of order (the queue driver with several
/// consumers, or on a Redis Cluster where the history write and the queue
/// writes are separate steps), twice (at-least-once redelivery, a replayed
/// message arriving live too) or not at all (pub/sub while the subscriber
/// was reconnecting). So: a message at or below the last offset sent is
/// dropped; the next offset goes out at once, with whatever it unblocks; a
/// message further ahead is held until the gap before it fills — by the
/// missing message arriving, or by the node reading it from history
/// (``fill(_:)``) — or is known to be lost (``skipGap()``).
///
/// A value: the caller owns the lock and the timing (see ``ProtocolSession``).
struct LiveStream {
    /// The last position sent to the client.
    private(set) var last: StreamPosition
    /// Messages of the current epoch past a gap, by offset.
    private var ahead: [UInt64: WebSocketMessage] = [:]
    /// The payload bytes held in `ahead`.
    private(set) var heldBytes = 0
    /// The highest offset known to exist in the current epoch (from a
    /// message, or from reading the stream's position): past `last`, a gap.
    private var top: UInt64

    /// A live stream whose client has seen everything up to `last`.
    init(after last: StreamPosition) {
        self.last = last
        self.top = last.offset
    }

    /// What to send, in order.
    typealias Frames = [(StreamPosition, WebSocketMessage)]

    /// A live message at `position`: what goes out now (nothing when it is a
    /// second copy, or when it waits for a gap to fill).
    mutating func accept(_ message: WebSocketMessage, at position: StreamPosition) -> Frames {
        guard position.epoch == last.epoch else {
            // A new life of the stream (Redis lost it): what was held of the old one goes first.
            var frames = drainAll()
            frames.append((position, message))
            last = position
            top = position.offset
            return frames
        }
        top = max(top, position.offset)
        guard position.offset > last.offset, ahead[position.offset] == nil else { return [] }
        guard position.offset == last.offset + 1 else {
            ahead[position.offset] = message
            heldBytes += message.data.readableBytes
            return []
        }
        last = position
        return [(position, message)] + drainReady()
    }

    /// The offsets missing before the first held message (or up to the
    /// stream's known position when nothing is held); `nil` without a gap.
    var gap: ClosedRange<UInt64>? {
        if let first = ahead.keys.min() { return (last.offset + 1)...(first - 1) }
        return top > last.offset ? (last.offset + 1)...top : nil
    }

    /// The stream is known to be at `position` (read from Redis after the
    /// node's subscriber reconnected: what was published meanwhile never
    /// arrived). A later offset than the last one sent becomes a gap.
    mutating func learn(_ position: StreamPosition) {
        guard position.epoch == last.epoch else { return }  // a new epoch shows itself with its first message
        top = max(top, position.offset)
    }

    /// Messages read from history for the gap (in offset order): those that
    /// continue the stream go out, with what they unblock.
    mutating func fill(_ messages: [(offset: UInt64, message: WebSocketMessage)]) -> Frames {
        var frames: Frames = []
        for (offset, message) in messages where offset > last.offset {
            frames += accept(message, at: StreamPosition(offset: offset, epoch: last.epoch))
        }
        return frames
    }

    /// The gap cannot be filled (history no longer has it): the client goes
    /// on from the first held message.
    mutating func skipGap() -> Frames {
        guard let gap else { return [] }
        last = StreamPosition(offset: gap.upperBound, epoch: last.epoch)
        return drainReady()
    }

    /// Held messages that now follow `last`, in order.
    private mutating func drainReady() -> Frames {
        var frames: Frames = []
        while let next = ahead.removeValue(forKey: last.offset + 1) {
            heldBytes -= next.data.readableBytes
            last = StreamPosition(offset: last.offset + 1, epoch: last.epoch)
            frames.append((last, next))
        }
        return frames
    }

    /// Every held message in offset order, gaps or not.
    private mutating func drainAll() -> Frames {
        let frames = ahead.keys.sorted().compactMap { offset in
            ahead[offset].map { (StreamPosition(offset: offset, epoch: last.epoch), $0) }
        }
        ahead = [:]
        heldBytes = 0
        return frames
    }
}
