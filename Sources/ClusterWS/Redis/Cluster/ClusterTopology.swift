/// What a Redis Cluster client knows of the cluster: each slot's master and
/// replica count, which masters' links are down, and the bytes of commands
/// waiting for a down shard. A value: ``RedisClusterClient`` feeds it events
/// (a slot map read, a link up or down, a `MOVED`) and performs what it answers.
package struct ClusterTopology {
    package typealias Address = RedisConfiguration.Address

    /// One `CLUSTER SLOTS` answer.
    package struct SlotMap: Sendable, Equatable {
        /// Each slot's master.
        package var slots: [Address?] = Array(repeating: nil, count: RedisClusterSlot.count)
        /// Each master's replicas.
        package var replicasOf: [Address: Set<Address>] = [:]

        package init() {}
    }

    private(set) var slots: [Address?] = Array(repeating: nil, count: RedisClusterSlot.count)
    /// Each master's replicas, as the last map listed them.
    private(set) var replicasOf: [Address: Set<Address>] = [:]
    /// Masters of the map whose link was up and dropped, until it is up again
    /// or the map no longer lists them.
    private(set) var down: Set<Address> = []
    /// Bumped by every change a waiting command may care about.
    private(set) var generation = 0
    /// Slot maps applied so far.
    private(set) var maps = 0
    private var waitingBytes: [Address: Int] = [:]

    /// Where a command for `slot` (any master for `nil`) goes.
    enum Route: Equatable {
        /// The master is known and its link is not down.
        case send(Address)
        /// The master is down (`Address`) or no master is known (`nil`):
        /// wait for the map or the link to change.
        case wait(Address?)
    }

    func route(slot: Int?) -> Route {
        guard let slot else {
            if let up = slots.lazy.compactMap({ $0 }).first(where: { !down.contains($0) }) { return .send(up) }
            return .wait(slots.lazy.compactMap { $0 }.first)
        }
        guard let owner = slots[slot] else { return .wait(nil) }
        return down.contains(owner) ? .wait(owner) : .send(owner)
    }

    /// Whether some master of the map is down: the client re-reads the map
    /// until none is (the replica was promoted, or the master came back).
    var needsHealing: Bool { !down.isEmpty }

    /// A fresh `CLUSTER SLOTS` map. Masters that left it are no longer down.
    mutating func apply(_ map: SlotMap) {
        maps += 1
        if map.slots != slots || map.replicasOf != replicasOf { generation &+= 1 }
        slots = map.slots
        replicasOf = map.replicasOf
        let newSlots = map.slots
        let before = down.count
        down.formIntersection(newSlots.compactMap { $0 })
        if down.count != before { generation &+= 1 }
    }

    /// How many replicas the map lists for `slot`'s master.
    func replicaCount(ofSlot slot: Int) -> Int {
        slots[slot].flatMap { replicasOf[$0]?.count } ?? 0
    }

    /// The masters of the current map.
    var masters: Set<Address> { Set(slots.compactMap { $0 }) }

    /// A `MOVED` answer: `slot` is served by `address` now.
    mutating func moved(slot: Int, to address: Address) {
        guard slots[slot] != address else { return }
        slots[slot] = address
        generation &+= 1
    }

    /// The link to `address` became ready (`up`) or dropped. Only masters of
    /// the current map are marked down. Returns whether anything changed.
    mutating func link(_ address: Address, up: Bool) -> Bool {
        let changed: Bool
        if up {
            changed = down.remove(address) != nil
        } else {
            changed = slots.contains(address) && down.insert(address).inserted
        }
        if changed { generation &+= 1 }
        return changed
    }

    /// Reserves `bytes` of the wait budget for `address` (`nil`: no master
    /// known); `false` when that shard already holds `limit` bytes.
    mutating func reserve(_ bytes: Int, for address: Address?, limit: Int) -> Bool {
        let key = address ?? Address(host: "", port: 0)
        let held = waitingBytes[key, default: 0]
        guard held == 0 || held + bytes <= limit else { return false }
        waitingBytes[key] = held + bytes
        return true
    }

    /// Gives back what ``reserve(_:for:limit:)`` took.
    mutating func release(_ bytes: Int, for address: Address?) {
        let key = address ?? Address(host: "", port: 0)
        let left = waitingBytes[key, default: 0] - bytes
        waitingBytes[key] = left > 0 ? left : nil
    }

    /// Bytes waiting for `address`'s shard (for tests).
    func waiting(for address: Address?) -> Int { waitingBytes[address ?? Address(host: "", port: 0), default: 0] }
}
