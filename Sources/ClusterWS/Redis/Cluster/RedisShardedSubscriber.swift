package import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Pub/sub on a Redis Cluster: sharded channels (`SSUBSCRIBE`) on the master
/// that owns each channel's slot, one subscriber connection per Redis node
/// that is needed, and classic channels (`SUBSCRIBE`, carried to every node
/// by the cluster bus) on one connection to any node. Every message lands in
/// one buffer, read as ``messages``.
///
/// With `standby`, each sharded channel is also subscribed on one replica of
/// its master. Redis passes a shard's messages to every node of the shard, so
/// the replica's connection receives every message a second time — and when
/// the replica is promoted (a manual `CLUSTER FAILOVER`, or after its master
/// died) it is already subscribed: no message published to the new master
/// is missed while the subscriptions move. The consumer drops the second
/// copies (envelopes carry ids; see `RecentMessageIDs`).
///
/// It places channels by itself: each round compares where every channel
/// should be (the map's master, and a replica with `standby`) with where it
/// is, subscribes what is missing, then unsubscribes what is no longer
/// needed. A round runs when Redis drops a subscription (a `sunsubscribe`
/// push: its slot moved or the master was demoted), when the client's
/// topology changes, every 100 ms while a connection is down, and every
/// 500 ms otherwise. The classic connection moves to another node when its
/// node stays unreachable.
package final class RedisShardedSubscriber: Sendable {
    package typealias Address = RedisConfiguration.Address

    private let cluster: RedisClusterClient
    private let logger: Logger
    private let buffer: PubSubBuffer
    private let standby: Bool
    /// Every message of every subscribed channel.
    package let messages: PubSubMessages

    private struct State {
        var sharded: Set<String> = []
        var classic: Set<String> = []
        var shards: [Address: RedisSubscriber] = [:]
        var classicSubscriber: (Address, RedisSubscriber)?
        var shuttingDown = false
    }

    private let state = Mutex(State())
    private let added: AsyncStream<RedisSubscriber>
    private let addedContinuation: AsyncStream<RedisSubscriber>.Continuation
    private let wakeRequested = Atomic<Bool>(false)
    private let moves = Atomic<Int>(0)

    /// - Parameter standby: also subscribe each sharded channel on a replica of its master.
    package init(cluster: RedisClusterClient, buffer limits: PubSubBuffer.Limits = .init(),
                 onOverflow: (@Sendable (Int) -> Void)? = nil, standby: Bool = false,
                 logger: Logger = Logger(label: "clusterws.redis.sharded-subscriber")) {
        self.cluster = cluster
        self.logger = logger
        self.standby = standby
        buffer = PubSubBuffer(limits: limits, onOverflow: onOverflow)
        messages = PubSubMessages(buffer: buffer)
        (added, addedContinuation) = AsyncStream.makeStream()
    }

    /// Messages dropped because the consumer fell too far behind.
    package var droppedMessages: Int { buffer.dropped }

    /// Channel subscriptions placed on a node by a placement round (a slot
    /// moved, a replica promoted, a subscription dropped by Redis), since the start.
    package var channelMoves: Int { moves.load(ordering: .relaxed) }

    /// Runs the shard connections (and every one added later) and the watcher
    /// that places channels, until ``shutdown()``; then ends ``messages``.
    package func runUntilShutdown() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.watch() }
            for await subscriber in added {
                group.addTask { await subscriber.runUntilShutdown() }
            }
        }
        buffer.finish()
    }

    /// Unsubscribes nothing, closes every connection; ``runUntilShutdown()`` returns after.
    package func shutdown() async {
        let subscribers = state.withLock { state in
            state.shuttingDown = true
            return Array(state.shards.values) + (state.classicSubscriber.map { [$0.1] } ?? [])
        }
        for subscriber in subscribers { await subscriber.shutdown() }
        addedContinuation.finish()
    }

    /// Whether every needed connection is up: those to masters and the
    /// classic one (a standby replica that is down does not count).
    package func isConnected() async -> Bool {
        let masters = cluster.masters
        let subscribers = state.withLock { state in
            state.shards.filter { masters.contains($0.key) }.map(\.value) + (state.classicSubscriber.map { [$0.1] } ?? [])
        }
        for subscriber in subscribers where await !subscriber.link.isReady { return false }
        return true
    }

    // MARK: Subscribing

    /// Subscribes sharded channels, each on its slot's master (and a replica
    /// with `standby`); returns once the master confirmed them (when connected).
    package func subscribe(sharded names: [String]) async throws {
        let new = state.withLock { state in names.filter { state.sharded.insert($0).inserted } }
        guard !new.isEmpty else { return }
        for name in new where cluster.owner(ofSlot: RedisClusterSlot.of(name)) == nil {
            await cluster.refreshSlots()
            break
        }
        var placement: [Address: [String]] = [:]
        var owners: Set<Address> = []
        for name in new {
            guard let owner = cluster.owner(ofSlot: RedisClusterSlot.of(name)) else {
                state.withLock { state in for name in new { state.sharded.remove(name) } }
                throw RedisError.notConnected
            }
            owners.insert(owner)
            for address in places(ofSlotOwnedBy: owner) { placement[address, default: []].append(name) }
        }
        for (address, channels) in placement {
            let subscriber = shard(address)
            do {
                try await subscriber.subscribe(channels)
            } catch RedisError.reply {
                // A stale map (MOVED): the next round places them from a fresh one.
                await subscriber.forget(channels)
                wakeRequested.store(true, ordering: .relaxed)
                continue
            }
            guard owners.contains(address) else { continue }
            // A new connection subscribes when it connects: wait for that (so a message
            // published after this call is received), but a slow master does not fail the
            // caller: the channels stay wanted and are subscribed when it connects.
            do {
                try await subscriber.waitUntilConnected(after: 0, timeout: cluster.configuration.connectTimeout)
            } catch {
                logger.warning("a shard is slow to connect; its channels are subscribed when it does",
                               metadata: ["shard": "\(address)", "error": "\(error)"])
            }
        }
    }

    /// Unsubscribes sharded channels, wherever they are subscribed.
    package func unsubscribe(sharded names: [String]) async throws {
        let (gone, shards) = state.withLock { state in
            (names.filter { state.sharded.remove($0) != nil }, Array(state.shards.values))
        }
        guard !gone.isEmpty else { return }
        for shard in shards {
            let here = await shard.subscribedChannels
            let leaving = gone.filter(here.contains)
            if !leaving.isEmpty { try await shard.unsubscribe(leaving) }
        }
    }

    /// Subscribes classic channels (`SUBSCRIBE`, any node).
    package func subscribe(classic names: [String]) async throws {
        state.withLock { $0.classic.formUnion(names) }
        try await classicSubscriber().subscribe(names)
    }

    /// Where a channel of a slot that `owner` serves is subscribed: the master,
    /// and with `standby` the first of its replicas (in address order, so every
    /// round picks the same one).
    private func places(ofSlotOwnedBy owner: Address) -> [Address] {
        guard standby, let replica = cluster.replicas(of: owner).min(by: { ($0.host, $0.port) < ($1.host, $1.port) }) else {
            return [owner]
        }
        return [owner, replica]
    }

    private func shard(_ address: Address) -> RedisSubscriber {
        let (subscriber, isNew) = state.withLock { state -> (RedisSubscriber, Bool) in
            if let existing = state.shards[address] { return (existing, false) }
            let subscriber = RedisSubscriber(
                configuration: cluster.configuration.node(address), eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
                logger: logger, sharded: true, sharing: buffer,
                onShardUnsubscribed: { [weak self] channel in self?.dropped(channel, by: address) })
            state.shards[address] = subscriber
            return (subscriber, true)
        }
        if isNew { addedContinuation.yield(subscriber) }
        return subscriber
    }

    private func classicSubscriber() async throws -> RedisSubscriber {
        if let (_, existing) = state.withLock({ $0.classicSubscriber }) { return existing }
        await cluster.refreshSlots()
        guard let address = (0..<RedisClusterSlot.count).lazy.compactMap({ self.cluster.owner(ofSlot: $0) }).first
                ?? cluster.configuration.clusterSeeds.first else { throw RedisError.notConnected }
        return replaceClassic(on: address)
    }

    private func replaceClassic(on address: Address) -> RedisSubscriber {
        let subscriber = RedisSubscriber(configuration: cluster.configuration.node(address),
                                         eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
                                         logger: logger, sharing: buffer)
        let channels = state.withLock { state -> Set<String> in
            state.classicSubscriber = (address, subscriber)
            return state.classic
        }
        addedContinuation.yield(subscriber)
        if !channels.isEmpty { Task { try? await subscriber.subscribe(Array(channels)) } }
        return subscriber
    }

    /// Redis dropped `channel` on `address` (its slot moved, its master was
    /// demoted) — or confirmed an unsubscribe we asked for, in which case the
    /// connection no longer wants it and nothing happens. A drop is forgotten
    /// on that connection; the next round subscribes the channel again where
    /// it belongs.
    private func dropped(_ channel: String, by address: Address) {
        guard let shard = state.withLock({ $0.sharded.contains(channel) ? $0.shards[address] : nil }) else { return }
        Task {
            guard await shard.subscribedChannels.contains(channel) else { return }
            self.logger.debug("redis dropped a subscription", metadata: ["node": "\(address)", "channel": "\(channel)"])
            await shard.forget([channel])
            self.wakeRequested.store(true, ordering: .relaxed)
        }
    }

    // MARK: Watching

    /// Every 500 ms, every 100 ms while a connection is down or a round left
    /// something undone, and within 10 ms of a dropped channel or a change of
    /// the client's topology (a master down, a new map): a placement round.
    private func watch() async {
        var tick = 0
        var seen = cluster.topologyGeneration
        var unhealthy = false
        while !state.withLock({ $0.shuttingDown }) {
            try? await Task.sleep(for: .milliseconds(10))
            tick += 1
            let generation = cluster.topologyGeneration
            let changed = generation != seen
            seen = generation
            if wakeRequested.exchange(false, ordering: .relaxed) || changed || tick % 50 == 0 || (unhealthy && tick % 10 == 0) {
                unhealthy = await reconcile()
            }
        }
    }

    /// Where every wanted channel should be subscribed, per node, by the
    /// current map; and whether a standby is missing (the map lists no replica
    /// for some master: a fresh cluster's first map, a replica that died).
    private func desiredPlacement() -> (placement: [Address: Set<String>], standbyMissing: Bool) {
        var desired: [Address: Set<String>] = [:]
        var placesOfOwner: [Address: [Address]] = [:]
        for channel in state.withLock({ $0.sharded }) {
            guard let owner = cluster.owner(ofSlot: RedisClusterSlot.of(channel)) else { continue }
            let places = placesOfOwner[owner] ?? places(ofSlotOwnedBy: owner)
            placesOfOwner[owner] = places
            for address in places { desired[address, default: []].insert(channel) }
        }
        return (desired, standby && placesOfOwner.values.contains { $0.count < 2 })
    }

    /// Where each channel is subscribed now, per node.
    private func currentPlacement() async -> [Address: Set<String>] {
        var current: [Address: Set<String>] = [:]
        for (address, shard) in state.withLock({ $0.shards }) { current[address] = await shard.subscribedChannels }
        return current
    }

    /// One placement round. Returns whether something is still unhealthy (a
    /// connection down, a subscription refused).
    @discardableResult
    private func reconcile() async -> Bool {
        let (shards, classic) = state.withLock { ($0.shards, $0.classicSubscriber) }
        var unhealthy = false
        for (_, shard) in shards where await shard.link.channel == nil { unhealthy = true }
        if let (_, subscriber) = classic, await subscriber.link.channel == nil { unhealthy = true }
        // The client's map may already know of a move (a publisher followed MOVED),
        // or Redis dropped a subscription: either way a placement differs.
        let before = await currentPlacement().filter { !$0.value.isEmpty }
        let expected = desiredPlacement()
        // A missing standby is looked for again in the next map (at most every 500 ms).
        guard unhealthy || expected.standbyMissing || expected.placement != before else { return false }
        await cluster.refreshSlots()
        let desired = desiredPlacement().placement
        let current = await currentPlacement()
        // Subscribed where they are missing first, then unsubscribed where they are no
        // longer wanted, so a channel is never without a subscription in between.
        var placed = 0
        for (address, channels) in desired {
            let missing = channels.subtracting(current[address] ?? [])
            guard !missing.isEmpty else { continue }
            let shard = shard(address)
            logger.debug("subscribing", metadata: ["node": "\(address)", "channels": "\(missing.count)"])
            do {
                try await shard.subscribe(Array(missing))
                placed += missing.count
            } catch {
                // Refused (the map was stale: MOVED) or the link dropped: next round.
                await shard.forget(Array(missing))
                unhealthy = true
            }
        }
        for (address, channels) in current {
            let leaving = channels.subtracting(desired[address] ?? [])
            guard !leaving.isEmpty, let shard = state.withLock({ $0.shards[address] }) else { continue }
            logger.debug("unsubscribing", metadata: ["node": "\(address)", "channels": "\(leaving.count)"])
            if await shard.link.channel != nil {
                do { try await shard.unsubscribe(Array(leaving)) } catch { await shard.forget(Array(leaving)) }
            } else {
                await shard.forget(Array(leaving))
            }
        }
        if placed > 0 {
            moves.add(placed, ordering: .relaxed)
            logger.info("placed sharded subscriptions", metadata: ["channels": "\(placed)"])
        }
        // The classic connection: another node if its own stays down.
        if let (address, subscriber) = classic, await subscriber.link.channel == nil,
           let other = (0..<RedisClusterSlot.count).lazy.compactMap({ self.cluster.owner(ofSlot: $0) }).first(where: { $0 != address }) {
            await subscriber.shutdown()
            _ = replaceClassic(on: other)
        }
        // Connections nobody needs any more are closed.
        let idle = state.withLock { state -> [RedisSubscriber] in
            let gone = state.shards.keys.filter { desired[$0]?.isEmpty ?? true }
            return gone.compactMap { state.shards.removeValue(forKey: $0) }
        }
        for subscriber in idle { await subscriber.shutdown() }
        return unhealthy
    }
}
