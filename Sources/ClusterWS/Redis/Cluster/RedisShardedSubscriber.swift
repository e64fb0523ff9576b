package import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Pub/sub on a Redis Cluster: sharded channels (`SSUBSCRIBE`) on the master
/// that owns each channel's slot, one subscriber connection per master that
/// is needed, and classic channels (`SUBSCRIBE`, carried to every node by the
/// cluster bus) on one connection to any node. Every message lands in one
/// buffer, read as ``messages``.
///
/// It moves channels by itself: when Redis drops a sharded subscription (its
/// slot moved: a `sunsubscribe` push) and when a shard's connection is down
/// (a failover), it re-reads the slot map and subscribes the channels on
/// their current owners. The classic connection moves to another node when
/// its node stays unreachable. Messages published meanwhile are not seen
/// (pub/sub is at-most-once).
package final class RedisShardedSubscriber: Sendable {
    package typealias Address = RedisConfiguration.Address

    private let cluster: RedisClusterClient
    private let logger: Logger
    private let buffer: PubSubBuffer
    /// Every message of every subscribed channel.
    package let messages: PubSubMessages

    private struct State {
        var sharded: [String: Address] = [:]          // channel → the shard it is subscribed on
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

    package init(cluster: RedisClusterClient, buffer limits: PubSubBuffer.Limits = .init(),
                 onOverflow: (@Sendable (Int) -> Void)? = nil,
                 logger: Logger = Logger(label: "clusterws.redis.sharded-subscriber")) {
        self.cluster = cluster
        self.logger = logger
        buffer = PubSubBuffer(limits: limits, onOverflow: onOverflow)
        messages = PubSubMessages(buffer: buffer)
        (added, addedContinuation) = AsyncStream.makeStream()
    }

    /// Messages dropped because the consumer fell too far behind.
    package var droppedMessages: Int { buffer.dropped }

    /// Channels moved to another shard since the start (for tests and metrics).
    package var channelMoves: Int { moves.load(ordering: .relaxed) }

    /// Runs the shard connections (and every one added later) and the watcher
    /// that moves channels, until ``shutdown()``; then ends ``messages``.
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

    /// Whether every needed connection is up.
    package func isConnected() async -> Bool {
        let subscribers = state.withLock { Array($0.shards.values) + ($0.classicSubscriber.map { [$0.1] } ?? []) }
        for subscriber in subscribers where await !subscriber.link.isReady { return false }
        return true
    }

    // MARK: Subscribing

    /// Subscribes sharded channels, each on its slot's master; returns once
    /// Redis confirmed them (when the shards are connected).
    package func subscribe(sharded names: [String]) async throws {
        let new = state.withLock { state in names.filter { state.sharded[$0] == nil } }
        guard !new.isEmpty else { return }
        try await place(new)
    }

    /// Unsubscribes sharded channels.
    package func unsubscribe(sharded names: [String]) async throws {
        let placed = state.withLock { state -> [Address: [String]] in
            var placed: [Address: [String]] = [:]
            for name in names { if let shard = state.sharded.removeValue(forKey: name) { placed[shard, default: []].append(name) } }
            return placed
        }
        for (address, channels) in placed {
            if let shard = state.withLock({ $0.shards[address] }) { try await shard.unsubscribe(channels) }
        }
    }

    /// Subscribes classic channels (`SUBSCRIBE`, any node).
    package func subscribe(classic names: [String]) async throws {
        state.withLock { $0.classic.formUnion(names) }
        try await classicSubscriber().subscribe(names)
    }

    /// Subscribes `names` on the shards that own them now.
    private func place(_ names: [String]) async throws {
        var owners: [Address: [String]] = [:]
        for name in names {
            let slot = RedisClusterSlot.of(name)
            if cluster.owner(ofSlot: slot) == nil { await cluster.refreshSlots() }
            guard let owner = cluster.owner(ofSlot: slot) else { throw RedisError.notConnected }
            owners[owner, default: []].append(name)
        }
        for (owner, channels) in owners {
            state.withLock { state in for channel in channels { state.sharded[channel] = owner } }
            do {
                let subscriber = shard(owner)
                try await subscriber.subscribe(channels)
                // A new shard connection subscribes when it connects: wait for that (so a
                // message published after this call is received), but a slow shard does not
                // fail the caller: the channel stays wanted and is subscribed when it connects.
                do {
                    try await subscriber.waitUntilConnected(after: 0, timeout: cluster.configuration.connectTimeout)
                } catch {
                    logger.warning("a shard is slow to connect; its channels are subscribed when it does",
                                   metadata: ["shard": "\(owner)", "error": "\(error)"])
                }
            } catch RedisError.reply(let message) where message.hasPrefix("MOVED") {
                // The map was stale: the watcher re-reads it and places them again.
                await shard(owner).forget(channels)
                wakeRequested.store(true, ordering: .relaxed)
            }
        }
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

    /// Redis dropped `channel` on `address` (its slot moved, or we unsubscribed it).
    ///
    /// The watcher subscribes it again (see ``reconcile()``).
    private func dropped(_ channel: String, by address: Address) {
        let wanted = state.withLock { $0.sharded[channel] == address }
        guard wanted else { return }
        Task {
            await self.shard(address).forget([channel])
            self.wakeRequested.store(true, ordering: .relaxed)
        }
    }

    // MARK: Watching

    /// Every 500 ms, every 100 ms while a shard is down, and within 10 ms of
    /// a dropped channel or a change of the client's topology (a master down,
    /// a new map): if a connection is down or a channel lost its shard,
    /// re-read the slot map and move every channel whose owner changed.
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

    /// Returns whether something was still unhealthy (a shard down, a channel unplaced).
    @discardableResult
    private func reconcile() async -> Bool {
        let (shards, classic) = state.withLock { ($0.shards, $0.classicSubscriber) }
        var unhealthy = false
        for (_, shard) in shards where await shard.link.channel == nil { unhealthy = true }
        if let (_, subscriber) = classic, await subscriber.link.channel == nil { unhealthy = true }
        let orphans = await unplaced()
        // The client's map may already know of a move (a publisher followed MOVED).
        let stale = state.withLock { $0.sharded }.contains { channel, address in
            cluster.owner(ofSlot: RedisClusterSlot.of(channel)) != address
        }
        guard unhealthy || stale || !orphans.isEmpty else { return false }
        await cluster.refreshSlots()
        // Channels whose owner changed (or that Redis dropped) go to their current owner.
        var moving: [(String, Address)] = []
        var again: [Address: [String]] = [:]
        for (channel, address) in state.withLock({ $0.sharded }) {
            // On the slot's master: its SPUBLISH count is this node's (a replica's
            // subscribers get the message too, but `send` would report 0 nodes).
            let placed = cluster.owner(ofSlot: RedisClusterSlot.of(channel)) == address
            // A channel whose shard connection is down waits for the map to name another
            // node (a dead master's replica promoted) or for the connection to come back.
            let down = await state.withLock({ $0.shards[address] })?.link.channel == nil
            if !placed {
                moving.append((channel, address))
            } else if orphans.contains(channel), !down {
                again[address, default: []].append(channel)
            }
        }
        // Dropped by a node the map still names as the owner (the map may be a
        // moment behind a manual failover: the demoted master still serves the
        // shard as a replica): subscribed there again at once, one round trip;
        // the next round moves them if the map says so. A refusal leaves them unplaced.
        for (address, channels) in again {
            guard let shard = state.withLock({ $0.shards[address] }) else { continue }
            do { try await shard.subscribe(channels) } catch { await shard.forget(channels) }
        }
        // No longer wanted on the old node first (so Redis's confirmation is not
        // taken for a drop), all at once per node, then placed: the gap is two round trips.
        var leaving: [Address: [String]] = [:]
        for (channel, old) in moving {
            state.withLock { _ = $0.sharded.removeValue(forKey: channel) }
            leaving[old, default: []].append(channel)
        }
        for (old, channels) in leaving {
            guard let shard = state.withLock({ $0.shards[old] }) else { continue }
            if await shard.link.channel != nil {
                try? await shard.unsubscribe(channels)
            } else {
                await shard.forget(channels)
            }
        }
        if !moving.isEmpty {
            moves.add(moving.count, ordering: .relaxed)
            logger.info("moving sharded subscriptions", metadata: ["channels": "\(moving.count)"])
            try? await place(moving.map(\.0))
        }
        // The classic connection: another node if its own stays down.
        if let (address, subscriber) = classic, await subscriber.link.channel == nil,
           let other = (0..<RedisClusterSlot.count).lazy.compactMap({ self.cluster.owner(ofSlot: $0) }).first(where: { $0 != address }) {
            await subscriber.shutdown()
            _ = replaceClassic(on: other)
        }
        // Shards nobody needs any more are closed.
        let needed = Set(state.withLock { $0.sharded.values })
        let idle = state.withLock { state -> [RedisSubscriber] in
            let gone = state.shards.keys.filter { !needed.contains($0) }
            return gone.compactMap { state.shards.removeValue(forKey: $0) }
        }
        for subscriber in idle { await subscriber.shutdown() }
        return unhealthy
    }

    /// Wanted channels that their shard no longer has (Redis dropped them).
    private func unplaced() async -> Set<String> {
        let (wanted, shards) = state.withLock { ($0.sharded, $0.shards) }
        var subscribed: [Address: Set<String>] = [:]
        for (address, shard) in shards { subscribed[address] = await shard.subscribedChannels }
        return Set(wanted.compactMap { channel, address in subscribed[address]?.contains(channel) == true ? nil : channel })
    }
}
