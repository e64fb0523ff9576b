@testable import ClusterWS
import EmbeddedRedis
import NIOCore
import Synchronization
import Testing

@Suite("Redis connection against a real redis-server", .timeLimit(.minutes(2)))
struct RedisConnectionTests {
    @Test func roundTrips() async throws {
        try await withRedisServer { server in
            let redis = RedisConnection(configuration: .testing(server))
            try await withRunning([redis]) { () async throws in
                #expect(try await redis.send(RedisCommand("PING")) == .simpleString("PONG"))
                #expect(try await redis.send(RedisCommand("SET", "k", "v")) == .simpleString("OK"))
                #expect(try await redis.send(RedisCommand("GET", "k")).string == "v")
                #expect(try await redis.send(RedisCommand("GET", "missing")).isNull)
                #expect(try await redis.send(RedisCommand("INCRBY", "n", 41)) == .integer(41))
                #expect(try await redis.send(RedisCommand("RPUSH", "l", "a", "b")) == .integer(2))
                let list = try await redis.send(RedisCommand("LRANGE", "l", 0, -1))
                #expect(list.array?.compactMap(\.string) == ["a", "b"])
            }
        }
    }

    @Test func valuesAreBinarySafe() async throws {
        try await withRedisServer { server in
            let redis = RedisConnection(configuration: .testing(server))
            try await withRunning([redis]) { () async throws in
                let withNULs = ByteBuffer(bytes: [0, 0, 13, 10, 36, 0, 255, 128])
                _ = try await redis.send(RedisCommand("SET", .bytes(ByteBuffer(bytes: [0, 1])), .bytes(withNULs)))
                #expect(try await redis.send(RedisCommand("GET", .bytes(ByteBuffer(bytes: [0, 1])))).buffer == withNULs)

                var big = ByteBuffer()
                for index in 0..<(1 << 20) { big.writeInteger(UInt8(truncatingIfNeeded: index &* 31)) }
                _ = try await redis.send(RedisCommand("SET", "big", .bytes(big)))
                let back = try await redis.send(RedisCommand("GET", "big")).buffer
                #expect(back?.readableBytes == 1 << 20)
                #expect(back == big)
            }
        }
    }

    @Test func tenThousandPipelinedCommandsReplyInOrder() async throws {
        try await withRedisServer { server in
            let redis = RedisConnection(configuration: .testing(server))
            try await withRunning([redis]) { () async throws in
                let commands = (0..<10_000).map { RedisCommand("ECHO", .string("m\($0)")) }
                let replies = try await redis.send(batch: commands)
                #expect(replies.count == 10_000)
                let texts = replies.map { (try? $0.get())?.string }
                #expect(texts == (0..<10_000).map { "m\($0)" })

                // The same through concurrent single sends: each gets its own reply.
                try await withThrowingTaskGroup(of: (Int, Int?).self) { group in
                    for index in 0..<10_000 {
                        group.addTask { (index, try await redis.send(RedisCommand("INCR", "counter")).int) }
                    }
                    var seen = Set<Int>()
                    for try await (_, value) in group { if let value { seen.insert(value) } }
                    #expect(seen == Set(1...10_000))
                }
            }
        }
    }

