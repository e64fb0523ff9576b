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

    /// A live stream whose client has seen everything up to `last`.
    init(after last: StreamPosition) {
        self.last = last
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
            return frames
        }
        guard position.offset > last.offset, ahead[position.offset] == nil else { return [] }
        guard position.offset == last.offset + 1 else {
            ahead[position.offset] = message
            heldBytes += message.data.readableBytes
            return []
        }
        last = position
        return [(position, message)] + drainReady()
    }

    /// The offsets missing before the first held message; `nil` without a gap.
    var gap: ClosedRange<UInt64>? {
        guard let first = ahead.keys.min() else { return nil }
        return (last.offset + 1)...(first - 1)
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
        guard let first = ahead.keys.min() else { return [] }
        last = StreamPosition(offset: first - 1, epoch: last.epoch)
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
