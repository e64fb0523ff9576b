import CoreMetrics
public import Logging
package import NIOCore
import NIOPosix
public import ServiceLifecycle
import Synchronization

/// One node of a ClusterWS cluster: a WebSocket server whose connections can
/// be reached from every other node through Redis.
///
/// ```swift
/// let node = try ClusterNode(configuration: .init(redisURL: "redis://127.0.0.1:6379", serverID: "server1"))
/// node.webSocket("/ws", authenticate: { request in try verify(request) }) { socket in
///     for await message in socket.messages {
///         _ = try? await node.sender.send(uid: "42", .text("hi"))
///     }
/// }
/// try await node.run()        // a swift-service-lifecycle Service
/// ```
///
/// Connections are addressed cluster-wide by ``DistributedFD``. A connection
/// whose `authenticate` returned a uid is bound to it (``Relations``); its
/// relations are removed on every kind of close. On a graceful shutdown the
/// node stops accepting, closes every socket with 1001, removes its relations
/// and heartbeat, unsubscribes and returns.
public final class ClusterNode: Service, Sendable {
    /// The node's configuration.
    public let configuration: ClusterConfiguration
    /// This node's id.
    public var id: String { configuration.serverID }
    /// Drawn at every start: tells this run's connections from a previous run's.
    public let epoch: UInt64
    /// Sends to users, rooms, connections or everyone, anywhere in the cluster.
    public var sender: Sender { Sender(node: self) }
    /// Who is connected where.
    public var relations: Relations { Relations(node: self) }
    /// Counters of what the router did.
    public let statistics: ClusterStatistics
    /// Clients this node closed with 1008 because they read too slowly.
    public var slowConsumerCloses: Int { server.slowConsumerCloses }
    /// Open connections on this node.
    public var connectionCount: Int { server.connectionCount }

    let keys: ClusterKeys
    let metrics: ClusterMetrics
    /// Drops and limit hits of this node (transport and cluster), with its `node` dimension.
    package let counters: NodeCounters
    /// Commands: one Redis server, or a Redis Cluster (`redis+cluster://`).
    package let redis: any RedisCommands
    /// Pub/sub: classic channels on one server, sharded channels on a cluster.
    package let subscriber: any RedisPubSub
    /// The single-server subscriber (`nil` on a Redis Cluster), for tests.
    package var singleSubscriber: RedisSubscriber? { subscriber as? RedisSubscriber }
    /// The Redis settings the node was given.
    let redisConfiguration: RedisConfiguration
    package let registry: LocalRegistry
    let server: WebSocketServer
    let logger: Logger
    /// Set after the first heartbeat: a later one that finds no heartbeat key
    /// means this node was considered dead meanwhile.
    let announced = Atomic<Bool>(false)
    /// The last queue post on a Redis Cluster (posts there run in a chain, in call order).
    let postChain = Mutex<Task<Void, Never>?>(nil)
    /// Set by ``abandon()``: stop without removing anything from Redis, as a crash would.
    let abandoned = Atomic<Bool>(false)
    /// Connections closed and not yet cleaned up; the stream wakes the cleanup
    /// task when this goes from empty to not empty, so a mass disconnect is
    /// cleaned up in batches.
    private let closedFDs = Mutex<[UInt64]>([])
    private let closed: AsyncStream<Void>
    private let closedContinuation: AsyncStream<Void>.Continuation

