import CoreMetrics
public import NIOCore
public import NIOHTTP1
import Synchronization

/// The application's side of one WebSocket connection.
///
/// Each connection is an actor whose executor is its channel's event loop, so
/// the handler hands it messages and it writes to the socket without a thread
/// hop. Sends never wait for the socket: frames are written to the channel and
/// flushed once per event-loop tick. A client that reads too slowly is closed
/// with 1008 once ``WebSocketServerConfiguration/maxOutboundBufferBytes`` pile
/// up for it.
///
/// ```swift
/// server.addRoute("/chat") { request in .accept() } onOpen: { socket in
///     for await message in socket.messages {
///         try await socket.send(.text("echo: \(message.text)"))
///     }
/// }
/// ```
public actor WebSocket {
    /// A number unique among this server's connections (never reused while it
    /// runs); a cluster node's ``DistributedFD/fd``.
    public nonisolated let id: UInt64
    /// The upgrade request: path, query, headers, peer address.
    public nonisolated let request: WebSocketRequest
    /// What the route's `shouldUpgrade` attached when it accepted the connection.
    public nonisolated let attributes: [String: String]
    /// The subprotocol's wrapping of outgoing messages, when one was negotiated.
    package nonisolated let framing: OutboundFraming?
    /// permessage-deflate, when the client negotiated it.
    package nonisolated let compression: ConnectionCompression?
    nonisolated let channel: any Channel
    nonisolated let inbound: InboundBuffer
    private let maxOutboundBufferBytes: Int
    nonisolated let counters: NodeCounters
    // The write path's state is touched only on the connection's event loop (the
    // actor's executor): nonisolated(unsafe) lets a fan-out write from the loop without
    // `assumeIsolated`, whose closure costs two allocations per call.
    nonisolated(unsafe) private var unwritableBytes = 0
    nonisolated(unsafe) private var writesClosed = false
    private var flushScheduled = false
    private var writableWaiters: [CheckedContinuation<Void, Never>] = []
    /// Asks the handler to close, with a handshake or at once.
    nonisolated(unsafe) private var closeRequested: ((WebSocketCloseCode, String, CloseMode) -> Void)?
    private var closeWaiters: [CheckedContinuation<WebSocketCloseCode, Never>] = []
    /// Set once the connection has closed: the code the peer sent or we failed it with.
    public private(set) var closeCode: WebSocketCloseCode?
    /// Set once the connection has closed: why (a client's close, a limit, the server…).
    public private(set) var closeCause: WebSocketCloseCause?

    /// The connection's event loop: the actor runs where its socket does.
    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        channel.eventLoop.executor.asUnownedSerialExecutor()
    }

    /// The event loop this connection (and this actor) runs on.
    public nonisolated var eventLoop: any EventLoop { channel.eventLoop }

    package init(id: UInt64, request: WebSocketRequest, attributes: [String: String], channel: any Channel,
                 configuration: WebSocketServerConfiguration, counters: NodeCounters, framing: OutboundFraming? = nil,
                 compression: ConnectionCompression? = nil) {
        self.framing = framing
        self.compression = compression
        self.counters = counters
        self.id = id
        self.request = request
        self.attributes = attributes
        self.channel = channel
        self.maxOutboundBufferBytes = configuration.maxOutboundBufferBytes
        self.inbound = InboundBuffer(limit: configuration.inboundBufferLimit, byteLimit: configuration.inboundBufferBytes,
                                     channel: channel, counters: counters)
    }

    /// Every message the client sends, in order, until the connection closes.
    ///
    /// Messages are buffered from the moment the connection opens; when
    /// ``WebSocketServerConfiguration/inboundBufferLimit`` are waiting, the
    /// server stops reading this socket until the application consumes more.
    /// Iterate it from one task only.
    public nonisolated var messages: WebSocketMessages { WebSocketMessages(buffer: inbound) }

    /// Calls `handler` for every message the client sends, in order, one at a
    /// time: the callback form of ``messages`` (the reference package's
    /// `onMessage`). Returns at once; messages that arrived before it are
    /// handled first.
    ///
    /// Use it instead of a `for await` loop when a node holds many mostly
    /// idle connections: a loop keeps a suspended task per connection, while
    /// here a task on the connection's event loop runs only while messages
    /// wait and ends when none is left (the idle-memory benchmark gives the
    /// difference). The same limits apply: past ``WebSocketServerConfiguration/inboundBufferLimit``
    /// waiting messages the socket stops being read until the handler catches
    /// up. Never block in the handler (it runs on the event loop); await as
    /// you would in a loop. Use one form per connection, not both.
    public nonisolated func handleMessages(_ handler: @escaping @Sendable (WebSocketMessage) async -> Void) {
        inbound.handle(with: handler)
    }

    /// `true` until the connection starts closing.
    public var isOpen: Bool { closeCode == nil && closeRequested != nil }

    /// Sends a message. Returns once the frame is handed to the socket (it
    /// does not wait for the peer).
    /// - Throws: ``WebSocketError/closed`` after the connection has closed.
    public func send(_ message: WebSocketMessage) throws {
        guard closeCode == nil else { throw WebSocketError.closed }
        let message = framing?.frame(message) ?? message
        if let compression {
            write(WebSocketFrameEncoding.burst(CollectionOfOne(message), compression: compression))
        } else {
            write(WebSocketFrameEncoding.frame(message, allocator: channel.allocator))
        }
    }

    /// Starts the close handshake with `code`; the TCP connection closes when
    /// the client answers, or after the close timeout.
    public func close(code: WebSocketCloseCode = .normalClosure, reason: String = "") {
        closeRequested?(code, reason, .handshake)
    }

    /// Waits until the connection has closed and returns its close code.
    public func closed() async -> WebSocketCloseCode {
        if let closeCode { return closeCode }
        return await withCheckedContinuation { closeWaiters.append($0) }
    }

    // MARK: Used by the transport, on the event loop.

    /// Writes an already-encoded frame (or burst of frames) and schedules a flush.
    func write(_ bytes: ByteBuffer) {
        guard writeWithoutFlush(bytes) else { return }
        guard !flushScheduled else { return }
        flushScheduled = true
        channel.eventLoop.execute {
            self.assumeIsolated { socket in
                socket.flushScheduled = false
                socket.channel.flush()
            }
        }
    }

    /// Writes an encoded frame without scheduling a flush (a fan-out flushes
    /// once per batch). Every write to the client goes through here (data,
    /// and pongs answering its pings), so a client whose socket stays
    /// unwritable while more than `maxOutboundBufferBytes` pile up is closed
    /// at once with 1008 and counted, whatever it made us write.
    ///
    /// Only on the connection's event loop (the transport's drain, or the actor).
    nonisolated func writeWithoutFlush(_ bytes: ByteBuffer) -> Bool {
        channel.eventLoop.assertInEventLoop()
        guard !writesClosed else { return false }
        if !channel.isWritable {
            unwritableBytes += bytes.readableBytes
            if unwritableBytes > maxOutboundBufferBytes {
                closeRequested?(.policyViolation, "slow consumer", .abort(.slowConsumer))
                return false
            }
        }
        channel.write(bytes, promise: nil)
        return true
    }

    nonisolated func countInbound(_ kind: WebSocketMessage.Kind) {
        (kind == .text ? counters.textIn : counters.binaryIn).increment()
    }

    func writabilityChanged(isWritable: Bool) {
        guard isWritable else { return }
        unwritableBytes = 0
        resumeWritableWaiters()
    }

    /// Writes messages that are already in their final form (no subprotocol
    /// wrapping), in order, now, with one flush. For a paced stream of many
    /// (a history replay): call ``waitUntilWritable()`` between batches.
    package func sendFramed(_ messages: [WebSocketMessage]) {
        guard !messages.isEmpty else { return }
        write(compression.map { WebSocketFrameEncoding.burst(messages, compression: $0) } ?? WebSocketFrameEncoding.burst(messages))
    }

    /// Returns once the socket takes more without queueing (its outbound
    /// buffer back under the channel's high-water mark), or once it closed.
    package func waitUntilWritable() async {
        guard closeCode == nil, !channel.isWritable else { return }
        await withCheckedContinuation { writableWaiters.append($0) }
    }

    private func resumeWritableWaiters() {
        let waiters = writableWaiters
        writableWaiters = []
        for waiter in waiters { waiter.resume() }
    }

    func attach(close: @escaping (WebSocketCloseCode, String, CloseMode) -> Void) {
        closeRequested = close
    }

    func didClose(code: WebSocketCloseCode, cause: WebSocketCloseCause) {
        guard closeCode == nil else { return }
        closeCode = code
        writesClosed = true
        closeCause = cause
        closeRequested = nil
        inbound.finish()
        resumeWritableWaiters()
        let waiters = closeWaiters
        closeWaiters = []
        for waiter in waiters { waiter.resume(returning: code) }
    }
}

/// Errors from a ``WebSocket``.
public enum WebSocketError: Error, Sendable, Hashable {
    /// The connection has closed; nothing more can be sent.
    case closed
}
