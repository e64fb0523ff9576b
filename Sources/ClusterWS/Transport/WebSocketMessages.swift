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
        /// Set by ``WebSocket/handleMessages(_:)``: messages go to it instead of a reader.
        var handler: (@Sendable (WebSocketMessage) async -> Void)?
        /// A task is running `handler` over the waiting messages.
        var draining = false
        /// Runs once the application has handled every message (see ``whenIdle(_:)``).
        var idleAction: (@Sendable () -> Void)?

        /// A reader took a message and has not asked for the next one yet.
        var readerBusy = false
        /// The application reads (``next()`` was called) or set a handler.
        var hasConsumer = false

        /// Every message was handled: none waits, no reader holds one and no
        /// handler runs (also true for an application that never reads).
        var isIdle: Bool { messages.isEmpty && !readerBusy && !draining }
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
        let (waiter, pause, drain) = state.withLock {
            state -> (CheckedContinuation<WebSocketMessage?, Never>?, Bool, Bool) in
            guard !state.finished else { return (nil, false, false) }
            if let waiter = state.waiter {
                state.waiter = nil
                state.readerBusy = true
                return (waiter, false, false)
            }
            state.messages.append(message)
            state.bytes += message.data.readableBytes
            let drain = state.handler != nil && !state.draining
            if drain { state.draining = true }
            if state.messages.count >= limit || state.bytes >= byteLimit, !state.paused {
                state.paused = true
                return (nil, true, drain)
            }
            return (nil, false, drain)
        }
        waiter?.resume(returning: message)
        if drain { startDraining() }
        if pause { counters.hit(.inboundBuffer) }
        return pause
    }

    /// Runs `action` once the application has handled every message received
    /// so far and waits for the next one: the replies it wrote to them are
    /// then queued on the socket. Returns `true` instead, without keeping
    /// `action`, if that is already so (or the application never reads).
    func whenIdle(_ action: @escaping @Sendable () -> Void) -> Bool {
        state.withLock { state -> Bool in
            guard state.hasConsumer, !state.isIdle else { return true }
            state.idleAction = action
            return false
        }
    }

    /// Hands every message, from now on and those already waiting, to
    /// `handler`, in order, one at a time (see ``WebSocket/handleMessages(_:)``).
    func handle(with handler: @escaping @Sendable (WebSocketMessage) async -> Void) {
        let drain = state.withLock { state -> Bool in
            state.handler = handler
            state.hasConsumer = true
            guard !state.draining, !state.messages.isEmpty else { return false }
            state.draining = true
            return true
        }
        if drain { startDraining() }
    }

    /// A task on the connection's event loop that runs the handler over the
    /// waiting messages and ends when none is left: an idle connection holds
    /// no task.
    private func startDraining() {
        Task(executorPreference: EventLoopTaskExecutor.of(channel.eventLoop)) { await self.drainToHandler() }
    }

    private func drainToHandler() async {
        while true {
            let (next, resume, idle) = state.withLock {
                state -> ((WebSocketMessage, @Sendable (WebSocketMessage) async -> Void)?, Bool, (@Sendable () -> Void)?) in
                guard let handler = state.handler, let message = state.messages.popFirst() else {
                    state.draining = false
                    return (nil, false, state.isIdle ? state.idleAction.take() : nil)
                }
                state.bytes -= message.data.readableBytes
                return ((message, handler), resumeIfHalfEmpty(&state), nil)
            }
            if resume { resumeReading() }
            idle?()
            guard let (message, handler) = next else { return }
            await handler(message)
        }
    }

    /// Reading paused at a limit resumes once half of each is consumed.
    private func resumeIfHalfEmpty(_ state: inout State) -> Bool {
        guard state.paused, state.messages.count <= limit / 2, state.bytes <= byteLimit / 2 else { return false }
        state.paused = false
        return true
    }

    private func resumeReading() {
        let channel = self.channel
        channel.eventLoop.execute {
            channel.setOption(ChannelOptions.autoRead, value: true).whenSuccess { channel.read() }
        }
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
            state.hasConsumer = true
            if let message = state.messages.popFirst() {
                state.bytes -= message.data.readableBytes
                state.readerBusy = true
                return (.some(message), resumeIfHalfEmpty(&state))
            }
            if state.finished { return (.some(nil), false) }
            return (nil, false)
        }
        if resume { resumeReading() }
        if let message { return message }
        return await withCheckedContinuation { continuation in
            let (ready, idle) = state.withLock { state -> (WebSocketMessage??, (@Sendable () -> Void)?) in
                if let message = state.messages.popFirst() {
                    state.bytes -= message.data.readableBytes
                    state.readerBusy = true
                    return (.some(message), nil)
                }
                if state.finished { return (.some(nil), nil) }
                state.waiter = continuation
                state.readerBusy = false
                return (nil, state.isIdle ? state.idleAction.take() : nil)
            }
            if let ready { continuation.resume(returning: ready) }
            idle?()
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
