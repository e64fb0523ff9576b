public import CoreMetrics
public import Logging
public import NIOCore
package import NIOHTTP1
public import NIOPosix
public import ServiceLifecycle
import Synchronization

/// A WebSocket server on SwiftNIO, strict about RFC 6455, lean per connection.
///
/// Routes are registered before ``run()``. Each accepted connection becomes a
/// ``WebSocket`` actor on its channel's event loop; frames are decoded,
/// assembled and validated in a channel handler, with no task per connection.
/// Requests that are not upgrades go to the plain HTTP responder (or get 404);
/// refused handshakes get a real HTTP answer (400, 401, 403, 404, 426).
///
/// ```swift
/// let server = WebSocketServer(configuration: .init(port: 9502))
/// server.addRoute("/ws") { request in
///     guard let uid = request.queryParameter("uid") else { return .unauthorized() }
///     return .accept(attributes: ["uid": uid])
/// } onOpen: { socket in
///     for await message in socket.messages { try? await socket.send(message) }
/// }
/// try await server.run()   // a swift-service-lifecycle Service
/// ```
///
/// On a graceful shutdown the server stops accepting, closes every socket
/// with 1001 (going away), waits for the close handshakes (bounded by the
/// close timeout), lets the `onOpen` handlers return, and then returns.
public final class WebSocketServer: Service, Sendable {
    /// A registered WebSocket path.
    struct Route: Sendable {
        var shouldUpgrade: @Sendable (WebSocketRequest) async throws -> WebSocketUpgradeDecision
        var onAbandon: (@Sendable (WebSocketRequest, [String: String]) -> Void)?
        var onOpen: @Sendable (WebSocket) async -> Void
        var onClose: (@Sendable (WebSocket, WebSocketCloseCode) -> Void)?
        /// Applied to connections accepted with the attribute `protocol` equal to its subprotocol.
        var framing: OutboundFraming?
    }

    private struct State {
        var routes: [String: Route] = [:]
        var responder: (@Sendable (PlainHTTPRequest) async -> PlainHTTPResponse)?
        var listening: (any Channel)?
        var port: Int?
        var portWaiters: [CheckedContinuation<Int, any Error>] = []
        var shuttingDown = false
        var nextID: UInt64 = 0
        /// Why the server will never listen (its bind failed, or its owner gave up).
        var failure: (any Error)?
    }

    /// The limits and timeouts in force.
    public let configuration: WebSocketServerConfiguration
    let group: any EventLoopGroup
    let logger: Logger
    private let state = Mutex(State())
    let connections: ConnectionTable
    /// Drops and limit hits (and messages in), through the metrics factory.
    package let counters: NodeCounters
    /// Connections accepted and not yet upgraded (or closed).
    private let pendingHandshakes = Atomic<Int>(0)
    /// Connections holding a permessage-deflate context of their own (bounded by
    /// `compression.maxContextTakeoverConnections`).
    let compressionContexts = Atomic<Int>(0)
    private let opened: AsyncStream<(WebSocket, Route)>
    private let openedContinuation: AsyncStream<(WebSocket, Route)>.Continuation

