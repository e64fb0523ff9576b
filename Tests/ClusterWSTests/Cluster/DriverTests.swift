@testable import ClusterWS
import EmbeddedRedis
import Logging
import NIOCore
import Testing

@Suite("Delivery guarantees of the two drivers", .timeLimit(.minutes(2)))
struct DriverTests {
    /// Node b logs in to Redis as its own ACL user; the test switches that
    /// user off and kills its connections, so b (and only b) is cut off Redis
    /// until the user is switched on again.
    struct Outage {
        let admin: any RedisCommands

        static func prepare(_ redis: RedisServerProcess, admin: any RedisCommands) async throws -> Outage {
            _ = try await admin.send(RedisCommand("ACL", "SETUSER", "nodeb", "on", ">secret", "~*", "&*", "+@all"))
            return Outage(admin: admin)
        }

        static func url(_ redis: RedisServerProcess) -> String { "redis://nodeb:secret@127.0.0.1:\(redis.port)" }

        func cut() async throws {
            _ = try await admin.send(RedisCommand("ACL", "SETUSER", "nodeb", "off"))
            _ = try await admin.send(RedisCommand("CLIENT", "KILL", "USER", "nodeb"))
        }

        func restore() async throws {
            _ = try await admin.send(RedisCommand("ACL", "SETUSER", "nodeb", "on"))
        }
    }

    /// Node b is cut off Redis while node a sends `count` messages to b's
    /// user. Returns how many of them arrived.
    private func messagesDeliveredAcrossAnOutage(driver: ClusterConfiguration.Driver, count: Int) async throws -> Int {
        try await withRedisServer { redis in
            let a = try Self.node("a", redis: redis, url: redis.url, driver: driver)
            let nodeA = ServiceGroupHarness(a)
            try await nodeA.start()
            try await a.redis.waitUntilReady(timeout: .seconds(5))
            let outage = try await Outage.prepare(redis, admin: a.redis)
            let b = try Self.node("b", redis: redis, url: Outage.url(redis), driver: driver)
            let nodeB = ServiceGroupHarness(b)
            try await nodeB.start()
            let client = try await ClusterClient.connect(b, uid: "offline-for-a-while")
            #expect(try await a.sender.send(uid: "offline-for-a-while", .text("before")) == 1)
            #expect(try await client.next().text == "before")

            let subscriptions = await b.singleSubscriber!.connectionCount
            try await outage.cut()  // b loses Redis: its subscriber and its queue consumer are cut off
            try await within(.seconds(5), "b to notice") { await b.singleSubscriber!.waitUntilDisconnected() }
            for index in 0..<count {
                _ = try await a.sender.send(uid: "offline-for-a-while", .text("m\(index)"))
            }
            try await outage.restore()
            try await b.singleSubscriber!.waitUntilConnected(after: subscriptions, timeout: .seconds(10))
            _ = try await a.sender.send(uid: "offline-for-a-while", .text("after"))

            // Read until "after" arrives (it is sent last, on a reconnected node).
            var seen: [String] = []
            while true {
                let text = try await within(.seconds(15), "the message sent after the outage") { try await client.next().text }
                if text == "after" { break }
                seen.append(text)
            }
            let distinct = Set(seen)
            #expect(distinct.isSubset(of: Set((0..<count).map { "m\($0)" })))
            let duplicates = seen.count - distinct.count
            print("driver \(driver): \(distinct.count) of \(count) messages sent during the outage arrived, \(duplicates) duplicates")
            try await nodeB.shutdownGracefully()
            try await nodeA.shutdownGracefully()
            return distinct.count
        }
    }

    static func node(_ id: String, redis: RedisServerProcess, url: String, driver: ClusterConfiguration.Driver,
                     livenessWindow: Duration = .seconds(10)) throws -> ClusterNode {
        var configuration = ClusterConfiguration(
            redisURL: .init(url), serverID: id, namespace: "test",
            webSocket: WebSocketServerConfiguration(keepalive: .disabled, closeTimeout: .seconds(1)))
        configuration.driver = driver
        configuration.queue.block = .milliseconds(200)
        configuration.heartbeatInterval = .milliseconds(100)
        configuration.livenessWindow = livenessWindow  // longer than the outage: b is not declared dead
        var logger = Logger(label: "test.node")
        logger.logLevel = .critical
        let node = try ClusterNode(configuration: configuration, logger: logger)
        node.webSocket("/ws", authenticate: { $0.queryParameter("uid") }) { socket in
            try? await socket.socket.send(.text("ready \(socket.fd)"))
        }
        return node
    }