    /// Creates a node; nothing connects or listens until ``run()``.
    /// - Throws: ``ClusterError/invalidName(_:)`` for a bad server id or
    ///   namespace, ``ClusterError/invalidConfiguration(_:)`` for a bad Redis
    ///   URL or timing.
    public init(configuration: ClusterConfiguration, logger: Logger = Logger(label: "clusterws")) throws {
        try Names.check(configuration.serverID, .serverID, maxBytes: Names.maxIdentifierBytes)
        try Names.check(configuration.namespace, .namespace, maxBytes: Names.maxIdentifierBytes)
        try configuration.validate()
        var redisConfiguration: RedisConfiguration
        do {
            redisConfiguration = try RedisConfiguration(url: configuration.redis.url)
        } catch {
            throw ClusterError.invalidConfiguration("\(error)")
        }
        redisConfiguration.maxReplyBytes = configuration.limits.maxRedisReplyBytes
        var logger = logger
        logger[metadataKey: "node"] = "\(configuration.serverID)"
        self.configuration = configuration
        self.logger = logger
        self.epoch = UInt64.random(in: 1 ... .max)
        self.keys = ClusterKeys(configuration)
        let factory = configuration.metricsFactory ?? MetricsSystem.factory
        let metrics = ClusterMetrics(node: configuration.serverID, factory: factory)
        self.metrics = metrics
        let counters = NodeCounters(dimensions: [("node", configuration.serverID)], factory: factory, logger: logger)
        self.counters = counters
        self.statistics = ClusterStatistics(counters: counters)
        redisConfiguration.hooks.replyTooLarge = { counters.hit(.redisReply) }
        let onOverflow: @Sendable (Int) -> Void = { counters.drop(.subscriberOverflow, count: $0) }
        self.redisConfiguration = redisConfiguration
        let loops = MultiThreadedEventLoopGroup.singleton
        if redisConfiguration.isCluster {
            let cluster = RedisClusterClient(configuration: redisConfiguration, logger: logger)
            self.redis = cluster
            let allChannel = keys.allChannel
            self.subscriber = ClusterPubSub(RedisShardedSubscriber(cluster: cluster, buffer: configuration.limits.subscriberBuffer,
                                                                   onOverflow: onOverflow, logger: logger),
                                            isClassic: { $0 == allChannel })
        } else {
            // The routing scripts are loaded on every (re)connect, so calls by SHA find them
            // even right after a Redis restart (and posts keep their order).
            self.redis = RedisConnection(configuration: redisConfiguration, eventLoop: loops.next(), logger: logger,
                                         commandDuration: metrics.redisCommand, reconnects: metrics.redisReconnects,
                                         setupCommands: Self.scripts(for: configuration.driver).map {
                                             RedisCommand("SCRIPT", "LOAD", .string($0.source))
                                         })
            self.subscriber = RedisSubscriber(configuration: redisConfiguration, eventLoop: loops.next(),
                                              buffer: configuration.limits.subscriberBuffer, onOverflow: onOverflow,
                                              logger: logger, reconnects: metrics.redisReconnects)
        }
        self.registry = LocalRegistry(subscriber: subscriber, keys: keys)
        self.server = WebSocketServer(configuration: configuration.webSocket, eventLoopGroup: loops, logger: logger,
                                      counters: counters)
        (closed, closedContinuation) = AsyncStream.makeStream()
    }

    /// The Lua scripts a node runs on one Redis server, for `driver`.
    static func scripts(for driver: ClusterConfiguration.Driver) -> [LuaScript] {
        driver == .queue ? [QueueScript.script, MultiUserScript.script] : [MultiUserScript.script]
    }

    /// Registers a WebSocket endpoint.
    /// - Parameters:
    ///   - authenticate: decides, before the upgrade, who the client is: return
    ///     the uid to bind, `nil` for an anonymous connection; throw to refuse
    ///     with HTTP 401 (the connection never reaches the registry).
    ///   - onOpen: runs once the connection is open and bound, in a task whose
    ///     executor preference is the connection's event loop (its messages,
    ///     its `WebSocket` actor and its replies need no thread hop). Never
    ///     block in it: a blocked handler stalls the loop's other connections.
    public func webSocket(
        _ path: String,
        authenticate: @escaping @Sendable (WebSocketRequest) async throws -> String? = { _ in nil },
        onOpen: @escaping @Sendable (ClusterSocket) async -> Void = { _ in }
    ) {

        let limit = configuration.maxConnectionsPerUser
        let metrics = self.metrics
        server.addRoute(path) { request in
            guard let uid = try await authenticate(request) else { return .accept() }
            do {
                try self.check(uid: uid)
            } catch {
                return .badRequest("\(error)")
            }
            if try await self.relations.findUserFDs(uid: uid).count >= limit {
                self.counters.hit(.connectionsPerUser)
                return .tooManyRequests("user \(uid) already has \(limit) connections")
            }
            return .accept(attributes: ["uid": uid])
        } onClose: { socket, _ in
            metrics.connections.decrement()
            self.noteClosed(UInt64(socket.id))
        } onOpen: { socket in
            // Registration runs in its own function, so its locals are gone while the
            // application's handler runs for the connection's whole life (smaller task).
            guard let client = await self.register(socket) else { return }
            await onOpen(client)
        }
    }

