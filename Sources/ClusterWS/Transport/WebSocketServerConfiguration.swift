/// Limits and timeouts of a ``WebSocketServer``. Every value has a safe default.
///
/// ```swift
/// var configuration = WebSocketServerConfiguration(port: 9502)
/// configuration.maxMessageSize = 64 * 1024
/// configuration.keepalive = .enabled(pingInterval: .seconds(20), pongTimeout: .seconds(10))
/// ```
public struct WebSocketServerConfiguration: Sendable {
    /// Address to bind; `0.0.0.0` for every interface.
    public var host: String
    /// Port to bind; `0` picks a free one (read it from ``WebSocketServer/port``).
    public var port: Int
    /// Largest single frame accepted; a bigger one closes the connection with 1009.
    public var maxFrameSize: Int
    /// Largest message (all fragments together); a bigger one closes with 1009.
    public var maxMessageSize: Int
    /// A socket that has not completed its HTTP upgrade request within this
    /// time (sent nothing, or half a request) is closed.
    public var handshakeTimeout: Duration
    /// Server pings, and what happens to a peer that does not answer.
    public var keepalive: Keepalive
    /// How long to wait for the peer's close frame after sending ours, before
    /// closing TCP anyway.
    public var closeTimeout: Duration
    /// Bytes that may queue for a client whose socket is not writable (it
    /// reads too slowly). Past this the client is closed with 1008 and counted.
    public var maxOutboundBufferBytes: Int
    /// Messages received but not yet consumed from ``WebSocket/messages``;
    /// past this the server stops reading that socket until the application
    /// catches up (TCP backpressure).
    public var inboundBufferLimit: Int
    /// Payload bytes received but not yet consumed from ``WebSocket/messages``;
    /// past this the server stops reading that socket, like ``inboundBufferLimit``.
    /// A connection holds at most this plus one message (``maxMessageSize``).
    public var inboundBufferBytes: Int
    /// Bytes per second a connection may send, counting every frame (data and
    /// control), through a token bucket holding up to twice as many; a faster
    /// client is closed with 1008 and counted. `nil`: no limit.
    public var maxBytesPerSecond: Int?
    /// Payload bytes waiting in one event loop's fan-out queue (broadcasts and
    /// routed messages not yet written to its sockets). Past it, newer messages
    /// are dropped for that loop and counted (`reason="fanout_overflow"`):
    /// the queue only grows when the loop is starved, and must not grow forever.
    public var fanOutQueueBytes: Int
    /// Per event loop: payload bytes of broadcasts that may wait to be flushed
    /// to the loop's connections before an awaiting sender
    /// (``WebSocketServer/broadcastAndWait(_:except:)``, `sender.sendAll`)
    /// waits for them. Under it an awaited broadcast returns at once and
    /// coalesces with the next ones (one write per connection for many
    /// broadcasts); over it the sender waits until they are written.
    public var fanOutPacingBytes: Int = 256 << 10
    /// TCP connections that have not finished their HTTP upgrade yet; past it,
    /// new connections are closed at once and counted.
    public var maxPendingHandshakes: Int
    /// Largest HTTP request head (request line and headers); a bigger one gets
    /// HTTP 431 and the connection is closed.
    public var maxRequestHeadBytes: Int
    /// Largest body of a plain HTTP request; a bigger one gets HTTP 413 and the
    /// connection is closed.
    public var maxRequestBodyBytes: Int
    /// Allowed `Origin` header values; `nil` allows any (and requests without one).
    /// A request from another origin is refused with HTTP 403.
    public var allowedOrigins: Set<String>?
    /// Open connections this server accepts; past it, upgrades get HTTP 503.
    public var maxConnections: Int
    /// Messages per second a connection may send, pings and pongs included (a
    /// token bucket holding up to twice as many); a faster client is closed
    /// with 1008. `nil`: no limit.
    public var maxMessagesPerSecond: Int?
    /// permessage-deflate (RFC 7692): compress messages for clients that offer
    /// it. On by default, each message compressed alone (no state per
    /// connection; one deflate per fan-out); see ``WebSocketCompression``.
    public var compression: WebSocketCompression = .noContextTakeover
    /// Listen backlog.
    public var backlog: Int32
    /// `false` when another server accepts the connections and hands upgrades
    /// to this one (the Hummingbird integration); ``WebSocketServer/run()``
    /// then binds nothing and only runs connection handlers and shutdown.
    public var listen: Bool

    /// Server-initiated pings (RFC 6455 §5.5.2).
    public struct Keepalive: Sendable {
        enum Mode: Sendable {
            case disabled
            case enabled(pingInterval: Duration, pongTimeout: Duration)
        }

        let mode: Mode

        /// Ping every `pingInterval`; close a peer that sends nothing back within `pongTimeout`.
        public static func enabled(pingInterval: Duration, pongTimeout: Duration) -> Keepalive {
            Keepalive(mode: .enabled(pingInterval: pingInterval, pongTimeout: pongTimeout))
        }

        /// No server pings.
        public static let disabled = Keepalive(mode: .disabled)
    }

    /// Creates a configuration; the defaults suit a production server.
    public init(
        host: String = "127.0.0.1",
        port: Int = 0,
        maxFrameSize: Int = 1 << 20,
        maxMessageSize: Int = 1 << 20,
        handshakeTimeout: Duration = .seconds(10),
        keepalive: Keepalive = .enabled(pingInterval: .seconds(30), pongTimeout: .seconds(10)),
        closeTimeout: Duration = .seconds(5),
        maxOutboundBufferBytes: Int = 4 << 20,
        inboundBufferLimit: Int = 256,
        allowedOrigins: Set<String>? = nil,
        backlog: Int32 = 4096,
        listen: Bool = true,
        maxConnections: Int = 50_000,
        maxMessagesPerSecond: Int? = 200,
        inboundBufferBytes: Int = 1 << 20,
        maxBytesPerSecond: Int? = 1 << 20,
        fanOutQueueBytes: Int = 64 << 20,
        maxPendingHandshakes: Int = 4_096,
        maxRequestHeadBytes: Int = 16 << 10,
        maxRequestBodyBytes: Int = 1 << 20
    ) {
        self.inboundBufferBytes = inboundBufferBytes
        self.maxBytesPerSecond = maxBytesPerSecond
        self.fanOutQueueBytes = fanOutQueueBytes
        self.maxPendingHandshakes = maxPendingHandshakes
        self.maxRequestHeadBytes = maxRequestHeadBytes
        self.maxRequestBodyBytes = maxRequestBodyBytes
        self.maxConnections = maxConnections
        self.maxMessagesPerSecond = maxMessagesPerSecond
        self.host = host
        self.port = port
        self.maxFrameSize = maxFrameSize
        self.maxMessageSize = maxMessageSize
        self.handshakeTimeout = handshakeTimeout
        self.keepalive = keepalive
        self.closeTimeout = closeTimeout
        self.maxOutboundBufferBytes = maxOutboundBufferBytes
        self.inboundBufferLimit = inboundBufferLimit
        self.allowedOrigins = allowedOrigins
        self.backlog = backlog
        self.listen = listen
    }
}
