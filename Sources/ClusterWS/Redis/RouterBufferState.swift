import NIOCore

/// The state of the buffer between a subscriber connection and the router,
/// as a plain value: messages in, bursts out, a consumer that may wait.
/// Bounded in messages and in payload bytes; past either, newer messages are
/// dropped and counted. No locks and no I/O here: ``PubSubBuffer`` keeps it
/// behind a mutex and performs the actions, and tests drive it directly.
///
/// `Waiter` is whatever wakes the consumer (a continuation in production).
struct RouterBufferState<Waiter> {
    /// What ``append(_:)`` did with a message.
    enum AppendAction {
        /// Queued; nobody was waiting.
        case queued
        /// Queued; wake this waiting consumer.
        case wake(Waiter)
        /// Dropped: the buffer was at a limit (count it as an overflow).
        case overflowed
        /// Dropped: the buffer has finished (nobody will read it).
        case ignored
    }

    /// What ``take(maximum:)`` found.
    enum TakeResult {
        /// A burst, in arrival order.
        case batch([RedisPubSubMessage])
        /// Nothing waiting, not finished: the consumer should wait.
        case empty
        /// Finished and drained.
        case finished
    }

    private var messages = CircularBuffer<RedisPubSubMessage>(initialCapacity: 64)
    private(set) var bytes = 0
    private(set) var dropped = 0
    private(set) var isFinished = false
    private var waiter: Waiter?
    let limits: PubSubBuffer.Limits

    init(limits: PubSubBuffer.Limits) {
        self.limits = limits
    }

    /// Messages waiting.
    var count: Int { messages.count }

    /// Whether a consumer is parked.
    var hasWaiter: Bool { waiter != nil }

    /// Adds a message. One message bigger than the whole byte budget still
    /// goes into an empty buffer, or such a message could never arrive.
    mutating func append(_ message: RedisPubSubMessage) -> AppendAction {
        guard !isFinished else {
            dropped += 1
            return .ignored
        }
        let size = message.payload.readableBytes
        guard messages.count < limits.messages, bytes + size <= limits.bytes || messages.isEmpty else {
            dropped += 1
            return .overflowed
        }
        messages.append(message)
        bytes += size
        guard let waiting = waiter else { return .queued }
        waiter = nil
        return .wake(waiting)
    }

    /// Takes up to `maximum` waiting messages.
    mutating func take(maximum: Int) -> TakeResult {
        let count = min(messages.count, max(maximum, 1))
        guard count > 0 else { return isFinished ? .finished : .empty }
        var batch: [RedisPubSubMessage] = []
        batch.reserveCapacity(count)
        for _ in 0..<count {
            let message = messages.removeFirst()
            bytes -= message.payload.readableBytes
            batch.append(message)
        }
        return .batch(batch)
    }

    /// The consumer found nothing and waits with `waiter`; returns it back at
    /// once (to be resumed) when something arrived or the buffer finished meanwhile.
    mutating func wait(_ waiter: Waiter) -> Waiter? {
        if !messages.isEmpty || isFinished { return waiter }
        self.waiter = waiter
        return nil
    }

    /// No more messages will come; returns the waiting consumer to wake, if any.
    mutating func finish() -> Waiter? {
        isFinished = true
        defer { waiter = nil }
        return waiter
    }

    /// The waiting consumer gave up (cancelled); returns it to wake.
    mutating func cancelWait() -> Waiter? {
        defer { waiter = nil }
        return waiter
    }
}