    /// Adds a new connection to the registry and binds its uid; `nil` if it
    /// closed meanwhile (then nothing of it is left behind).
    private func register(_ socket: WebSocket) async -> ClusterSocket? {
        metrics.connections.increment()
        let fd = DistributedFD(node: id, epoch: epoch, fd: UInt64(socket.id))
        await registry.add(fd.fd, socket)
        if let uid = socket.attributes["uid"] {
            do {
                try await bind(fd, uid: uid)
            } catch {
                if await socket.closeCode == nil {
                    logger.warning("bind failed; closing", metadata: ["fd": "\(fd)", "uid": "\(uid)", "error": "\(error)"])
                    await socket.close(code: .internalError, reason: "could not register")
                }
            }
        }
        // The client may have gone while it was being registered; the cleanup task may then
        // have run before the registration and found nothing. Forget it here (idempotent,
        // and after this task's own writes to Redis, so nothing is left behind).
        if await socket.closeCode != nil {
            await forget([fd.fd])
            return nil
        }
        logger.debug("connection open", metadata: ["fd": "\(fd)", "uid": "\(socket.attributes["uid"] ?? "-")"])
        return ClusterSocket(fd: fd, socket: socket, uid: socket.attributes["uid"])
    }

    /// Redis reachability and the node's load, for a `/health` endpoint.
    public func health() async -> ClusterHealth {
        let redisUp = (try? await redis.send(RedisCommand("PING"), timeout: .seconds(1))) != nil
        let subscribed = await subscriber.isConnected()
        return ClusterHealth(redis: redisUp, subscriber: subscribed, connections: server.connectionCount)
    }

    /// An `authenticate` hook that takes the uid from a query parameter,
    /// **unauthenticated**: anyone can claim any uid. For demos and tests
    /// only; it logs a warning when created.
    public func insecureUIDFromQuery(_ name: String = "uid") -> @Sendable (WebSocketRequest) async throws -> String? {
        logger.warning("INSECURE: uids are taken from the '\(name)' query parameter without authentication; demo use only")
        return { request in request.queryParameter(name)?.removingPercentEncodingIfValid }
    }

    /// Answers plain HTTP requests on the node's port (a page, `/health`…).
    public func setHTTPResponder(_ responder: @escaping @Sendable (PlainHTTPRequest) async -> PlainHTTPResponse) {
        server.setHTTPResponder(responder)
    }

    /// Waits until the node listens and returns its WebSocket port.
    public func waitUntilListening() async throws -> Int {
        try await server.waitUntilListening()
    }

    /// This node's address for one of its local connection numbers.
    public func distributedFD(local fd: Int) -> DistributedFD {
        DistributedFD(node: id, epoch: epoch, fd: UInt64(fd))
    }

