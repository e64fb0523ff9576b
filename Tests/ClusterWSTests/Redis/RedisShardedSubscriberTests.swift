@testable import ClusterWS
import EmbeddedRedis
import NIOCore
import Testing

/// Runs `body` with a cluster, a cluster client and a running sharded subscriber.
func withShardedSubscriber<T: Sendable>(
    standby: Bool = false,
    _ body: @escaping @Sendable (RedisClusterProcess, RedisClusterClient, RedisShardedSubscriber) async throws -> T
) async throws -> T {
    try await withRedisCluster { cluster, client in
        let subscriber = RedisShardedSubscriber(cluster: client, standby: standby)
        let running = Task { await subscriber.runUntilShutdown() }
        defer { Task { await subscriber.shutdown() }; running.cancel() }
        return try await body(cluster, client, subscriber)
    }
}

/// Publishes `payload` on `channel` until the subscriber receives it (pub/sub
/// loses what is published while a subscription moves); returns the time it took.
func publishUntilReceived(_ client: RedisClusterClient, _ subscriber: RedisShardedSubscriber, channel: String,
                          within limit: Duration = .seconds(20)) async throws -> Duration {
    let clock = ContinuousClock()
    let start = clock.now
    return try await within(limit, "a message on \(channel)") {
        while true {
            _ = try? await client.send(RedisCommand("SPUBLISH", .string(channel), "ping"))
            let batch = try? await within(.milliseconds(200), "a batch") { await subscriber.messages.nextBatch() }
            if batch?.contains(where: { $0.channel == channel }) == true { return clock.now - start }
        }
    }
}

@Suite("Sharded pub/sub on a real 3+3 cluster", .serialized, .timeLimit(.minutes(5)))
struct RedisShardedSubscriberTests {
    @Test func shardedAndClassicChannelsAreReceivedFromEveryShard() async throws {
        try await withShardedSubscriber { cluster, client, subscriber in
            let channels = (0..<30).map { "ch:\($0)" }
            try await subscriber.subscribe(sharded: channels)
            try await subscriber.subscribe(classic: ["everyone"])
            let owners = Set(channels.compactMap { client.owner(ofSlot: RedisClusterSlot.of($0)) })
            #expect(owners.count == 3)  // the channels span every master
            for channel in channels {
                #expect(try await client.send(RedisCommand("SPUBLISH", .string(channel), .string("to \(channel)"))).int == 1)
            }
            _ = try await client.send(RedisCommand("PUBLISH", "everyone", "hello all"))
            let received = try await within(.seconds(10), "31 messages") {
                var received: [String: String] = [:]
                while received.count < 31 {
                    for message in await subscriber.messages.nextBatch() { received[message.channel] = String(buffer: message.payload) }
                }
                return received
            }
            #expect(received["ch:7"] == "to ch:7" && received["everyone"] == "hello all")
            #expect(await subscriber.isConnected())
        }
    }

    /// The channel's slot moves to another master: Redis drops the
    /// subscription, and the subscriber takes it up on the new owner by itself.
    @Test func aSubscriptionFollowsItsSlotToAnotherMaster() async throws {
        try await withShardedSubscriber { cluster, client, subscriber in
            let channel = "moving:channel"
            let slot = RedisClusterSlot.of(channel)
            try await subscriber.subscribe(sharded: [channel])
            _ = try await publishUntilReceived(client, subscriber, channel: channel)
            let source = try #require(client.owner(ofSlot: slot))
            let target = try #require(try await cluster.masterPorts().first { $0 != source.port })
            let targetID = try await startMigration(of: slot, from: source.port, to: target)
            try await assign(slot: slot, to: targetID, in: cluster)
            let pause = try await publishUntilReceived(client, subscriber, channel: channel)
            print("slot move: messages flow again after \(pause)")
            #expect(subscriber.channelMoves >= 1)
            #expect(client.owner(ofSlot: slot)?.port == target)
        }
    }

    /// The master of a subscribed channel is killed; after its replica takes
    /// over, the subscription is on the new master and messages flow again.
    @Test func aSubscriptionSurvivesAFailover() async throws {
        try await withShardedSubscriber { cluster, client, subscriber in
            let channel = "failover:channel"
            try await subscriber.subscribe(sharded: [channel])
            _ = try await publishUntilReceived(client, subscriber, channel: channel)
            let owner = try #require(client.owner(ofSlot: RedisClusterSlot.of(channel)))
            await cluster.nodes.first { $0.port == owner.port }?.stop(crash: true)
            let pause = try await publishUntilReceived(client, subscriber, channel: channel, within: .seconds(30))
            print("failover: sharded messages flow again after \(pause)")
            #expect(pause < .seconds(20))
            #expect(client.owner(ofSlot: RedisClusterSlot.of(channel)).map { $0.port != owner.port } == true)
        }
    }

    /// With standby subscriptions a channel is subscribed on its master and
    /// on the master's replica: every message arrives twice (Redis passes a
    /// shard's messages to each of its nodes). The master's `SPUBLISH` count
    /// stays 1 (it counts its own subscribers only). A dead replica leaves
    /// the subscriber connected (only masters count) and messages flowing.
    @Test func standbySubscriptionsHearEveryMessageOnTheReplicaToo() async throws {
        try await withShardedSubscriber(standby: true) { cluster, client, subscriber in
            let channel = "standby:channel"
            try await subscriber.subscribe(sharded: [channel])
            let copies = try await within(.seconds(10), "two copies of one message") {
                var sequence = 0
                while true {
                    sequence += 1
                    let payload = "m\(sequence)"
                    let subscribers = try await client.send(RedisCommand("SPUBLISH", .string(channel), .string(payload))).int
                    #expect(subscribers == 1)
                    var copies = 0
                    let deadline = ContinuousClock.now + .milliseconds(300)
                    while ContinuousClock.now < deadline, copies < 2 {
                        let batch = try? await within(.milliseconds(100), "a batch") { await subscriber.messages.nextBatch() }
                        copies += batch?.filter { String(buffer: $0.payload) == payload }.count ?? 0
                    }
                    if copies == 2 { return copies }
                }
            }
            #expect(copies == 2)
            let owner = try #require(client.owner(ofSlot: RedisClusterSlot.of(channel)))
            let replica = try await FailoverTraffic.replica(of: owner.port, in: cluster)
            await cluster.nodes.first { $0.port == replica }?.stop(crash: true)
            try await Task.sleep(for: .milliseconds(300))
            #expect(await subscriber.isConnected())
            _ = try await publishUntilReceived(client, subscriber, channel: channel, within: .seconds(5))
        }
    }
}
