@testable import ClusterWS
import EmbeddedRedis
import Logging
import MetricsTestKit
import NIOCore
import Testing

@Suite("Operations: metrics and health", .timeLimit(.minutes(2)))
struct OperationsTests {
    @Test func metricsCountTrafficDropsAndRedis() async throws {
        try await withRedisServer { redis in
            let metrics = TestMetrics()
            func node(_ id: String) throws -> ClusterNode {
                var configuration = ClusterConfiguration(redisURL: .init(redis.url), serverID: id, namespace: "test",
                                                         webSocket: .init(keepalive: .disabled, closeTimeout: .seconds(1)))
                configuration.metricsFactory = metrics
                var logger = Logger(label: "test")
                logger.logLevel = .critical
                let node = try ClusterNode(configuration: configuration, logger: logger)
                node.webSocket("/ws", authenticate: node.insecureUIDFromQuery()) { socket in
                    try? await socket.socket.send(.text("ready \(socket.fd)"))
                }
                return node
            }
            let a = try node("a"), b = try node("b")
            let harness = ServiceGroupHarness(a, b)
            try await harness.start()
            let local = try await ClusterClient.connect(a, uid: "l")
            let remote = try await ClusterClient.connect(b, uid: "r")
            #expect(try await a.sender.send(uid: "l", .text("1")) == 1)
            #expect(try await a.sender.send(uid: "r", .text("2")) == 1)
            _ = try await local.next()
            _ = try await remote.next()
            _ = try await a.redis.send(RedisCommand("PUBLISH", "test:all", "garbage"))
            try await eventually("the garbage to be counted") { b.statistics.garbageDropped == 1 }

            #expect(try metrics.expectMeter("clusterws_connections", [("node", "a")]).values.last == 1)
            #expect(try metrics.expectCounter("clusterws_messages_out_total", [("node", "a"), ("target", "user")]).totalValue == 2)
            #expect(try metrics.expectCounter("clusterws_deliveries_total", [("node", "a"), ("path", "local")]).totalValue == 1)
            #expect(try metrics.expectCounter("clusterws_deliveries_total", [("node", "b"), ("path", "routed")]).totalValue == 1)
            #expect(try metrics.expectCounter("clusterws_drops_total", [("node", "b"), ("reason", "garbage")]).totalValue == 1)
            #expect(try metrics.expectTimer("clusterws_redis_command_duration_seconds", [("node", "a")]).values.count > 0)
            try await harness.shutdownGracefully()
        }
    }

    @Test func healthReportsRedisGoingAwayAndComingBack() async throws {
        try await withRedisServer { redis in
            var configuration = ClusterConfiguration(redisURL: .init(redis.url), serverID: "h", namespace: "test",
                                                     webSocket: .init(keepalive: .disabled))
            configuration.heartbeatInterval = .milliseconds(100)
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            let node = try ClusterNode(configuration: configuration, logger: logger)
            let harness = ServiceGroupHarness(node)
            try await harness.start()
            _ = try await node.waitUntilListening()
            #expect(await node.health().isHealthy)
            await redis.stop()
            try await eventually("health to see Redis gone") { await !node.health().redis }
            try await redis.restart()
            try await eventually("health to see Redis back", within: .seconds(10)) { await node.health().isHealthy }
            try await harness.shutdownGracefully()
        }
    }

    /// Redis's links go silent (no FIN, no RST): health reports the node
    /// degraded within a few seconds instead of "up while a channel object
    /// exists", the links are re-opened by themselves, and messages flow again.
    @Test func healthSeesASilentRedisLinkAndItRecovers() async throws {
        try await withRedisServer { redis in
            let proxy = try await BlackholeProxy.start(to: redis.port)
            defer { proxy.stop() }
            let node = try TestCluster.makeNode("s", redis: redis, redisURL: "redis://127.0.0.1:\(proxy.port)")
            let harness = ServiceGroupHarness(node)
            try await harness.start()
            let client = try await ClusterClient.connect(node, uid: "sam")
            #expect(await node.health().isHealthy)
            proxy.refuseNewConnections(true)  // Redis stays unreachable until we say so
            proxy.blackholeCurrentLinks()
            try await eventually("health to see the silent subscriber", within: .seconds(6)) { await !node.health().subscriber }
            #expect(await !node.health().redis)
            proxy.refuseNewConnections(false)
            try await eventually("the links to come back", within: .seconds(10)) { await node.health().isHealthy }
            // Published by another client straight to Redis: it reaches sam through the re-made subscription.
            try await redis.withClient { connection in
                let envelope = try Envelope(target: .user("sam"), kind: .text, originNode: "elsewhere", originEpoch: 1,
                                            payload: ByteBuffer(string: "after the silence")).encoded()
                // Redis still counts the silent link's subscription too: it cannot know that link is dead.
                #expect(try await connection.send(RedisCommand("PUBLISH", "test:user:sam", .bytes(envelope))).int ?? 0 >= 1)
            }
            #expect(try await client.next().text == "after the silence")
            try await harness.shutdownGracefully()
        }
    }
}
