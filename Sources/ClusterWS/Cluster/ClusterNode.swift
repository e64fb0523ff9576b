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
    /// One Redis server or a Redis Cluster, with their concrete clients.
    package let backend: RedisBackend
    /// Commands, whichever the topology.
    package var redis: any RedisCommands { backend.commands }
    /// Pub/sub: classic channels on one server, sharded channels on a cluster.
    package var subscriber: any RedisPubSub { backend.pubSub }
    /// The single-server subscriber (`nil` on a Redis Cluster), for tests.
    package var singleSubscriber: RedisSubscriber? {
        if case .single(_, let subscriber) = backend { return subscriber }
        return nil
    }
    package let registry: LocalRegistry
    let server: WebSocketServer
    let logger: Logger
    let commands: RelationCommands
    let checks: ArgumentChecks
    /// The one path of every send (see ``Sender``).
    let pipeline: DeliveryPipeline
    /// Carries what leaves this node, and brings in the queue driver's entries.
    let driver: any DeliveryDriver
    /// What other nodes sent, to the local connections.
    let router: Router
    /// History recovery for client-protocol connections.
    let recovery: HistoryRecovery
    /// Room presence (members, events), when `presence.rooms` is on.
    let presence: RoomPresence?
    let presenceHub: PresenceHub?
    /// Heartbeat, janitor, relation refresh.
    let liveness: Liveness
    /// Cleanup after closed connections.
    let reaper: ConnectionReaper
    /// The per-user limit at the handshake, the binding after it.
    let registration: Registration

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
        var logger = logger
        logger[metadataKey: "node"] = "\(configuration.serverID)"
        let id = configuration.serverID
        let epoch = UInt64.random(in: 1 ... .max)
        let factory = configuration.metricsFactory ?? MetricsSystem.factory
        let metrics = ClusterMetrics(node: id, factory: factory)
        let counters = NodeCounters(dimensions: [("node", id)], factory: factory, logger: logger)
        redisConfiguration.maxReplyBytes = configuration.limits.maxRedisReplyBytes
        redisConfiguration.postPacingBytes = configuration.limits.postPacingBytes
        redisConfiguration.maxPostBytesInFlight = configuration.limits.maxPostBytesInFlight
        redisConfiguration.failoverWait = configuration.failover.wait
        redisConfiguration.failoverWaitBytes = configuration.failover.maxWaitingBytesPerShard
        redisConfiguration.hooks.replyTooLarge = { counters.hit(.redisReply) }
        let keys = ClusterKeys(configuration)
        let context = DriverContext(id: id, epoch: epoch, keys: keys, queue: configuration.queue,
                                    history: configuration.history, counters: counters, logger: logger)
        let resubscribed = LateCallback()
        let (backend, driver) = RedisBackend.make(configuration: configuration, redis: redisConfiguration,
                                                  context: context, metrics: metrics, logger: logger, resubscribed: resubscribed)
        let registry = LocalRegistry(subscriber: backend.pubSub, keys: keys)
        let server = WebSocketServer(configuration: configuration.webSocket, eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
                                     logger: logger, counters: counters)
        let statistics = ClusterStatistics(counters: counters)
        let commands = RelationCommands(keys: keys, ttl: configuration.ttl)
        let checks = ArgumentChecks(limits: configuration.limits, counters: counters)
        var presence: RoomPresence?
        var presenceHub: PresenceHub?
        if configuration.presence.rooms {
            presence = RoomPresence(redis: backend.commands, keys: keys,
                                    publishVerb: redisConfiguration.isCluster ? "SPUBLISH" : "PUBLISH")
            var notify: (@Sendable (PresenceEvent) -> Void)?
            if configuration.presence.notifyMembers {
                notify = { event in server.send(event.frame, to: registry.sockets(room: event.room)) }
            }
            presenceHub = PresenceHub(subscriber: backend.pubSub, keys: keys, notify: notify)
        }
        self.presence = presence
        self.presenceHub = presenceHub
        let liveness = Liveness(id: id, epoch: epoch, redis: backend.commands, keys: keys, commands: commands,
                                registry: registry, configuration: configuration, logger: logger, presence: presence)
        let reaper = ConnectionReaper(node: id, epoch: epoch, registry: registry, redis: backend.commands,
                                      commands: commands, logger: logger, presence: presence, presenceHub: presenceHub)
        self.configuration = configuration
        self.logger = logger
        self.epoch = epoch
        self.keys = keys
        self.metrics = metrics
        self.counters = counters
        self.statistics = statistics
        self.backend = backend
        self.driver = driver
        self.registry = registry
        self.server = server
        self.commands = commands
        self.checks = checks
        self.liveness = liveness
        self.reaper = reaper
        self.pipeline = DeliveryPipeline(id: id, epoch: epoch, registry: registry, server: server, driver: driver,
                                         checks: checks, metrics: metrics, history: configuration.history)
        let recovery = HistoryRecovery(reader: HistoryReader(redis: backend.commands, keys: keys, history: configuration.history),
                                       server: server)
        self.recovery = recovery
        // Client-protocol connections catch up on what the subscriber missed while it reconnected.
        if configuration.history.isEnabled {
            resubscribed.set { Task { await recovery.catchUp(registry.sessions()) } }
        }
        var router = Router(id: id, epoch: epoch, registry: registry, server: server, counters: counters,
                            statistics: statistics, metrics: metrics)
        if case .cluster = backend, configuration.failover.standbySubscriptions {
            router.deduplicationWindow = configuration.failover.deduplicationWindow
        }
        router.presenceHub = presenceHub
        self.router = router
        self.registration = Registration(id: id, epoch: epoch, registry: registry, redis: backend.commands, keys: keys,
                                         commands: commands, checks: checks, liveness: liveness, reaper: reaper,
                                         maxConnectionsPerUser: configuration.maxConnectionsPerUser, logger: logger,
                                         recovery: recovery)
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

        let metrics = self.metrics
        let registration = self.registration
        let reaper = self.reaper
        let recovery = self.recovery
        server.addRoute(path, framing: HistoryRecovery.framing) { request in
            guard let uid = try await authenticate(request) else { return recovery.negotiate(.accept(), for: request) }
            // Where a fresh client-protocol connection starts: read before admission makes it visible.
            let baseline = await recovery.baseline(for: request, uid: uid)
            return recovery.negotiate(try await registration.admit(uid: uid, connection: request.connectionID), for: request,
                                      baseline: baseline)
        } onAbandon: { request, attributes in
            if let uid = attributes["uid"] { registration.release(uid: uid, connection: request.connectionID) }
        } onClose: { socket, _ in
            metrics.connections.decrement()
            reaper.noteClosed(socket.id)
        } onOpen: { socket in
            metrics.connections.increment()
            // Registration runs in its own function, so its locals are gone while the
            // application's handler runs for the connection's whole life (smaller task).
            guard let client = await registration.register(socket) else { return }
            await onOpen(client)
        }
    }

    /// Redis reachability and the node's load, for a `/health` endpoint.
    public func health() async -> ClusterHealth {
        let redisUp = (try? await redis.send(RedisCommand("PING"), timeout: .seconds(1))) != nil
        let subscribed = await subscriber.isConnected()
        var shardsDown = 0
        if case .cluster(let cluster, _) = backend { shardsDown = cluster.mastersDown }
        return ClusterHealth(redis: redisUp, subscriber: subscribed, connections: server.connectionCount,
                             shardsDown: shardsDown)
    }

    /// An `authenticate` hook that takes the uid from a query parameter,
    /// **unauthenticated**: anyone can claim any uid. For demos and tests
    /// only; it logs a warning when created.
    public func insecureUIDFromQuery(_ name: String = "uid") -> @Sendable (WebSocketRequest) async throws -> String? {
        logger.warning("INSECURE: uids are taken from the '\(name)' query parameter without authentication; demo use only")
        return { request in request.decodedQueryParameter(name) }
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
    public func distributedFD(local fd: UInt64) -> DistributedFD {
        DistributedFD(node: id, epoch: epoch, fd: fd)
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
                try await join()
            } catch {
                logger.error("could not join the cluster", metadata: ["error": "\(error)"])
                server.failListeningWaiters(error)
                await subscriber.shutdown()
                await redis.shutdown()
                throw error
            }

            /// What finished, in the loop below.
            enum Finished: Sendable { case server((any Error)?), reaper, other }
            let serverError = await withTaskGroup(of: Finished.self) { work -> (any Error)? in
                work.addTask { await self.router.run(self.subscriber.messages); return .other }
                work.addTask { await self.reaper.run(); return .reaper }
                work.addTask { await self.liveness.run(); return .other }
                work.addTask { await self.driver.run { self.router.route($0) }; return .other }
                work.addTask {
                    var failure: (any Error)?
                    do { try await self.server.run() } catch {
                        self.logger.error("websocket server failed", metadata: ["error": "\(error)"])
                        failure = error
                    }
                    // The server has closed every socket: the reaper takes the last closes and stops.
                    self.reaper.finish()
                    return .server(failure)
                }
                // The server returns first (shutdown, cancellation or a failed bind), then the reaper
                // drains; the other loops run until cancelled.
                var failure: (any Error)?
                var pending = 2
                while pending > 0, let finished = await work.next() {
                    switch finished {
                    case .server(let error): failure = error; pending -= 1
                    case .reaper: pending -= 1
                    case .other: break
                    }
                }
                work.cancelAll()
                return failure
            }
            if !reaper.isAbandoned { await liveness.leave() }
            await subscriber.shutdown()
            await redis.shutdown()
            try await services.waitForAll()
            // A server that could not listen (port taken…) fails the node, after the cleanup above.
            if let serverError { throw serverError }
        }
    }

    /// Connects, subscribes to this node's and the broadcast channel, removes
    /// what a crashed earlier run left, and announces the node.
    private func join() async throws {
        let timeout = configuration.webSocket.handshakeTimeout
        try await redis.waitUntilReady(timeout: timeout)
        try await subscriber.waitUntilReady(timeout: timeout)
        try await subscriber.subscribe([keys.nodeChannel(id), keys.allChannel])
        try await subscriber.waitUntilReady(timeout: timeout)
        await liveness.removeStaleRelationsOfThisNode()
        try await liveness.heartbeat()
    }

    /// Makes the next stop behave like a crash: heartbeats stop and nothing is
    /// removed from Redis, so the other nodes' janitors must clean up. For tests.
    package func abandon() {
        reaper.abandon()
    }
}
