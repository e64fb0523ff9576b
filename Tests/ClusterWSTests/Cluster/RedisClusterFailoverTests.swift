@testable import ClusterWS
import EmbeddedRedis
import NIOCore
import Synchronization
import Testing

@Suite("ClusterWS on a Redis Cluster: failover while traffic flows", .serialized)
struct RedisClusterFailoverTests {
    /// Node a sends to alice (on node b) every 20 ms while the master that owns
    /// alice's channel is killed. Delivery resumes by itself once the replica
    /// has taken over; what was lost in between is measured (pub/sub is
    /// at-most-once), and nothing sent after the recovery is lost.
    @Test func deliveryResumesAfterTheChannelsMasterIsKilled() async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: .pubSub, backend: .cluster)) { cluster in
            let redisCluster = try #require(cluster.redisCluster)
            let alice = try await ClusterClient.connect(cluster["b"], uid: "alice")
            let client = try #require(cluster["a"].redis as? RedisClusterClient)
            let owner = try #require(client.owner(ofSlot: RedisClusterSlot.of("test:user:alice")))

            let received = Mutex<[Int: ContinuousClock.Instant]>([:])
            let reader = Task {
                while !Task.isCancelled {
                    guard let frame = try? await alice.raw.readFrame(), let number = Int(frame.text) else { continue }
                    received.withLock { $0[number] = ContinuousClock.now }
                }
            }
            defer { reader.cancel() }
            let sent = Mutex<[Int: ContinuousClock.Instant]>([:])
            let clock = ContinuousClock()
            var number = 0
            func sendNext() async {
                sent.withLock { $0[number] = clock.now }
                await cluster["a"].sender.post(uid: "alice", .text(String(number)))
                number += 1
                try? await Task.sleep(for: .milliseconds(20))
            }
            for _ in 0..<25 { await sendNext() }  // before: everything arrives
            try await eventually("the first messages") { received.withLock { $0.count } >= 20 }

            let killedAt = clock.now
            let lastBefore = number - 1
            await redisCluster.nodes.first { $0.port == owner.port }?.stop(crash: true)
            // Keep sending until 50 messages in a row sent after the kill have arrived.
            var resumedAt: ContinuousClock.Instant?
            while clock.now - killedAt < .seconds(40) {
                await sendNext()
                let (arrived, first) = received.withLock { r -> (Int, ContinuousClock.Instant?) in
                    let after = r.filter { $0.key > lastBefore }
                    return (after.count, after.values.min())
                }
                if arrived >= 50 { resumedAt = first; break }
            }
            let pause = try #require(resumedAt) - killedAt
            try await Task.sleep(for: .milliseconds(500))
            let (lost, lostAfterRecovery) = received.withLock { r -> (Int, Int) in
                let resumedNumber = r.filter { $0.key > lastBefore }.keys.min() ?? number
                let missing = (0..<number).filter { r[$0] == nil }
                return (missing.count, missing.filter { $0 > resumedNumber }.count)
            }
            print("failover with traffic: delivery resumed after \(pause); lost \(lost) of \(number) messages (all in the pause)")
            #expect(pause < .seconds(20))
            #expect(lostAfterRecovery == 0)
            #expect(client.owner(ofSlot: RedisClusterSlot.of("test:user:alice")).map { $0.port != owner.port } == true)
        }
    }

    @Test func theQueueDriverIsRefusedOnARedisClusterWithAClearError() throws {
        var configuration = ClusterConfiguration(redisURL: "redis+cluster://127.0.0.1:7000,127.0.0.1:7001", serverID: "x")
        configuration.driver = .queue
        #expect(throws: ClusterError.self) { try ClusterNode(configuration: configuration) }
        configuration.driver = .pubSub
        #expect(throws: Never.self) { try ClusterNode(configuration: configuration) }
    }
}
