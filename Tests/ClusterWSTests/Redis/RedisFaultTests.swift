@testable import ClusterWS
import EmbeddedRedis
import NIOCore
import NIOPosix
import Testing

@Suite("Redis going away and coming back", .timeLimit(.minutes(2)))
struct RedisFaultTests {
    @Test(arguments: [false, true])
    func pendingCommandsFailThenClientAndSubscriberRecover(crash: Bool) async throws {
        try await withRedisServer { server in
            let redis = RedisConnection(configuration: .testing(server))
            let publisher = RedisConnection(configuration: .testing(server))
            let lonely = RedisConnection(configuration: .testing(server))
            let subscriber = RedisSubscriber(configuration: .testing(server))
            try await withRunning([redis, publisher, lonely, subscriber]) { () async throws in
                try await subscriber.waitUntilConnected(timeout: .seconds(5))
                try await subscriber.subscribe(["live", "other"])
                #expect(try await publisher.send(RedisCommand("PUBLISH", "live", "before")) == .integer(1))
                #expect(try await next(1, from: subscriber.messages).first.map { String(buffer: $0.payload) } == "before")

                // In flight when Redis dies: a BLPOP that never returns and 100 commands
                // pipelined behind it in the same write, and a single blocked send on a second client.
                let commandsBefore = await redis.connectionCount
                let subscriberBefore = await subscriber.connectionCount
                let pipelined = Task {
                    try await redis.send(batch: [RedisCommand("BLPOP", "nothing", 0)] + (0..<100).map { _ in RedisCommand("PING") })
                }
                try await waitForBlockedClient(using: publisher)
                let single = Task { try await lonely.send(RedisCommand("BLPOP", "nothing", 0)) }
                try await waitForBlockedClient(using: publisher, count: 2)

                await server.stop(crash: crash)

                // Pending work fails promptly with a typed error; nothing hangs.
                let results = try await within(.seconds(5), "pipelined commands to fail") { try await pipelined.value }
                #expect(results.count == 101)
                #expect(results.allSatisfy { if case .failure(.connectionLost) = $0 { true } else { false } })
                let singleResult = try await within(.seconds(5), "the single command to fail") { await single.result }
                #expect(throws: RedisError.connectionLost) { try singleResult.get() }
                try await within(.seconds(5), "the publisher to notice") { await publisher.waitUntilDisconnected() }

                try await server.restart()

                // The command connection reconnects by itself; commands issued meanwhile waited for it.
                #expect(try await redis.send(RedisCommand("SET", "after", "restart")) == .simpleString("OK"))
                #expect(try await redis.send(RedisCommand("GET", "after")).string == "restart")
                #expect(await redis.connectionCount > commandsBefore)

                // The subscriber reconnects and re-subscribes both channels by itself.
                try await subscriber.waitUntilConnected(after: subscriberBefore, timeout: .seconds(10))
                let numsub = try await publisher.send(RedisCommand("PUBSUB", "NUMSUB", "live", "other"))
                #expect(numsub.array?.compactMap(\.int) == [1, 1])
                for index in 0..<50 {
                    _ = try await publisher.send(RedisCommand("PUBLISH", index.isMultiple(of: 2) ? "live" : "other", .string("after-\(index)")))
                }
                let after = try await next(50, from: subscriber.messages)
                #expect(after.map { String(buffer: $0.payload) } == (0..<50).map { "after-\($0)" })
            }
        }
    }

    @Test func commandsIssuedDuringAnOutageWaitForTheReconnect() async throws {
        try await withRedisServer { server in
            var configuration = RedisConfiguration.testing(server)
            configuration.disconnectedCommandWait = .seconds(10)
            let redis = RedisConnection(configuration: configuration)
            try await withRunning([redis]) { () async throws in
                try await redis.waitUntilConnected(timeout: .seconds(5))
                let before = await redis.connectionCount
                await server.stop()
                // Wait until the client has noticed, then issue a command mid-outage.
                try await within(.seconds(5), "the client to notice") { await redis.waitUntilDisconnected() }
                let pending = Task { try await redis.send(RedisCommand("ECHO", "patient")) }
                try await server.restart()
                #expect(try await pending.value.string == "patient")
                #expect(await redis.connectionCount == before + 1)
            }
        }
    }
}

/// A TCP server that answers every read with `+OK` after `delay`: a Redis
/// that is slow to accept `AUTH` (to stop a client in the middle of connecting).
private final class SlowOKHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let delay: TimeAmount
    init(delay: TimeAmount) { self.delay = delay }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let channel = context.channel
        context.eventLoop.scheduleTask(in: delay) {
            channel.writeAndFlush(ByteBuffer(string: "+OK\r\n"), promise: nil)
        }
    }
}

@Suite("A client stopped while it connects", .timeLimit(.minutes(1)))
struct RedisShutdownWhileConnectingTests {
    /// The shutdown comes while the TCP connection is open but `AUTH` is not
    /// answered yet; the connect then succeeds. The client must close that
    /// connection and stop, not keep it open forever (it did: a node's
    /// shutdown hung when Redis restarted just before it).
    @Test(arguments: [false, true])
    func aShutdownDuringTheHandshakeEndsTheClient(subscriber useSubscriber: Bool) async throws {
        let accepted = AsyncStream.makeStream(of: Void.self)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                accepted.continuation.yield()
                return channel.pipeline.addHandler(SlowOKHandler(delay: .milliseconds(300)))
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { server.close(promise: nil) }
        var configuration = try RedisConfiguration(url: "redis://:secret@127.0.0.1:\(server.localAddress?.port ?? 0)")
        configuration.connectTimeout = .seconds(5)
        let client: any RedisClientLifecycle = useSubscriber ? RedisSubscriber(configuration: configuration)
                                                             : RedisConnection(configuration: configuration)
        let running = Task { await client.runUntilShutdown() }
        var connections = accepted.stream.makeAsyncIterator()
        _ = await connections.next()  // connected; AUTH sent, not answered yet
        await client.shutdown()
        try await within(.seconds(3), "the client to stop") { await running.value }
    }
}

/// What the test above needs of either client.
protocol RedisClientLifecycle: Sendable {
    func runUntilShutdown() async
    func shutdown() async
}

extension RedisSubscriber: RedisClientLifecycle {}
extension RedisConnection: RedisClientLifecycle {}