    @Test func theQueueDriverLosesNothingWhileANodeIsCutOffRedis() async throws {
        let delivered = try await messagesDeliveredAcrossAnOutage(driver: .queue, count: 200)
        #expect(delivered == 200)
    }

    @Test func pubSubLosesWhatIsPublishedWhileANodeIsCutOff() async throws {
        // At-most-once: measured, not hidden. Messages published while b's subscriber is
        // disconnected are gone.
        let delivered = try await messagesDeliveredAcrossAnOutage(driver: .pubSub, count: 200)
        #expect(delivered < 200)
    }

    @Test func aRestartedNodePicksUpItsPendingEntriesButNeverHandsThemToANewConnection() async throws {
        try await withRedisServer { redis in
            let a = try Self.node("a", redis: redis, url: redis.url, driver: .queue)
            let nodeA = ServiceGroupHarness(a)
            try await nodeA.start()
            try await a.redis.waitUntilReady(timeout: .seconds(5))
            let outage = try await Outage.prepare(redis, admin: a.redis)
            let b = try Self.node("b", redis: redis, url: Outage.url(redis), driver: .queue)
            let nodeB = ServiceGroupHarness(b)
            try await nodeB.start()
            let old = try await ClusterClient.connect(b, uid: "u")

            // Entries pile up in b's stream while b cannot read them; then b dies.
            try await outage.cut()
            for index in 0..<20 { _ = try await a.sender.send(uid: "u", .text("old \(index)")) }
            let stream = try await a.redis.send(RedisCommand("XLEN", "test:queue:b")).int ?? 0
            #expect(stream >= 20)
            b.abandon()
            try await within(.seconds(10), "b to stop") { try await nodeB.shutdownGracefully() }
            old.close()
            try await outage.restore()

            // b again, same id, new epoch; the same user connects anew.
            let b2 = try Self.node("b", redis: redis, url: redis.url, driver: .queue)
            let nodeB2 = ServiceGroupHarness(b2)
            try await nodeB2.start()
            let fresh = try await ClusterClient.connect(b2, uid: "u")
            try await eventually("b's old entries to be read and dropped") { b2.statistics.staleDropped >= 20 }
            try await eventually("all of them to be acknowledged") {
                try await a.redis.send(RedisCommand("XPENDING", "test:queue:b", "test:workers")).array?.first?.int == 0
            }
            #expect(try await a.sender.send(uid: "u", .text("new")) == 1)
            #expect(try await fresh.next().text == "new")  // nothing of the old run's came first
            try await nodeB2.shutdownGracefully()
            try await nodeA.shutdownGracefully()
        }
    }

    @Test func garbageInAQueueIsDroppedCountedAndAcknowledged() async throws {
        try await withCluster(["a", "b"], driver: .queue) { cluster in
            let client = try await ClusterClient.connect(cluster["b"], uid: "g")
            let epoch = String(cluster["b"].epoch, radix: 16)
            _ = try await cluster["a"].redis.send(RedisCommand("XADD", "test:queue:b", "*", "epoch", .string(epoch), "env", "garbage"))
            #expect(try await cluster["a"].sender.send(uid: "g", .text("still flowing")) == 1)
            #expect(try await client.next().text == "still flowing")
            try await eventually("the garbage to be counted") { cluster["b"].statistics.garbageDropped == 1 }
            try await eventually("every entry to be acknowledged") {  // the ack follows the batch's delivery
                try await cluster["a"].redis.send(RedisCommand("XPENDING", "test:queue:b", "test:workers")).array?.first?.int == 0
            }
        }
    }

    @Test func theRoutingScriptIsReloadedAfterARedisRestart() async throws {
        try await withCluster(["a", "b"], driver: .queue) { cluster in
            let client = try await ClusterClient.connect(cluster["b"], uid: "s")
            #expect(try await cluster["a"].sender.send(uid: "s", .text("one")) == 1)
            #expect(try await client.next().text == "one")
            _ = try await cluster["a"].redis.send(RedisCommand("SCRIPT", "FLUSH"))
            #expect(try await cluster["a"].sender.send(uid: "s", .text("two")) == 1)  // NOSCRIPT → SCRIPT LOAD → retry
            #expect(try await client.next().text == "two")
        }
    }
}
