@testable import ClusterWS
import Synchronization
import Testing

/// The Redis Cluster client's view of the cluster, driven as a value.
@Suite("ClusterTopology", .timeLimit(.minutes(1)))
struct ClusterTopologyTests {
    typealias Address = RedisConfiguration.Address
    let a = Address(host: "127.0.0.1", port: 7001)
    let b = Address(host: "127.0.0.1", port: 7002)
    let c = Address(host: "127.0.0.1", port: 7003)

    /// Slots 0…8191 on `first` (with `replicaOfFirst` as its replica), the rest on `second`.
    func map(_ first: Address, _ second: Address, replicaOfFirst: Address? = nil) -> ClusterTopology.SlotMap {
        var map = ClusterTopology.SlotMap()
        map.slots = (0..<RedisClusterSlot.count).map { $0 < 8_192 ? first : second }
        map.replicasOf = [first: replicaOfFirst.map { [$0] } ?? [], second: []]
        return map
    }

    @Test func commandsGoToTheOwnerUntilItsLinkDrops() {
        var topology = ClusterTopology()
        #expect(topology.route(slot: 5) == .wait(nil))  // no map yet
        topology.apply(map(a, b))
        #expect(topology.route(slot: 5) == .send(a))
        #expect(topology.route(slot: 9_000) == .send(b))
        #expect(!topology.needsHealing)

        let generation = topology.generation
        let changed1 = topology.link(a, up: false)
        #expect(changed1)
        #expect(topology.generation > generation)
        #expect(topology.route(slot: 5) == .wait(a))
        #expect(topology.route(slot: 9_000) == .send(b))  // the other shard is untouched
        #expect(topology.route(slot: nil) == .send(b))  // keyless commands avoid the down master
        #expect(topology.needsHealing)
    }

    @Test func aPromotionEndsTheWait() {
        var topology = ClusterTopology()
        topology.apply(map(a, b))
        _ = topology.link(a, up: false)
        // The same map again (the replica not promoted yet): still down.
        topology.apply(map(a, b))
        #expect(topology.route(slot: 5) == .wait(a))
        // The replica c took over: a is out of the map, so no longer down.
        let generation = topology.generation
        topology.apply(map(c, b))
        #expect(topology.generation > generation)
        #expect(topology.route(slot: 5) == .send(c))
        #expect(!topology.needsHealing)
        // The old master's connection closing later changes nothing.
        let changed2 = topology.link(a, up: false)
        #expect(!changed2)
    }

    @Test func aMasterThatComesBackIsUsedAgain() {
        var topology = ClusterTopology()
        topology.apply(map(a, b))
        _ = topology.link(a, up: false)
        let changed3 = topology.link(a, up: true)
        #expect(changed3)
        #expect(topology.route(slot: 5) == .send(a))
        let changed4 = topology.link(a, up: true)
        #expect(!changed4)  // nothing new
    }

    @Test func movedUpdatesOneSlot() {
        var topology = ClusterTopology()
        topology.apply(map(a, b))
        let generation = topology.generation
        topology.moved(slot: 5, to: b)
        #expect(topology.route(slot: 5) == .send(b))
        #expect(topology.route(slot: 6) == .send(a))
        #expect(topology.generation > generation)
    }

    @Test func theMapKeepsEachMastersReplicas() {
        var topology = ClusterTopology()
        topology.apply(map(a, b, replicaOfFirst: c))
        #expect(topology.replicasOf[a] == [c])
        #expect(topology.replicasOf[b] == [])
        #expect(topology.masters == [a, b])
    }

    @Test func bytesWaitingForAShardAreBounded() {
        var topology = ClusterTopology()
        let changed5 = topology.reserve(600, for: a, limit: 1_000)
        #expect(changed5)
        let changed6 = topology.reserve(400, for: a, limit: 1_000)
        #expect(changed6)
        let changed7 = topology.reserve(1, for: a, limit: 1_000)
        #expect(!changed7)
        let changed8 = topology.reserve(1_000, for: b, limit: 1_000)
        #expect(changed8)  // another shard has its own budget
        topology.release(600, for: a)
        #expect(topology.waiting(for: a) == 400)
        let changed9 = topology.reserve(600, for: a, limit: 1_000)
        #expect(changed9)
        // One command larger than the budget may still wait on its own.
        let changed10 = topology.reserve(5_000, for: c, limit: 1_000)
        #expect(changed10)
        let changed11 = topology.reserve(1, for: c, limit: 1_000)
        #expect(!changed11)
        topology.release(5_000, for: c)
        #expect(topology.waiting(for: c) == 0)
    }
}

@Suite("PostLanes", .timeLimit(.minutes(1)))
struct PostLanesTests {
    /// Posts of one lane run in call order; a lane stuck behind a slow post
    /// does not hold up another lane.
    @Test func lanesKeepOrderAndDoNotWaitForEachOther() async throws {
        let lanes = PostLanes()
        let log = LockedLog()
        let (gate, open) = AsyncStream.makeStream(of: Void.self)
        lanes.append(lane: 1) {
            for await _ in gate { break }  // stuck until opened
            log.add("1a")
        }
        lanes.append(lane: 1) { log.add("1b") }
        lanes.append(lane: 2) { log.add("2a") }
        lanes.append(lane: 2) { log.add("2b") }
        try await eventually("lane 2 ran") { log.entries == ["2a", "2b"] }
        open.yield()
        try await eventually("lane 1 ran") { log.entries.count == 4 }
        #expect(log.entries == ["2a", "2b", "1a", "1b"])
        try await eventually("idle lanes are forgotten") { lanes.activeLanes == 0 }
    }
}

final class LockedLog: Sendable {
    private let storage = Mutex<[String]>([])
    func add(_ entry: String) { storage.withLock { $0.append(entry) } }
    var entries: [String] { storage.withLock { $0 } }
}
