import Foundation
@testable import ClusterWS
import EmbeddedRedis
import Logging
import NIOCore
import Testing

/// Nodes of one test cluster, each with its own WebSocket server on a free
/// port, sharing one real redis-server.
final class TestCluster: Sendable {
    let redis: RedisServerProcess
    /// The Redis Cluster, when the nodes run on one.
    let redisCluster: RedisClusterProcess?
    let nodes: [String: ClusterNode]
    private let harnesses: [String: ServiceGroupHarness]

    /// Starts nodes `ids` against `redis`.
    static func start(_ ids: [String], redis: RedisServerProcess, namespace: String = "test",
                      driver: ClusterConfiguration.Driver = .pubSub,
                      redisURL: ((String) -> String)? = nil, redisCluster: RedisClusterProcess? = nil,
                      configure: (@Sendable (inout ClusterConfiguration) -> Void)? = nil) async throws -> TestCluster {
        var nodes: [String: ClusterNode] = [:]
        var harnesses: [String: ServiceGroupHarness] = [:]
        for id in ids {
            let node = try makeNode(id, redis: redis, namespace: namespace, driver: driver, redisURL: redisURL?(id),
                                    configure: configure)
            let harness = ServiceGroupHarness(node)
            try await harness.start()
            _ = try await node.waitUntilListening()
            nodes[id] = node
            harnesses[id] = harness
        }
        return TestCluster(redis: redis, redisCluster: redisCluster, nodes: nodes, harnesses: harnesses)
    }

    private init(redis: RedisServerProcess, redisCluster: RedisClusterProcess?, nodes: [String: ClusterNode],
                 harnesses: [String: ServiceGroupHarness]) {
        self.redis = redis
        self.redisCluster = redisCluster
        self.nodes = nodes
        self.harnesses = harnesses
    }

    static func makeNode(_ id: String, redis: RedisServerProcess, namespace: String = "test",
                         driver: ClusterConfiguration.Driver = .pubSub, redisURL: String? = nil,
                         configure: (@Sendable (inout ClusterConfiguration) -> Void)? = nil) throws -> ClusterNode {
        var configuration = ClusterConfiguration(
            redisURL: .init(redisURL ?? redis.url), serverID: id, namespace: namespace,
            webSocket: WebSocketServerConfiguration(keepalive: .disabled, closeTimeout: .seconds(1),
                                                   maxOutboundBufferBytes: 512 * 1024))
        configuration.driver = driver
        configuration.queue.block = .milliseconds(200)
        configuration.heartbeatInterval = .milliseconds(100)
        configuration.livenessWindow = .milliseconds(600)
        configure?(&configuration)
        var logger = Logger(label: "test.node")
        // TEST_LOG_LEVEL=debug (or info, …) shows what the nodes log while a test runs.
        logger.logLevel = ProcessInfo.processInfo.environment["TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .error
        let node = try ClusterNode(configuration: configuration, logger: logger)
        node.webSocket("/ws", authenticate: { request in request.queryParameter("uid") }) { socket in
            try? await socket.socket.send(.text("ready \(socket.fd)"))
        }
        return node
    }

    subscript(_ id: String) -> ClusterNode { nodes[id]! }

    /// Stops one node gracefully.
    func stop(_ id: String) async throws {
        try await harnesses[id]!.shutdownGracefully()
    }

    func stopAll() async {
        for harness in harnesses.values { try? await harness.shutdownGracefully() }
    }
}

/// A raw WebSocket client of a cluster node, with the fd the node gave it.
struct ClusterClient {
    let raw: RawClient
    let fd: DistributedFD

    /// Connects to `node` as `uid` (or anonymously) and waits until it is bound.
    static func connect(_ node: ClusterNode, uid: String?, receiveBuffer: Int? = nil) async throws -> ClusterClient {
        let port = try await node.waitUntilListening()
        let raw = try await RawClient.connect(port: port, receiveBuffer: receiveBuffer)
        _ = try await raw.upgrade(path: uid.map { "/ws?uid=\($0)" } ?? "/ws")
        let ready = try await raw.readFrame()
        guard ready.text.hasPrefix("ready "), let fd = DistributedFD(String(ready.text.dropFirst(6))) else {
            throw UpgradeFailed(status: 0, body: ready.text)
        }
        return ClusterClient(raw: raw, fd: fd)
    }

    /// The next data frame's text (and opcode).
    func next() async throws -> WireFrame {
        try await within(.seconds(5), "a message") { try await raw.readFrame() }
    }

    func close() { raw.close() }
}

/// Where a test cluster's nodes keep their relations and exchange messages.
enum RedisBackend: String, Sendable, CaseIterable, CustomTestStringConvertible {
    /// One redis-server.
    case single
    /// A Redis Cluster of 3 masters and 3 replicas (sharded pub/sub).
    case cluster

    var testDescription: String { rawValue }
}

/// The routing suite's combinations: both drivers, on one Redis and on a Redis Cluster.
struct RoutingCase: Sendable, CustomTestStringConvertible {
    var driver: ClusterConfiguration.Driver
    var backend: RedisBackend
    static let all = [RoutingCase(driver: .pubSub, backend: .single), RoutingCase(driver: .queue, backend: .single),
                      RoutingCase(driver: .pubSub, backend: .cluster), RoutingCase(driver: .queue, backend: .cluster)]
    var testDescription: String { "\(driver) on \(backend.rawValue)" }
}

/// Runs `body` with a fresh redis-server and a cluster of `ids`, then stops everything.
func withCluster<T: Sendable>(
    _ ids: [String], namespace: String = "test", driver: ClusterConfiguration.Driver = .pubSub,
    _ body: @escaping @Sendable (TestCluster) async throws -> T
) async throws -> T {
    try await withCluster(ids, namespace: namespace, RoutingCase(driver: driver, backend: .single), body)
}

/// Runs `body` with nodes `ids` on a fresh Redis of `setup.backend`, then stops everything.
func withCluster<T: Sendable>(
    _ ids: [String], namespace: String = "test", _ setup: RoutingCase,
    configure: (@Sendable (inout ClusterConfiguration) -> Void)? = nil,
    _ body: @escaping @Sendable (TestCluster) async throws -> T
) async throws -> T {
    @Sendable func run(_ redis: RedisServerProcess, url: String?, redisCluster: RedisClusterProcess? = nil) async throws -> T {
        let cluster = try await TestCluster.start(ids, redis: redis, namespace: namespace, driver: setup.driver,
                                                  redisURL: url.map { url in { _ in url } }, redisCluster: redisCluster,
                                                  configure: configure)
        do {
            let result = try await within(.seconds(60), "the cluster test") { try await body(cluster) }
            await cluster.stopAll()
            return result
        } catch {
            await cluster.stopAll()
            throw error
        }
    }
    switch setup.backend {
    case .single:
        return try await withRedisServer { redis in try await run(redis, url: nil) }
    case .cluster:
        return try await AsyncLimiter.redisClusters.run {
            let redisCluster = try await RedisClusterProcess.start()
            defer { redisCluster.terminate() }
            return try await run(redisCluster.nodes[0], url: redisCluster.url, redisCluster: redisCluster)
        }
    }
}

/// Polls `condition` (each check a Redis round trip or a cheap read) until it holds.
func eventually(_ what: String, within limit: Duration = .seconds(10),
                _ condition: @escaping @Sendable () async throws -> Bool) async throws {
    try await within(limit, what) {
        while try await !condition() { try await Task.sleep(for: .milliseconds(20)) }
    }
}