    @Test func errorRepliesAreTypedAndDoNotBreakThePipeline() async throws {
        try await withRedisServer { server in
            let redis = RedisConnection(configuration: .testing(server))
            try await withRunning([redis]) { () async throws in
                await #expect(throws: RedisError.reply("ERR unknown command 'NOPE', with args beginning with: 'x' ")) {
                    try await redis.send(RedisCommand("NOPE", "x"))
                }
                _ = try await redis.send(RedisCommand("SET", "s", "v"))
                do {
                    _ = try await redis.send(RedisCommand("LPUSH", "s", "x"))
                    Issue.record("LPUSH on a string must fail")
                } catch RedisError.reply(let message) {
                    #expect(message.hasPrefix("WRONGTYPE"))
                }
                let mixed = try await redis.send(batch: [RedisCommand("INCR", "s"), RedisCommand("PING")])
                #expect(throws: RedisError.self) { try mixed[0].get() }
                #expect(try mixed[1].get() == .simpleString("PONG"))
            }
        }
    }

    @Test func authenticatesWithPasswordAndACLUserAndSelectsDatabase() async throws {
        try await withRedisServer(arguments: ["--requirepass", "topsecret"]) { server in
            var configuration = RedisConfiguration.testing(server)
            configuration.password = "topsecret"
            configuration.database = 5
            let redis = RedisConnection(configuration: configuration)
            try await withRunning([redis]) { () async throws in
                _ = try await redis.send(RedisCommand("SET", "where", "db5"))
                _ = try await redis.send(RedisCommand("ACL", "SETUSER", "app", "on", ">apppass", "~*", "&*", "+@all"))
                #expect(try await redis.send(RedisCommand("CLIENT", "INFO")).string?.contains("db=5") == true)
            }
            var userConfiguration = try RedisConfiguration(url: "redis://app:apppass@127.0.0.1:\(server.port)/5")
            userConfiguration.disconnectedCommandWait = .seconds(5)
            let asUser = RedisConnection(configuration: userConfiguration)
            try await withRunning([asUser]) { () async throws in
                #expect(try await asUser.send(RedisCommand("ACL", "WHOAMI")).string == "app")
                #expect(try await asUser.send(RedisCommand("GET", "where")).string == "db5")
            }
        }
    }

    @Test func wrongPasswordIsAnAuthenticationError() async throws {
        try await withRedisServer(arguments: ["--requirepass", "right"]) { server in
            var configuration = RedisConfiguration.testing(server)
            configuration.password = "wrong"
            // Long enough for a first connect attempt to fail even on a loaded machine.
            configuration.disconnectedCommandWait = .seconds(2)
            let redis = RedisConnection(configuration: configuration)
            try await withRunning([redis]) { () async throws in
                do {
                    _ = try await redis.send(RedisCommand("PING"))
                    Issue.record("PING must fail with a wrong password")
                } catch RedisError.authenticationFailed(let message) {
                    #expect(message.contains("WRONGPASS") || message.contains("invalid"))
                }
            }
        }
    }

    @Test func connectionRefusedIsReported() async throws {
        let refusing = try RefusingPort()
        defer { _ = refusing }
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(refusing.port)")
        configuration.disconnectedCommandWait = .seconds(1)
        let redis = RedisConnection(configuration: configuration)
        try await withRunning([redis]) { () async throws in
            do {
                _ = try await redis.send(RedisCommand("PING"))
                Issue.record("PING must fail with nothing listening")
            } catch RedisError.connectionRefused(let why) {
                #expect(why.contains("127.0.0.1"))
            }
        }
    }

    /// Posts made before the first connection is up (a cluster client opens
    /// a master's connection on its first map read, and a post may come right
    /// then) are held and written in order once it is; if it fails, they fail.
    @Test func postsBeforeTheFirstConnectAreHeldThenWrittenInOrder() async throws {
        try await withRedisServer { server in
            let redis = RedisConnection(configuration: .testing(server))
            let failures = Mutex<[RedisError]>([])
            for index in 0..<100 {
                redis.post(RedisCommand("RPUSH", "held", .string("\(index)"))) { error in failures.withLock { $0.append(error) } }
            }
            try await withRunning([redis]) { () async throws in
                let list = try await redis.send(RedisCommand("LRANGE", "held", 0, -1))
                #expect(list.array?.compactMap(\.string) == (0..<100).map { "\($0)" })
                #expect(failures.withLock { $0 }.isEmpty)
            }
        }
        let refusing = try RefusingPort()
        defer { _ = refusing }
        let redis = RedisConnection(configuration: try RedisConfiguration(url: "redis://127.0.0.1:\(refusing.port)"))
        let failed = Mutex<[RedisError]>([])
        redis.post(RedisCommand("PING")) { error in failed.withLock { $0.append(error) } }
        try await withRunning([redis]) { () async throws in
            try await eventually("the held post to fail") { !failed.withLock { $0 }.isEmpty }
            guard case .connectionRefused = try #require(failed.withLock { $0.first }) else {
                Issue.record("expected connectionRefused, got \(failed.withLock { $0 })")
                return
            }
        }
    }

    @Test func failsFastWhileDisconnectedWhenConfiguredTo() async throws {
        let refusing = try RefusingPort()
        defer { _ = refusing }
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(refusing.port)")
        configuration.disconnectedCommandWait = .zero
        let redis = RedisConnection(configuration: configuration)
        // Not running at all: nothing to wait for.
        await #expect(throws: RedisError.notConnected) { try await redis.send(RedisCommand("PING")) }
    }

    @Test func commandTimeoutFailsOnlyTheLateCommand() async throws {
        try await withRedisServer(arguments: ["--enable-debug-command", "yes"]) { server in
            var configuration = RedisConfiguration.testing(server)
            configuration.commandTimeout = .milliseconds(100)
            let redis = RedisConnection(configuration: configuration)
            try await withRunning([redis]) { () async throws in
                await #expect(throws: RedisError.timeout) { try await redis.send(RedisCommand("DEBUG", "SLEEP", "0.5")) }
                // The late "+OK" of DEBUG SLEEP is dropped; the next command gets its own reply.
                #expect(try await redis.send(RedisCommand("ECHO", "after"), timeout: .seconds(5)).string == "after")
            }
        }
    }

    @Test func shutdownDrainsCommandsAlreadyWritten() async throws {
        try await withRedisServer { server in
            let redis = RedisConnection(configuration: .testing(server))
            let helper = RedisConnection(configuration: .testing(server))
            try await withRunning([redis, helper]) { () async throws in
                try await redis.waitUntilConnected(timeout: .seconds(5))
                let blocked = Task { try await redis.send(RedisCommand("BLPOP", "jobs", 5)) }
                try await waitForBlockedClient(using: helper)
                await redis.shutdown()
                await #expect(throws: RedisError.shutdown) { try await redis.send(RedisCommand("PING")) }
                // The BLPOP was written before the shutdown: it still gets its reply.
                _ = try await helper.send(RedisCommand("RPUSH", "jobs", "last"))
                let reply = try await within(.seconds(5), "the drained reply") { try await blocked.value }
                #expect(reply.array?.compactMap(\.string) == ["jobs", "last"])
                try await within(.seconds(5), "the socket to close") { await redis.waitUntilDisconnected() }
            }
        }
    }

    @Test func gracefulShutdownOfTheServiceGroupStopsTheConnection() async throws {
        try await withRedisServer { server in
            let redis = RedisConnection(configuration: .testing(server))
            let group = ServiceGroupHarness(redis)
            try await group.start()
            try await redis.waitUntilConnected(timeout: .seconds(5))
            #expect(try await redis.send(RedisCommand("PING")) == .simpleString("PONG"))
            try await within(.seconds(5), "the group to stop") { try await group.shutdownGracefully() }
            await #expect(throws: RedisError.shutdown) { try await redis.send(RedisCommand("PING")) }
        }
    }
}
