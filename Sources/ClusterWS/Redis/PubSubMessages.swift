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

    private let state: Mutex<RouterBufferState<CheckedContinuation<Void, Never>>>
    private let onOverflow: (@Sendable (Int) -> Void)?

    /// - Parameter onOverflow: told how many messages were dropped for lack of room (on the event loop).
    package init(limits: Limits = Limits(), onOverflow: (@Sendable (Int) -> Void)? = nil) {
        self.state = Mutex(RouterBufferState(limits: limits))
        self.onOverflow = onOverflow
    }

    /// Messages dropped because the buffer was full (or had finished).
    var dropped: Int { state.withLock { $0.dropped } }

    /// Whether a consumer is parked waiting (for tests).
    var hasWaiter: Bool { state.withLock { $0.hasWaiter } }

    /// Adds a message; drops (and counts) it when the buffer is at a limit or has finished.
    func append(_ message: RedisPubSubMessage) {
        switch state.withLock({ $0.append(message) }) {
        case .queued, .ignored: break
        case .wake(let waiter): waiter.resume()
        case .overflowed: onOverflow?(1)
        }
    }

    /// No more messages: the consumer gets what is waiting, then the end.
    func finish() {
        state.withLock { $0.finish() }?.resume()
    }

    /// Every waiting message (up to `maximum`), waiting for one if there is none;
    /// empty once finished and drained, or when the calling task is cancelled.
    /// One consumer at a time.
    func nextBatch(maximum: Int = 1_024) async -> [RedisPubSubMessage] {
        while true {
            switch state.withLock({ $0.take(maximum: maximum) }) {
            case .batch(let batch): return batch
            case .finished: return []
            case .empty: if Task.isCancelled { return [] }
            }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let ready: CheckedContinuation<Void, Never>? =
                        Task.isCancelled ? continuation : state.withLock { $0.wait(continuation) }
                    ready?.resume()
                }
            } onCancel: {
                state.withLock { $0.cancelWait() }?.resume()
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
