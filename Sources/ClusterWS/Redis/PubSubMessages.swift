import NIOCore
import Synchronization

/// The subscriber's messages not yet consumed: bounded in messages and in
/// payload bytes (past either, newer messages are dropped and counted),
/// filled on the event loop, drained by one consumer a burst at a time.
///
/// It replaces an `AsyncStream`: a consumer takes every waiting message in
/// one call (one wake-up per burst instead of per message), and the code is
/// our own, specialised for its element (the stream's generic storage cost a
/// runtime metadata lookup per message in profiles).
package final class PubSubBuffer: Sendable {
    /// How much the buffer holds at most.
    package struct Limits: Sendable, Hashable {
        /// Messages waiting.
        package var messages: Int
        /// Payload bytes waiting.
        package var bytes: Int

        package init(messages: Int = 100_000, bytes: Int = 128 << 20) {
            self.messages = max(messages, 1)
            self.bytes = max(bytes, 1)
        }
    }

    private struct State {
        var messages = CircularBuffer<RedisPubSubMessage>(initialCapacity: 64)
        var bytes = 0
        var waiter: CheckedContinuation<Void, Never>?
        var finished = false
        var dropped = 0
    }

    private let state = Mutex(State())
    private let limits: Limits
    private let onOverflow: (@Sendable (Int) -> Void)?

    /// - Parameter onOverflow: told how many messages were dropped for lack of room (on the event loop).
    package init(limits: Limits = Limits(), onOverflow: (@Sendable (Int) -> Void)? = nil) {
        self.limits = limits
        self.onOverflow = onOverflow
    }

    /// Messages dropped because the buffer was full.
    var dropped: Int { state.withLock { $0.dropped } }

    /// Adds a message; drops (and counts) it when the buffer is at a limit or has finished.
    func append(_ message: RedisPubSubMessage) {
        let size = message.payload.readableBytes
        let (waiter, overflow) = state.withLock { state -> (CheckedContinuation<Void, Never>?, Bool) in
            guard !state.finished else {
                state.dropped += 1  // after the end: nobody will read it
                return (nil, false)
            }
            // One message bigger than the whole byte budget still passes into an empty buffer.
            guard state.messages.count < limits.messages,
                  state.bytes + size <= limits.bytes || state.messages.isEmpty else {
                state.dropped += 1
                return (nil, true)
            }
            state.messages.append(message)
            state.bytes += size
            defer { state.waiter = nil }
            return (state.waiter, false)
        }
        if overflow { onOverflow?(1) }
        waiter?.resume()
    }

    /// No more messages: the consumer gets what is waiting, then the end.
    func finish() {
        let waiter = state.withLock { state in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Every waiting message (up to `maximum`), waiting for one if there is none;
    /// empty once finished and drained, or when the calling task is cancelled.
    /// One consumer at a time.
    func nextBatch(maximum: Int = 1_024) async -> [RedisPubSubMessage] {
        while true {
            let (batch, finished) = state.withLock { state -> ([RedisPubSubMessage], Bool) in
                let count = min(state.messages.count, maximum)
                guard count > 0 else { return ([], state.finished) }
                var batch: [RedisPubSubMessage] = []
                batch.reserveCapacity(count)
                for _ in 0..<count {
                    let message = state.messages.removeFirst()
                    state.bytes -= message.payload.readableBytes
                    batch.append(message)
                }
                return (batch, false)
            }
            if !batch.isEmpty || finished || Task.isCancelled { return batch }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let ready = state.withLock { state -> Bool in
                        if !state.messages.isEmpty || state.finished || Task.isCancelled { return true }
                        state.waiter = continuation
                        return false
                    }
                    if ready { continuation.resume() }
                }
            } onCancel: {
                let waiter = state.withLock { state in
                    defer { state.waiter = nil }
                    return state.waiter
                }
                waiter?.resume()
            }
        }
    }
}

/// Every message published to a subscribed channel, in the order Redis sent
/// them, as an `AsyncSequence` (one consumer). It ends when the subscriber stops.
package struct PubSubMessages: AsyncSequence, Sendable {
    package typealias Element = RedisPubSubMessage
    let buffer: PubSubBuffer

    /// Takes one message at a time from the shared buffer, so several
    /// iterators made one after the other never lose messages between them.
    package struct AsyncIterator: AsyncIteratorProtocol {
        let buffer: PubSubBuffer

        package mutating func next() async -> RedisPubSubMessage? {
            await buffer.nextBatch(maximum: 1).first
        }
    }

    package func makeAsyncIterator() -> AsyncIterator { AsyncIterator(buffer: buffer) }

    /// The next burst of waiting messages (at least one; empty once the subscriber has stopped).
    package func nextBatch() async -> [RedisPubSubMessage] { await buffer.nextBatch() }
}
