@testable import ClusterWS
import EmbeddedRedis
import NIOCore
import Synchronization
import Testing

/// Posts nobody awaits must not pile up without bound while Redis falls
/// behind: past `maxPostBytesInFlight` of unanswered posts, a post fails at
/// once (the caller counts it), and posting works again once Redis answers.
@Suite("Posts while Redis falls behind are bounded in bytes", .timeLimit(.minutes(1)))
struct PostBacklogTests {
    final class Failures: Sendable {
        let errors = Mutex<[RedisError]>([])
        var all: [RedisError] { errors.withLock { $0 } }
    }

    @Test func postsPastTheBoundFailAtOnceAndPostingResumes() async throws {
        try await withRedisServer { server in
            var configuration = RedisConfiguration.testing(server)
            configuration.maxPostBytesInFlight = 1 << 20
            let redis = RedisConnection(configuration: configuration)
            let admin = RedisConnection(configuration: .testing(server))
            try await withRunning([redis, admin]) { () async throws in
                try await redis.waitUntilConnected(timeout: .seconds(5))
                // Redis stops answering every client for 1.5 s (the admin's own CLIENT PAUSE is answered).
                _ = try await admin.send(RedisCommand("CLIENT", "PAUSE", "1500", "ALL"))
                let clock = ContinuousClock()
                let start = clock.now
                let failures = Failures()
                let value = ByteBuffer(repeating: 0x61, count: 100_000)
                for index in 0..<30 {
                    redis.post(RedisCommand("SET", .string("k\(index)"), .bytes(value))) { error in
                        failures.errors.withLock { $0.append(error) }
                    }
                }
                // About ten posts of 100 KB fit in 1 MiB; the others fail at once, long before Redis answers.
                try await eventually("the posts past the bound to fail", within: .seconds(1)) { failures.all.count >= 19 }
                #expect(clock.now - start < .milliseconds(1_400))
                #expect(failures.all.count <= 21 && failures.all.allSatisfy { $0 == .backlogFull }, "\(failures.all)")
                // Once Redis answers again, the written posts took effect and posting goes through.
                try await eventually("the paused posts to be answered", within: .seconds(5)) {
                    try await admin.send(RedisCommand("EXISTS", "k0")).int == 1
                }
                let before = failures.all.count
                redis.post(RedisCommand("SET", "after", "1")) { error in failures.errors.withLock { $0.append(error) } }
                try await eventually("the later post to arrive") {
                    try await admin.send(RedisCommand("GET", "after")).string == "1"
                }
                #expect(failures.all.count == before)
            }
        }
    }
}
