import NIOCore
import Synchronization

/// Messages received on one connection and not yet consumed, with TCP
/// backpressure: at `limit` waiting messages or `byteLimit` waiting payload
/// bytes the socket stops being read (counted as a limit hit), and reading
/// resumes when the consumer has taken half of each.
final class InboundBuffer: Sendable {
    private struct State {
        var messages: CircularBuffer<WebSocketMessage> = CircularBuffer(initialCapacity: 4)
        var bytes = 0
        var waiter: CheckedContinuation<WebSocketMessage?, Never>?
        var finished = false
        var paused = false
    }

    private let state = Mutex(State())
    private let limit: Int
    private let byteLimit: Int
    private let channel: any Channel
    private let counters: NodeCounters

    init(limit: Int, byteLimit: Int, channel: any Channel, counters: NodeCounters) {
        self.limit = max(limit, 1)
        self.byteLimit = max(byteLimit, 1)
        self.channel = channel
        self.counters = counters
    }

    /// Adds a message (on the event loop). Returns `true` if reading should pause.
    func append(_ message: WebSocketMessage) -> Bool {
        let (waiter, pause) = state.withLock { state -> (CheckedContinuation<WebSocketMessage?, Never>?, Bool) in
            guard !state.finished else { return (nil, false) }
            if let waiter = state.waiter {
                state.waiter = nil
                return (waiter, false)
            }
            state.messages.append(message)
            state.bytes += message.data.readableBytes
            if state.messages.count >= limit || state.bytes >= byteLimit, !state.paused {
                state.paused = true
                return (nil, true)
            }
            return (nil, false)
        }
        waiter?.resume(returning: message)
        if pause { counters.hit(.inboundBuffer) }
        return pause
    }

    /// No more messages will come: wakes a waiting consumer with `nil` once the buffer drains.
    func finish() {
        let waiter = state.withLock { state -> CheckedContinuation<WebSocketMessage?, Never>? in
            state.finished = true
            defer { state.waiter = nil }
            return state.messages.isEmpty ? state.waiter : nil
        }
        waiter?.resume(returning: nil)
    }

    func next() async -> WebSocketMessage? {
        let (message, resume) = state.withLock { state -> (WebSocketMessage??, Bool) in
            if let message = state.messages.popFirst() {
                state.bytes -= message.data.readableBytes
                var resume = false
                if state.paused, state.messages.count <= limit / 2, state.bytes <= byteLimit / 2 {
                    state.paused = false
                    resume = true
                }
                return (.some(message), resume)
            }
            if state.finished { return (.some(nil), false) }
            return (nil, false)
        }
        if resume {
            let channel = self.channel
            channel.eventLoop.execute {
                channel.setOption(ChannelOptions.autoRead, value: true).whenSuccess { channel.read() }
            }
        }
        if let message { return message }
        return await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> WebSocketMessage?? in
                if let message = state.messages.popFirst() {
                    state.bytes -= message.data.readableBytes
                    return .some(message)
                }
                if state.finished { return .some(nil) }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

/// The messages a client sends on one connection, as an `AsyncSequence`.
/// It ends when the connection closes.
public struct WebSocketMessages: AsyncSequence, Sendable {
    /// Whole, validated messages.
    public typealias Element = WebSocketMessage
    let buffer: InboundBuffer

    /// Waits for the next message; `nil` once the connection has closed and the buffer is empty.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let buffer: InboundBuffer

        public mutating func next() async -> WebSocketMessage? {
            await buffer.next()
        }
    }

    /// An iterator; use one per connection, from one task.
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(buffer: buffer) }
}
