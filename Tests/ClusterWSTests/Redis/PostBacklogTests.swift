@testable import ClusterWS
import EmbeddedRedis
import Foundation
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
        /// Bytes of unanswered posts at the moment each failure was reported.
        let inFlightAtFailure = Mutex<[Int]>([])
        var all: [RedisError] { errors.withLock { $0 } }
    }

    @Test func postsPastTheBoundFailAtOnceAndPostingResumes() async throws {
        try await withRedisServer { server in
            var configuration = RedisConfiguration.testing(server)
            configuration.maxPostBytesInFlight = 1 << 20
            // The pause below is longer than a health check may wait: this test is about the byte bound.
            configuration.healthCheckInterval = nil
            var adminConfiguration = RedisConfiguration.testing(server)
            adminConfiguration.healthCheckInterval = nil
            let redis = RedisConnection(configuration: configuration)
            let admin = RedisConnection(configuration: adminConfiguration)
            try await withRunning([redis, admin]) { () async throws in
                try await redis.waitUntilConnected(timeout: .seconds(5))
                // Redis stops answering every client for 4 s (the admin's own CLIENT PAUSE is answered).
                // The pause is long so that a loaded test machine cannot let it end before the checks below.
                _ = try await admin.send(RedisCommand("CLIENT", "PAUSE", "4000", "ALL"))
                let clock = ContinuousClock()
                let start = clock.now
                let failures = Failures()
                let value = ByteBuffer(repeating: 0x61, count: 100_000)
                for index in 0..<30 {
                    redis.post(RedisCommand("SET", .string("k\(index)"), .bytes(value))) { error in
                        failures.inFlightAtFailure.withLock { $0.append(redis.postLedger.bytes) }
                        failures.errors.withLock { $0.append(error) }
                    }
                }
                // About ten posts of 100 KB fit in 1 MiB; the others fail at once, long before Redis answers:
                // each failure is reported while the admitted posts are still unanswered (in flight).
                try await eventually("the posts past the bound to fail", within: .seconds(3)) { failures.all.count >= 19 }
                #expect(clock.now - start < .milliseconds(3_500))
                #expect(failures.all.count <= 21 && failures.all.allSatisfy { $0 == .backlogFull }, "\(failures.all)")
                let inFlight = failures.inFlightAtFailure.withLock { $0 }
                #expect(inFlight.allSatisfy { $0 > (1 << 20) - 100_100 }, "\(inFlight)")
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

/// A post paces itself: while Redis falls behind, a poster waits for room
/// instead of being dropped at the byte bound, and everything arrives.
@Suite("Posts slow down while Redis falls behind", .timeLimit(.minutes(1)))
struct PostPacingTests {
    /// The mechanism, on one connection: past `postPacingBytes` unanswered,
    /// `waitForPostRoom` waits until Redis answers; nothing fails.
    @Test func aPosterWaitsForRoomWhileRedisIsPaused() async throws {
        try await withRedisServer { server in
            var configuration = RedisConfiguration.testing(server)
            configuration.postPacingBytes = 1 << 20
            configuration.maxPostBytesInFlight = 2 << 20
            configuration.healthCheckInterval = nil  // the pause is longer than a health check may wait
            var adminConfiguration = RedisConfiguration.testing(server)
            adminConfiguration.healthCheckInterval = nil
            let redis = RedisConnection(configuration: configuration)
            let admin = RedisConnection(configuration: adminConfiguration)
            try await withRunning([redis, admin]) { () async throws in
                try await redis.waitUntilConnected(timeout: .seconds(5))
                _ = try await admin.send(RedisCommand("CLIENT", "PAUSE", "4000", "ALL"))
                let posted = Atomic<Int>(0)
                let failures = Mutex<[RedisError]>([])
                let value = ByteBuffer(repeating: 0x61, count: 100_000)
                let poster = Task {
                    for index in 0..<40 {
                        await redis.waitForPostRoom()
                        redis.post(RedisCommand("SET", .string("k\(index)"), .bytes(value))) { error in
                            failures.withLock { $0.append(error) }
                        }
                        posted.add(1, ordering: .relaxed)
                    }
                }
                // About ten posts of 100 KB fit under the 1 MiB mark; then the poster waits for Redis.
                try await eventually("the poster to reach its mark", within: .seconds(3)) { posted.load(ordering: .relaxed) >= 9 }
                try await Task.sleep(for: .milliseconds(300))
                let whilePaused = posted.load(ordering: .relaxed)
                #expect(whilePaused >= 9 && whilePaused <= 12, "\(whilePaused) posts went out while Redis was paused")
                await poster.value
                try await eventually("the last post to take effect", within: .seconds(10)) {
                    try await admin.send(RedisCommand("EXISTS", "k39")).int == 1
                }
                #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
            }
        }
    }

    /// Through `sender.post` on a cluster node: a poster that outruns a paused
    /// Redis loses nothing and its messages arrive in order.
    @Test func senderPostsWaitInsteadOfDropping() async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: .pubSub, backend: .single), configure: { configuration in
            configuration.limits.postPacingBytes = 1 << 20
            configuration.limits.maxPostBytesInFlight = 2 << 20
            configuration.webSocket.maxOutboundBufferBytes = 16 << 20  // bob gets 4 MB in a burst after the pause
        }) { cluster in
            let bob = try await ClusterClient.connect(cluster["b"], uid: "bob")
            let admin = RedisConnection(configuration: .testing(cluster.redis))
            try await withRunning([admin]) { () async throws in
                try await admin.waitUntilConnected(timeout: .seconds(5))
                // Redis answers nobody for 1.2 s (under the nodes' 2 s health-check timeout).
                _ = try await admin.send(RedisCommand("CLIENT", "PAUSE", "1200", "ALL"))
                let sender = cluster["a"].sender
                let poster = Task {
                    for index in 0..<40 {
                        var payload = ByteBuffer(repeating: 0x61, count: 100_000)
                        payload.setString(String(format: "%04d", index), at: 0)
                        try await sender.post(uid: "bob", .binary(payload))
                    }
                }
                // Without pacing, 20 of the 40 would pass the 2 MiB bound and be dropped.
                try await poster.value
                for index in 0..<40 {
                    let frame = try await bob.next()
                    #expect(frame.payload.count == 100_000 && frame.payload.prefix(4).elementsEqual(Array(String(format: "%04d", index).utf8)),
                            "message \(index)")
                }
                #expect(cluster["a"].counters.dropped(.redisBacklog) == 0)
                #expect(cluster["a"].counters.dropped(.postFailed) == 0)
            }
        }
    }
}