    /// Runs the node: Redis connections, the router, heartbeats, the janitor,
    /// relation refreshes and the WebSocket server, until cancelled or shut
    /// down gracefully.
    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { services in
            // Redis stays up through the graceful shutdown: relations are removed after the sockets close.
            services.addTask { await self.redis.runUntilShutdown() }
            services.addTask { await self.subscriber.runUntilShutdown() }
            do {
                try await redis.waitUntilReady(timeout: configuration.webSocket.handshakeTimeout)
                try await subscriber.waitUntilReady(timeout: configuration.webSocket.handshakeTimeout)
                try await subscriber.subscribe([keys.nodeChannel(id), keys.allChannel])
                try await subscriber.waitUntilReady(timeout: configuration.webSocket.handshakeTimeout)
                await removeStaleRelationsOfThisNode()
                try await heartbeat()
            } catch {
                logger.error("could not join the cluster", metadata: ["error": "\(error)"])
                server.failListeningWaiters(error)
                await subscriber.shutdown()
                await redis.shutdown()
                throw error
            }

            let serverError = await withTaskGroup(of: (any Error)?.self) { work -> (any Error)? in
                work.addTask { await self.routeMessages(); return nil }
                work.addTask { await self.cleanUpClosedConnections(); return nil }
                work.addTask { await self.keepAlive(); return nil }
                if self.configuration.driver == .queue {
                    work.addTask { await self.consumeQueue(); return nil }
                }
                work.addTask {
                    var failure: (any Error)?
                    do { try await self.server.run() } catch {
                        self.logger.error("websocket server failed", metadata: ["error": "\(error)"])
                        failure = error
                    }
                    // The server has closed every socket: stop the rest.
                    self.closedContinuation.finish()
                    return failure
                }
                // The server returns first (shutdown, cancellation or a failed bind), then the
                // closed-connection cleanup drains.
                var failure: (any Error)?
                for _ in 0..<2 { if let error = await work.next() ?? nil { failure = error } }
                work.cancelAll()
                return failure
            }
            if !abandoned.load(ordering: .relaxed) { await leaveCluster() }
            await subscriber.shutdown()
            await redis.shutdown()
            try await services.waitForAll()
            // A server that could not listen (port taken…) fails the node, after the cleanup above.
            if let serverError { throw serverError }
        }
    }

    /// Makes the next stop behave like a crash: heartbeats stop and nothing is
    /// removed from Redis, so the other nodes' janitors must clean up. For tests.
    package func abandon() {
        abandoned.store(true, ordering: .relaxed)
    }

    /// Removes the relations of every connection that closes, in one task.
    private func noteClosed(_ fd: UInt64) {
        let wake = closedFDs.withLock { pending -> Bool in
            pending.append(fd)
            return pending.count == 1
        }
        if wake { closedContinuation.yield() }
    }

    private func cleanUpClosedConnections() async {
        for await _ in closed {
            await forget(closedFDs.withLock { pending in defer { pending = [] }; return pending })
        }
        await forget(closedFDs.withLock { pending in defer { pending = [] }; return pending })
    }

    /// Closed connections leave the registry, their rooms and their relations,
    /// in one registry call and pipelined Redis batches.
    private func forget(_ fds: [UInt64]) async {
        guard !fds.isEmpty else { return }
        let (bound, emptiedRooms) = await registry.remove(fds)
        guard !abandoned.load(ordering: .relaxed) else { return }
        var commands = bound.flatMap { fd, uid in removalCommands(distributedFD(local: Int(fd)), uid: uid) }
        commands += roomRemovalCommands(node: id, rooms: emptiedRooms)
        for start in stride(from: 0, to: commands.count, by: 1_000) {
            do {
                try await redis.send(batch: Array(commands[start..<min(start + 1_000, commands.count)])).throwFirstFailure()
            } catch {
                logger.warning("could not remove relations of closed connections; the TTL or a janitor will",
                               metadata: ["error": "\(error)"])
            }
        }
    }
}

/// A connection of this node, as the application's `onOpen` sees it.
public struct ClusterSocket: Sendable {
    /// Its cluster-wide address.
    public let fd: DistributedFD
    /// The WebSocket itself: `messages`, `send`, `close`.
    public let socket: WebSocket
    /// The uid `authenticate` bound it to, if any.
    public let uid: String?

    /// Every message the client sends, until the connection closes.
    public var messages: WebSocketMessages { socket.messages }
}

/// What the router has done since the node started. It reads the node's
/// drop counters (the ones its metrics report).
public final class ClusterStatistics: Sendable {
    private let counters: NodeCounters
    private let routedEnvelopes = Atomic<Int>(0)

    init(counters: NodeCounters) {
        self.counters = counters
    }

    func countRouted() { routedEnvelopes.add(1, ordering: .relaxed) }

    /// Messages on the cluster's channels that were not valid envelopes, dropped.
    public var garbageDropped: Int { counters.dropped(.garbage) }
    /// Messages for connections of an earlier epoch of this node, dropped.
    public var staleDropped: Int { counters.dropped(.stale) }
    /// Envelopes routed from Redis to local connections.
    public var routed: Int { routedEnvelopes.load(ordering: .relaxed) }
    /// Posted messages whose Redis part failed (see ``Sender/post(uid:_:)-(String,WebSocketMessage)``).
    public var postFailed: Int { counters.dropped(.postFailed) }
    /// Messages from Redis dropped because the router's buffer was full.
    public var subscriberOverflows: Int { counters.dropped(.subscriberOverflow) }
}

/// What ``ClusterNode/health()`` reports.
public struct ClusterHealth: Sendable, Hashable {
    /// The command connection answers `PING`.
    public var redis: Bool
    /// The subscriber connection is up.
    public var subscriber: Bool
    /// Open WebSocket connections on this node.
    public var connections: Int
    /// Both Redis connections are up.
    public var isHealthy: Bool { redis && subscriber }
}

extension String {
    /// Percent-decoded, or `nil` if the escapes are malformed.
    var removingPercentEncodingIfValid: String? {
        var bytes: [UInt8] = []
        var iterator = utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "+") { bytes.append(UInt8(ascii: " ")); continue }
            guard byte == UInt8(ascii: "%") else { bytes.append(byte); continue }
            guard let high = iterator.next().flatMap(Self.hex), let low = iterator.next().flatMap(Self.hex) else { return nil }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hex(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
