@testable import ClusterWS
import EmbeddedRedis
import NIOCore
import Testing

@Suite("Redis subscriber against a real redis-server", .timeLimit(.minutes(2)))
struct RedisSubscriberTests {
    @Test func messagesArriveInPublishOrderAndBinarySafe() async throws {
        try await withRedisServer { server in
            let redis = RedisConnection(configuration: .testing(server))
            let subscriber = RedisSubscriber(configuration: .testing(server))
            try await withRunning([redis, subscriber]) { () async throws in
                try await subscriber.waitUntilConnected(timeout: .seconds(5))
                try await subscriber.subscribe(["orders"])
                var commands = (0..<2_000).map { RedisCommand("PUBLISH", "orders", .string("\($0)")) }
                commands.append(RedisCommand("PUBLISH", "orders", .bytes(ByteBuffer(bytes: [0, 13, 10, 0]))))
                let receivers = try await redis.send(batch: commands)
                #expect(receivers.allSatisfy { (try? $0.get()) == .integer(1) })
                let messages = try await next(2_001, from: subscriber.messages)
                #expect(messages.dropLast().map { String(buffer: $0.payload) } == (0..<2_000).map { "\($0)" })
                #expect(messages.allSatisfy { $0.channel == "orders" })
                #expect(messages.last?.payload == ByteBuffer(bytes: [0, 13, 10, 0]))
            }
        }
    }

    @Test func subscribeAndUnsubscribeAtRuntime() async throws {
        try await withRedisServer { server in
            let redis = RedisConnection(configuration: .testing(server))
            let subscriber = RedisSubscriber(configuration: .testing(server))
            try await withRunning([redis, subscriber]) { () async throws in
                try await subscriber.waitUntilConnected(timeout: .seconds(5))
                try await subscriber.subscribe(["a", "b"])
                #expect(try await redis.send(RedisCommand("PUBLISH", "a", "1")) == .integer(1))
                #expect(try await redis.send(RedisCommand("PUBLISH", "b", "2")) == .integer(1))
                #expect(try await redis.send(RedisCommand("PUBLISH", "c", "x")) == .integer(0))

                try await subscriber.unsubscribe(["a"])
                #expect(try await redis.send(RedisCommand("PUBLISH", "a", "lost")) == .integer(0))
                try await subscriber.subscribe(["c"])
                #expect(try await redis.send(RedisCommand("PUBLISH", "c", "3")) == .integer(1))
                #expect(await subscriber.subscribedChannels == ["b", "c"])

                let messages = try await next(3, from: subscriber.messages)
                #expect(messages.map { "\($0.channel)=\(String(buffer: $0.payload))" } == ["a=1", "b=2", "c=3"])

                // Thousands of channels at once (sent in chunks) are all confirmed.
                let many = (0..<3_000).map { "user:\($0)" }
                try await subscriber.subscribe(many)
                let counts = try await redis.send(RedisCommand("PUBSUB", "NUMSUB", "user:0", "user:2999"))
                #expect(counts.array?.compactMap(\.int) == [1, 1])
                try await subscriber.unsubscribe(many)
                let after = try await redis.send(RedisCommand("PUBSUB", "NUMSUB", "user:0"))
                #expect(after.array?.last == .integer(0))
            }
        }
    }

    /// A link whose peer goes silent (no FIN, no RST: a dead host, a NAT that
    /// forgot the flow) is noticed by a health-check PING that gets no answer,
    /// closed, re-opened and re-subscribed; meanwhile it reports itself down.
    @Test func aSilentLinkIsNoticedReopenedAndResubscribed() async throws {
        try await withRedisServer { server in
            let proxy = try await BlackholeProxy.start(to: server.port)
            defer { proxy.stop() }
            var configuration = RedisConfiguration.testing(server)
            configuration.port = proxy.port
            configuration.healthCheckInterval = .milliseconds(200)
            configuration.healthCheckTimeout = .milliseconds(800)
            let redis = RedisConnection(configuration: .testing(server))
            let subscriber = RedisSubscriber(configuration: configuration)
            try await withRunning([redis, subscriber]) { () async throws in
                try await subscriber.waitUntilConnected(timeout: .seconds(5))
                // A link reset right now (see below) fails the call, but the channel stays
                // wanted and is subscribed again on the next connection.
                do { try await subscriber.subscribe(["news"]) } catch RedisError.connectionLost {}
                // A loaded machine may reset the link meanwhile (a late health-check answer),
                // losing a message in flight: publish until one arrives, then start the
                // silence from a link that is up now.
                var before: [String] = []
                for _ in 0..<5 where before.isEmpty {
                    _ = try await redis.send(RedisCommand("PUBLISH", "news", "before"))
                    before = (try? await next(1, from: subscriber.messages, within: .seconds(2)))?.map { String(buffer: $0.payload) } ?? []
                }
                #expect(before == ["before"])
                try await subscriber.waitUntilConnected(timeout: .seconds(5))
                let generation = await subscriber.connectionCount
                proxy.blackholeCurrentLinks()
                let clock = ContinuousClock()
                let start = clock.now
                try await eventually("the silent link to be noticed") { await !subscriber.isConnected() }
                try await subscriber.waitUntilConnected(after: generation, timeout: .seconds(5))
                print("silent link: noticed and re-subscribed after \(clock.now - start)")
                #expect(clock.now - start < .seconds(3))
                // Redis still counts the silent link's subscription (it cannot know it is dead), and the new one.
                #expect(try await redis.send(RedisCommand("PUBLISH", "news", "after")).int ?? 0 >= 1)
                #expect(try await next(1, from: subscriber.messages).map { String(buffer: $0.payload) } == ["after"])
            }
        }
    }

    @Test func messagesEndWhenTheSubscriberStops() async throws {
        try await withRedisServer { server in
            let subscriber = RedisSubscriber(configuration: .testing(server))
            try await withRunning([subscriber]) { () async throws in
                try await subscriber.waitUntilConnected(timeout: .seconds(5))
            }
            let leftovers = try await within(.seconds(5), "the stream to end") {
                var count = 0
                for await _ in subscriber.messages { count += 1 }
                return count
            }
            #expect(leftovers == 0)
        }
    }
}