    /// Creates a server; nothing is bound until ``run()``.
    /// - Parameter metricsFactory: where its counters go (`clusterws_messages_in_total`,
    ///   `clusterws_drops_total`, `clusterws_limit_hits_total`); `nil` uses the
    ///   process-wide `MetricsSystem`.
    public convenience init(
        configuration: WebSocketServerConfiguration = .init(),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "clusterws.transport"),
        metricsFactory: (any MetricsFactory)? = nil
    ) {
        self.init(configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger,
                  counters: NodeCounters(factory: metricsFactory ?? MetricsSystem.factory, logger: logger))
    }

    /// Creates a server that counts into `counters` (a cluster node's, with its dimensions).
    package init(configuration: WebSocketServerConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger,
                 counters: NodeCounters) {
        self.configuration = configuration
        self.group = eventLoopGroup
        self.logger = logger
        self.counters = counters
        self.connections = ConnectionTable(group: eventLoopGroup, compressionLevel: configuration.compression.zlibLevel)
        (opened, openedContinuation) = AsyncStream.makeStream()
    }

    /// Registers a WebSocket endpoint at `path` (exact match, query ignored).
    /// - Parameters:
    ///   - shouldUpgrade: decides before the upgrade (authentication goes
    ///     here); a thrown error refuses with 401.
    ///   - onClose: called once the connection has closed, on its event loop,
    ///     with the close code; keep it short (no task is created for it).
    ///   - onOpen: runs in a child task of ``run()`` once the connection is
    ///     open, with the connection's event loop as the task's executor
    ///     preference (never block in it). Returning does not close the
    ///     connection: it lives until either side closes it.
    public func addRoute(
        _ path: String,
        shouldUpgrade: @escaping @Sendable (WebSocketRequest) async throws -> WebSocketUpgradeDecision = { _ in .accept() },
        onClose: (@Sendable (WebSocket, WebSocketCloseCode) -> Void)? = nil,
        onOpen: @escaping @Sendable (WebSocket) async -> Void
    ) {
        state.withLock { $0.routes[path] = Route(shouldUpgrade: shouldUpgrade, onAbandon: nil, onOpen: onOpen, onClose: onClose) }
    }

    /// Registers a WebSocket endpoint whose `shouldUpgrade` reserves something
    /// (a cluster node counts the connection against its user's limit):
    /// `onAbandon` gives it back when an accepted handshake closes before the
    /// connection opens, with the request and the attributes it was accepted with.
    package func addRoute(
        _ path: String,
        framing: OutboundFraming? = nil,
        shouldUpgrade: @escaping @Sendable (WebSocketRequest) async throws -> WebSocketUpgradeDecision,
        onAbandon: @escaping @Sendable (WebSocketRequest, [String: String]) -> Void,
        onClose: @escaping @Sendable (WebSocket, WebSocketCloseCode) -> Void,
        onOpen: @escaping @Sendable (WebSocket) async -> Void
    ) {
        state.withLock {
            $0.routes[path] = Route(shouldUpgrade: shouldUpgrade, onAbandon: onAbandon, onOpen: onOpen, onClose: onClose,
                                    framing: framing)
        }
    }

    /// Answers plain HTTP requests (not upgrades, not WebSocket paths).
    /// Without one, they get 404.
    public func setHTTPResponder(_ responder: @escaping @Sendable (PlainHTTPRequest) async -> PlainHTTPResponse) {
        state.withLock { $0.responder = responder }
    }

    /// The bound port, once listening.
    public var port: Int? { state.withLock { $0.port } }

    /// Waits until the server listens and returns its port.
    public func waitUntilListening() async throws -> Int {
        try await withCheckedThrowingContinuation { continuation in
            let (port, failure) = state.withLock { state -> (Int?, (any Error)?) in
                if state.port == nil, state.failure == nil { state.portWaiters.append(continuation) }
                return (state.port, state.failure)
            }
            if let port {
                continuation.resume(returning: port)
            } else if let failure {
                continuation.resume(throwing: failure)
            }
        }
    }

    /// Fails everyone waiting in ``waitUntilListening()``: the server will
    /// not listen (its owner stopped before starting it).
    package func failListeningWaiters(_ error: any Error) {
        let waiters = state.withLock { state in
            state.failure = error
            defer { state.portWaiters = [] }
            return state.portWaiters
        }
        for waiter in waiters { waiter.resume(throwing: error) }
    }

    /// Open connections right now.
    public var connectionCount: Int { connections.count }

    /// Connections accepted that have not finished (or failed) their handshake yet.
    package var pendingHandshakeCount: Int { pendingHandshakes.load(ordering: .relaxed) }

    /// Clients closed with 1008 because they read too slowly.
    public var slowConsumerCloses: Int { counters.dropped(.slowConsumer) }

    /// Clients closed with 1008 because they sent faster than `maxMessagesPerSecond`.
    public var rateLimitCloses: Int { counters.dropped(.rateLimit) }

    /// Clients closed with 1008 because they sent more than `maxBytesPerSecond`.
    public var byteRateLimitCloses: Int { counters.dropped(.byteRateLimit) }

    /// Messages dropped because an event loop's fan-out queue was over `fanOutQueueBytes`.
    public var fanOutDrops: Int { counters.dropped(.fanOutOverflow) }

    /// Binds, serves until cancelled or shut down gracefully, then closes every
    /// connection with 1001 and returns.
    public func run() async throws {
        guard configuration.listen else {
            // Hosted: another server accepts the connections (see ClusterWSHummingbird).
            await serveHandlers {
                try? await gracefulShutdown()
            }
            return
        }
        let channel: any Channel
        do {
            channel = try await bootstrap().bind(host: configuration.host, port: configuration.port).get()
        } catch {
            failListeningWaiters(error)
            throw error
        }
        let port = channel.localAddress?.port ?? configuration.port
        let waiters = state.withLock { state in
            state.listening = channel
            state.port = port
            defer { state.portWaiters = [] }
            return state.portWaiters
        }
        for waiter in waiters { waiter.resume(returning: port) }
        logger.info("websocket server listening", metadata: ["port": "\(port)"])

        await serveHandlers {
            await withGracefulShutdownHandler {
                await withTaskCancellationHandler {
                    try? await channel.closeFuture.get()
                } onCancel: {
                    channel.close(promise: nil)
                }
            } onGracefulShutdown: {
                channel.close(promise: nil)
            }
        }
        logger.info("websocket server stopped")
    }

    /// Runs `onOpen` handlers until `untilStopped` returns, then closes every
    /// connection with 1001 and waits for the handlers.
    private func serveHandlers(until untilStopped: @escaping @Sendable () async -> Void) async {
        await withDiscardingTaskGroup { group in
            group.addTask {
                await untilStopped()
                await self.closeAllConnections()
                self.openedContinuation.finish()
            }
            for await (socket, route) in opened {
                // On the connection's own event loop: see EventLoopTaskExecutor.
                group.addTask(executorPreference: EventLoopTaskExecutor.of(socket.eventLoop)) { await route.onOpen(socket) }
            }
        }
    }

    /// Stops accepting and closes every connection with 1001; ``run()`` returns after.
    public func shutdown() {
        let listening = state.withLock { $0.listening }
        listening?.close(promise: nil)
    }

    private func closeAllConnections() async {
        state.withLock { $0.shuttingDown = true }
        let sockets = await connections.all()
        for socket in sockets { await socket.close(code: .goingAway, reason: "server shutting down") }
        await withTaskGroup(of: Void.self) { group in
            for socket in sockets { group.addTask { _ = await socket.closed() } }
        }
    }

    private func bootstrap() -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: configuration.backlog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 8)
            // A channel keeps its last receive buffer for the next read: starting at 512 bytes
            // (NIO's default is 2 KiB) an idle connection keeps ~1.5 KiB less; a busy one grows it.
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65_536))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try self.initialize(channel) }
            }
    }

    private func initialize(_ channel: any Channel) throws {
        // A budget for connections still in the handshake: past it, close at once.
        guard pendingHandshakes.add(1, ordering: .relaxed).newValue <= configuration.maxPendingHandshakes else {
            pendingHandshakes.subtract(1, ordering: .relaxed)
            counters.hit(.pendingHandshakes)
            counters.logLimiter.log(logger, .warning, "too many connections in the handshake; closing new ones",
                                    key: "pending_handshakes", metadata: ["limit": "\(configuration.maxPendingHandshakes)"])
            throw HandshakeRejection.unavailable("too many connections in the handshake")  // NIO closes the channel
        }
        let handshake = NIOLoopBoundBox(HandshakeInfo(), eventLoop: channel.eventLoop)
        handshake.value.pending = true
        channel.closeFuture.whenComplete { _ in self.handshakeEnded(handshake) }
        let upgrader = WebSocketUpgrader(server: self, handshake: handshake)
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
            withPipeliningAssistance: false,
            withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }),
            withErrorHandling: true)
        try channel.pipeline.syncOperations.addHandler(
            HTTPHeadLimitHandler(maxBytes: configuration.maxRequestHeadBytes, counters: counters), position: .first)
        try channel.pipeline.syncOperations.addHandler(HTTPFallbackHandler(
            handshake: handshake,
            maxBodyBytes: configuration.maxRequestBodyBytes,
            counters: counters,
            isWebSocketPath: { path in self.state.withLock { $0.routes[String(path)] != nil } },
            responder: { self.state.withLock { $0.responder } }))
        handshake.value.timer = channel.eventLoop.scheduleTask(in: configuration.handshakeTimeout.timeAmount) {
            channel.close(promise: nil)
        }
    }

    /// The connection left the handshake (upgraded or closed): once per connection, on its loop.
    private func handshakeEnded(_ handshake: NIOLoopBoundBox<HandshakeInfo>) {
        guard handshake.value.pending else { return }
        handshake.value.pending = false
        pendingHandshakes.subtract(1, ordering: .relaxed)
    }

    /// Route lookup, origin check and the route's own decision.
    package func decide(channel: any Channel, head: HTTPRequestHead, handshake: NIOLoopBoundBox<HandshakeInfo>)
        -> EventLoopFuture<HTTPHeaders>
    {
        let eventLoop = channel.eventLoop
        let path = String(HandshakeValidator.path(of: head.uri))
        let (route, shuttingDown) = state.withLock { ($0.routes[path], $0.shuttingDown) }
        func reject(_ rejection: HandshakeRejection) -> EventLoopFuture<HTTPHeaders> {
            handshake.value.rejection = rejection
            return eventLoop.makeFailedFuture(rejection)
        }
        guard let route else { return reject(.notFound) }
        guard !shuttingDown else { return reject(.unavailable("server shutting down")) }
        guard connections.count < configuration.maxConnections else {
            counters.hit(.connections)
            return reject(.unavailable("server at its connection limit"))
        }
        if let allowed = configuration.allowedOrigins {
            let origin = head.headers["origin"].first
            guard let origin, allowed.contains(origin) else { return reject(.forbidden("origin not allowed")) }
        }
        // The connection's number is drawn now, so `shouldUpgrade` can record it before the upgrade.
        let connectionID = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        handshake.value.connectionID = connectionID
        let request = WebSocketRequest(path: path, uri: head.uri, headers: head.headers,
                                       remoteAddress: channel.remoteAddress?.description, connectionID: connectionID)
        return eventLoop.makeFutureWithTask { try await route.shouldUpgrade(request) }
            .flatMapErrorThrowing { error in
                throw HandshakeRejection.unauthorized("authentication failed")
            }
            .flatMapThrowing { decision in
                switch decision.outcome {
                case .accept(let attributes, let headers):
                    handshake.value.attributes = attributes
                    if let onAbandon = route.onAbandon {
                        // Accepted but never opened (the client left, the upgrade failed): give back.
                        channel.closeFuture.whenComplete { _ in
                            if !handshake.value.installed { onAbandon(request, attributes) }
                        }
                    }
                    return headers
                case .reject(let status, let reason):
                    let rejection: HandshakeRejection = switch status {
                    case .unauthorized: .unauthorized(reason)
                    case .tooManyRequests: .tooManyRequests(reason)
                    case .badRequest: .badRequest(reason)
                    default: .forbidden(reason)
                    }
                    handshake.value.rejection = rejection
                    throw rejection
                }
            }
            .flatMapErrorThrowing { error in
                if handshake.value.rejection == nil { handshake.value.rejection = error as? HandshakeRejection }
                throw error
            }
    }

    /// Installs the frame decoder's consumer (the WebSocket handler) on an
    /// upgraded channel and opens the connection: a ``WebSocket`` actor,
    /// registered, handed to the route's `onOpen`. Call on the channel's loop.
    package func installWebSocket(channel: any Channel, head: HTTPRequestHead, handshake: NIOLoopBoundBox<HandshakeInfo>) throws {
        handshake.value.timer?.cancel()
        handshakeEnded(handshake)
        let path = String(HandshakeValidator.path(of: head.uri))
        guard let route = state.withLock({ $0.routes[path] }) else { throw HandshakeRejection.notFound }
        handshake.value.installed = true
        let id = handshake.value.connectionID ?? state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        let request = WebSocketRequest(path: path, uri: head.uri, headers: head.headers,
                                       remoteAddress: channel.remoteAddress?.description, connectionID: id)
        let attributes = handshake.value.attributes
        let framing = route.framing.flatMap { attributes["protocol"] == $0.subprotocol ? $0 : nil }
        let compression = handshake.value.compression.map {
            ConnectionCompression(parameters: $0, configuration: configuration.compression,
                                  codecs: self.connections.loop(of: channel.eventLoop).codecs)
        }
        let socket = WebSocket(id: id, request: request, attributes: attributes, channel: channel,
                               configuration: configuration, counters: counters, framing: framing, compression: compression)
        connections.insert(socket)
        let connections = self.connections
        try channel.pipeline.syncOperations.addHandler(WebSocketHandler(socket: socket, configuration: configuration) { socket, code in
            connections.remove(socket)
            route.onClose?(socket, code)
        })
        openedContinuation.yield((socket, route))
    }
}
