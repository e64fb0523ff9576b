package import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A Redis Cluster client built from ``RedisConnection``s, one per master.
///
/// It reads the slot map (`CLUSTER SLOTS`) from a seed or a known node,
/// sends each command to the master of its key's slot (``RedisCommand/slot``;
/// commands without a key go to any master), pipelines per node (each
/// connection pipelines on its own), follows `MOVED` (updates the slot, then
/// refreshes the whole map in the background) and `ASK` (`ASKING` + the
/// command on the importing node, once). Connections to nodes that left the
/// map are closed.
///
/// **Failover.** The moment a master's link drops, that shard is marked down
/// and the map is re-read every 100 ms (from any reachable node) until every
/// slot has a reachable master again — the replica promoted, or the master
/// back. Meanwhile a command for a down shard waits up to
/// ``RedisConfiguration/failoverWait`` (and within
/// ``RedisConfiguration/failoverWaitBytes`` per shard) for that, then fails
/// with ``RedisError/shardUnavailable(slot:)``; a `post` fails at once.
/// Commands for other shards never wait for it. A command whose connection
/// dropped after it was written fails with ``RedisError/connectionLost`` and
/// is not retried (Redis may have run it); one that was never sent is retried
/// on the slot's new owner.
package final class RedisClusterClient: Sendable {
    package typealias Address = RedisConfiguration.Address

    package let configuration: RedisConfiguration
    let logger: Logger

    private struct State {
        var topology = ClusterTopology()
        var connections: [Address: RedisConnection] = [:]
        var refreshing = false
        var refreshWaiters: [CheckedContinuation<Void, Never>] = []
        var healing = false
        var shuttingDown = false
        /// Commands waiting for the topology to change, by ticket.
        var changeWaiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextTicket: UInt64 = 0
    }

    private let state = Mutex(State())
    private let added: AsyncStream<RedisConnection>
    private let addedContinuation: AsyncStream<RedisConnection>.Continuation
    private let maxRedirects = 5
    /// Overrides ``RedisConfiguration/failoverWait`` for the commands of the
    /// current task: posts that read before they write use `.zero`.
    @TaskLocal package static var failoverWait: Duration?
    /// How often the map is re-read while a shard is down.
    private let healInterval = Duration.milliseconds(100)

    /// Commands every node connection runs after each (re)connect, before any other.
    private let setupCommands: [RedisCommand]

    /// Creates a client; nothing connects until ``runUntilShutdown()``. Seeds
    /// come from `configuration.clusterSeeds` (or its host and port when it has none).
    /// `setupCommands` run on every node connection after each (re)connect
    /// (`SCRIPT LOAD`s: a script called by SHA is then always in that node's cache).
    package init(configuration: RedisConfiguration, logger: Logger = Logger(label: "clusterws.redis.cluster"),
                 setupCommands: [RedisCommand] = []) {
        self.setupCommands = setupCommands
        var configuration = configuration
        if configuration.clusterSeeds.isEmpty {
            configuration.clusterSeeds = [Address(host: configuration.host, port: configuration.port)]
        }
        self.configuration = configuration
        self.logger = logger
        (added, addedContinuation) = AsyncStream.makeStream()
    }

    /// Runs the node connections (and every one added later) until ``shutdown()``.
    package func runUntilShutdown() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.refreshSlots() }
            for await connection in added {
                group.addTask { await connection.runUntilShutdown() }
            }
        }
    }

    /// Closes every node connection; ``runUntilShutdown()`` returns after.
    package func shutdown() {
        let (connections, waiters) = state.withLock { state in
            state.shuttingDown = true
            defer { state.changeWaiters = [:] }
            return (Array(state.connections.values), Array(state.changeWaiters.values))
        }
        for waiter in waiters { waiter.resume() }
        for connection in connections { Task { await connection.shutdown() } }
        addedContinuation.finish()
    }

    /// How many times the slot map has been read (for tests and metrics).
    package var slotMapRefreshes: Int { state.withLock { $0.topology.maps } }

    /// Bumped whenever the map or a master's link changes (a sharded
    /// subscriber re-checks its placement when it moves).
    package var topologyGeneration: Int { state.withLock { $0.topology.generation } }

    /// How many replicas the map lists for `slot`'s master (0 right after a
    /// failover, until the old master comes back as a replica).
    package func replicaCount(ofSlot slot: Int) -> Int { state.withLock { $0.topology.replicaCount(ofSlot: slot) } }

    /// The master that owns `slot` in the current map.
    package func owner(ofSlot slot: Int) -> Address? { state.withLock { $0.topology.slots[slot] } }

    /// The replicas the current map lists for `master`.
    package func replicas(of master: Address) -> Set<Address> { state.withLock { $0.topology.replicasOf[master] ?? [] } }

    /// The masters of the current map.
    package var masters: Set<Address> { state.withLock { $0.topology.masters } }

    /// Masters of the map whose link is down right now.
    package var mastersDown: Int { state.withLock { $0.topology.down.count } }

    // MARK: Commands

    /// Sends one command to its slot's master and returns the reply, following
    /// redirects and waiting out a failover for at most ``RedisConfiguration/failoverWait``.
    package func send(_ command: RedisCommand, timeout: Duration? = nil) async throws -> RedisValue {
        try await send(command, timeout: timeout, failoverDeadline: failoverDeadline())
    }

    /// When a command issued now stops waiting out a failover: the wait counts
    /// from the call, whatever the connection itself waited.
    private func failoverDeadline() -> ContinuousClock.Instant {
        ContinuousClock.now + (Self.failoverWait ?? configuration.failoverWait)
    }

    private func send(_ command: RedisCommand, timeout: Duration?,
                      failoverDeadline: ContinuousClock.Instant) async throws -> RedisValue {
        var deadline: ContinuousClock.Instant? = failoverDeadline
        var target = try await reachableConnection(for: command, deadline: &deadline)
        var asking = false
        var attempt = 0
        while true {
            do {
                if asking {
                    return try await target.send(batch: [RedisCommand("ASKING"), command])[1].get()
                }
                return try await target.send(command, timeout: timeout)
            } catch let error as RedisError {
                let redirect = Redirect(error)
                if redirect != nil {
                    attempt += 1
                    guard attempt <= maxRedirects else { throw error }
                }
                switch redirect {
                case .moved(let slot, let address):
                    state.withLock { $0.topology.moved(slot: slot, to: address) }
                    scheduleRefresh()
                    target = connection(for: address)
                    asking = false
                case .ask(_, let address):
                    target = connection(for: address)
                    asking = true
                case nil:
                    // Never written, or refused by a cluster without a master for
                    // the slot: a failover may be under way. Wait for the map.
                    // Waits are bounded by the failover deadline, not counted as redirects.
                    guard Self.neverSent(error) || Self.clusterDown(error) else { throw error }
                    try await waitForChange(of: command, refused: Self.clusterDown(error), deadline: &deadline)
                    target = try await reachableConnection(for: command, deadline: &deadline)
                    asking = false
                }
            }
        }
    }

    /// Sends several commands, one pipelined batch per node, and returns each
    /// one's outcome in order (a redirected command is re-sent on its own, a
    /// command for a down shard waits on its own, so the others never wait for it).
    package func send(batch commands: [RedisCommand]) async throws -> [Result<RedisValue, RedisError>] {
        guard !commands.isEmpty else { return [] }
        let deadline = failoverDeadline()
        if state.withLock({ $0.topology.maps == 0 }) { await refreshSlots() }
        var groups: [ObjectIdentifier: (connection: RedisConnection, indices: [Int])] = [:]
        var alone: [Int] = []
        for (index, command) in commands.enumerated() {
            guard case .send(let address) = state.withLock({ $0.topology.route(slot: command.slot) }) else {
                alone.append(index)
                continue
            }
            let connection = connection(for: address)
            groups[ObjectIdentifier(connection), default: (connection, [])].indices.append(index)
        }
        var results = [Result<RedisValue, RedisError>](repeating: .failure(.notConnected), count: commands.count)
        await withTaskGroup(of: [(Int, Result<RedisValue, RedisError>)].self) { tasks in
            for index in alone {
                tasks.addTask { [(index, await self.result(of: commands[index], deadline: deadline))] }
            }
            for (_, group) in groups {
                tasks.addTask {
                    let replies: [Result<RedisValue, RedisError>]
                    do {
                        replies = try await group.connection.send(batch: group.indices.map { commands[$0] })
                    } catch let error as RedisError {
                        // The node could not be reached: each command is retried below.
                        replies = Array(repeating: .failure(error), count: group.indices.count)
                    } catch {
                        replies = Array(repeating: .failure(.connectionLost), count: group.indices.count)
                    }
                    var outcome: [(Int, Result<RedisValue, RedisError>)] = []
                    for (position, index) in group.indices.enumerated() {
                        var result = replies[position]
                        if case .failure(let error) = result,
                           Redirect(error) != nil || Self.neverSent(error) || Self.clusterDown(error) {
                            result = await self.result(of: commands[index], deadline: deadline)
                        }
                        outcome.append((index, result))
                    }
                    return outcome
                }
            }
            for await outcome in tasks {
                for (index, result) in outcome { results[index] = result }
            }
        }
        return results
    }

    private func result(of command: RedisCommand, deadline: ContinuousClock.Instant) async -> Result<RedisValue, RedisError> {
        do { return .success(try await send(command, timeout: nil, failoverDeadline: deadline)) } catch let error as RedisError {
            return .failure(error)
        } catch {
            return .failure(.connectionLost)
        }
    }

    /// Writes `command` to its slot's master without waiting (see
    /// ``RedisConnection/post(_:onFailure:)``); a `MOVED` or `ASK` answer
    /// re-posts it to the right node, so a redirected command may arrive after
    /// later ones. A command for a down shard fails at once with
    /// ``RedisError/shardUnavailable(slot:)``.
    package func post(_ command: RedisCommand, onFailure: @escaping @Sendable (RedisError) -> Void) {
        switch state.withLock({ $0.topology.route(slot: command.slot) }) {
        case .send(let address):
            post(command, to: connection(for: address), redirects: 0, onFailure: onFailure)
        case .wait(let address):
            if address == nil { scheduleRefresh() } else { startHealing() }
            onFailure(.shardUnavailable(slot: command.slot ?? -1))
        }
    }

    private func post(_ command: RedisCommand, to target: RedisConnection, redirects: Int,
                      onFailure: @escaping @Sendable (RedisError) -> Void) {
        target.post(command) { error in
            guard redirects < self.maxRedirects else { return onFailure(error) }
            switch Redirect(error) {
            case .moved(let slot, let address):
                self.state.withLock { $0.topology.moved(slot: slot, to: address) }
                self.scheduleRefresh()
                self.post(command, to: self.connection(for: address), redirects: redirects + 1, onFailure: onFailure)
            case .ask(_, let address):
                let importing = self.connection(for: address)
                importing.post(RedisCommand("ASKING")) { _ in }
                self.post(command, to: importing, redirects: redirects + 1, onFailure: onFailure)
            case nil:
                if Self.neverSent(error) || Self.clusterDown(error) {
                    self.scheduleRefresh()
                    return onFailure(.shardUnavailable(slot: command.slot ?? -1))
                }
                onFailure(error)
            }
        }
    }

    /// Errors that mean the command was not written (safe to send elsewhere).
    private static func neverSent(_ error: RedisError) -> Bool {
        switch error {
        case .notConnected, .connectionRefused, .connectTimeout: true
        default: false
        }
    }

    /// `CLUSTERDOWN …`: the node has no master for the slot right now.
    private static func clusterDown(_ error: RedisError) -> Bool {
        if case .reply(let message) = error { message.hasPrefix("CLUSTERDOWN") } else { false }
    }

    // MARK: Waiting out a failover

    /// The connection of the reachable master that owns `command`'s slot,
    /// waiting for one (see ``waitForChange(of:deadline:)``) while there is none.
    private func reachableConnection(for command: RedisCommand,
                                     deadline: inout ContinuousClock.Instant?) async throws -> RedisConnection {
        var first = true
        while true {
            let (route, unread) = state.withLock { ($0.topology.route(slot: command.slot), $0.topology.maps == 0) }
            if case .send(let address) = route { return connection(for: address) }
            if first, unread {  // the map was never read: read it before waiting for a change
                first = false
                await refreshSlots()
                continue
            }
            try await waitForChange(of: command, deadline: &deadline)
        }
    }

    /// Waits until the topology changes, holding `command`'s bytes against
    /// its shard's wait budget; past the command's deadline (set on its first
    /// wait) or over the budget it throws ``RedisError/shardUnavailable(slot:)``.
    /// Returns at once if the shard has a reachable master, unless that master
    /// `refused` the command (`CLUSTERDOWN`: it serves nothing until the cluster heals).
    private func waitForChange(of command: RedisCommand, refused: Bool = false,
                               deadline: inout ContinuousClock.Instant?) async throws {
        let now = ContinuousClock.now
        let until = deadline ?? now + (Self.failoverWait ?? configuration.failoverWait)
        deadline = until
        let slot = command.slot ?? -1
        let (route, generation, closed) = state.withLock { state in
            (state.topology.route(slot: command.slot), state.topology.generation, state.shuttingDown)
        }
        if closed { throw RedisError.shutdown }
        let shard: Address?
        switch route {
        case .wait(let address): shard = address
        case .send(let address):
            guard refused else { return }  // it has a master again: go
            shard = address
        }
        if shard == nil || refused { scheduleRefresh() } else { startHealing() }
        let bytes = command.bytes.readableBytes
        let limit = configuration.failoverWaitBytes
        guard now < until, state.withLock({ $0.topology.reserve(bytes, for: shard, limit: limit) }) else {
            throw RedisError.shardUnavailable(slot: slot)
        }
        defer { state.withLock { $0.topology.release(bytes, for: shard) } }
        await waitForTopology(after: generation, until: until)
        guard ContinuousClock.now >= until else { return }
        if refused { throw RedisError.shardUnavailable(slot: slot) }
        if case .wait = state.withLock({ $0.topology.route(slot: command.slot) }) {
            throw RedisError.shardUnavailable(slot: slot)
        }
    }

    /// Returns when the topology's generation passes `generation`, at
    /// `deadline`, or at shutdown, whichever comes first.
    private func waitForTopology(after generation: Int, until deadline: ContinuousClock.Instant) async {
        let ticket = state.withLock { state -> UInt64 in
            state.nextTicket &+= 1
            return state.nextTicket
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let now = self.state.withLock { state -> Bool in
                        guard state.topology.generation == generation, !state.shuttingDown,
                              ContinuousClock.now < deadline else { return true }
                        state.changeWaiters[ticket] = continuation
                        return false
                    }
                    if now { continuation.resume() }
                }
            }
            group.addTask {
                try? await Task.sleep(until: deadline)
                self.state.withLock { $0.changeWaiters.removeValue(forKey: ticket) }?.resume()
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// Applies `change` to the topology and wakes every waiting command if it moved.
    private func changeTopology(_ change: (inout ClusterTopology) -> Void) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            let before = state.topology.generation
            change(&state.topology)
            guard state.topology.generation != before else { return [] }
            defer { state.changeWaiters = [:] }
            return Array(state.changeWaiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// A master's link came up or dropped.
    private func link(_ address: Address, up: Bool) {
        guard !state.withLock({ $0.shuttingDown }) else { return }  // our own connections closing
        var marked = false
        changeTopology { marked = $0.link(address, up: up) && !up }
        if marked {
            logger.warning("redis cluster master unreachable; following the failover", metadata: ["master": "\(address)"])
            startHealing()
        }
    }

    /// Re-reads the map every ``healInterval`` until no master of it is down.
    private func startHealing() {
        let start = state.withLock { state -> Bool in
            guard !state.healing, !state.shuttingDown, state.topology.needsHealing else { return false }
            state.healing = true
            return true
        }
        guard start else { return }
        Task {
            while true {
                _ = await self.readSlots()
                let more = self.state.withLock { state -> Bool in
                    let more = state.topology.needsHealing && !state.shuttingDown
                    if !more { state.healing = false }
                    return more
                }
                guard more else { break }
                try? await Task.sleep(for: self.healInterval)
            }
            self.logger.info("redis cluster: every slot has a reachable master")
        }
    }

    // MARK: Slot map

    /// The connection to `address`, created (and started) on first use. Its
    /// link changes mark the shard down and up.
    private func connection(for address: Address) -> RedisConnection {
        let (connection, isNew) = state.withLock { state -> (RedisConnection, Bool) in
            if let existing = state.connections[address] { return (existing, false) }
            var node = configuration.node(address)
            // A master not connected yet (just promoted) holds a command no longer than a failover would.
            node.disconnectedCommandWait = min(node.disconnectedCommandWait, max(configuration.failoverWait, .milliseconds(100)))
            node.hooks.linkChanged = { [weak self] up in self?.link(address, up: up) }
            let connection = RedisConnection(configuration: node, eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
                                             logger: logger, setupCommands: setupCommands)
            state.connections[address] = connection
            return (connection, true)
        }
        if isNew { addedContinuation.yield(connection) }
        return connection
    }

    /// Reads the slot map in the background (after a `MOVED`).
    private func scheduleRefresh() {
        Task { await self.refreshSlots() }
    }

    /// Reads `CLUSTER SLOTS` from a reachable master, else a seed; concurrent
    /// callers share one read. Keeps trying (with backoff) until one answers
    /// or the client shuts down.
    package func refreshSlots() async {
        let first = state.withLock { state -> Bool in
            guard !state.refreshing else { return false }
            state.refreshing = true
            return true
        }
        guard first else {
            await withCheckedContinuation { continuation in
                let done = state.withLock { state -> Bool in
                    guard state.refreshing else { return true }
                    state.refreshWaiters.append(continuation)
                    return false
                }
                if done { continuation.resume() }
            }
            return
        }
        var attempt = 0
        while !state.withLock({ $0.shuttingDown }) {
            if await readSlots() { break }
            attempt += 1
            try? await Task.sleep(for: configuration.reconnectBackoff.delay(attempt: attempt))
            if attempt >= 20 { break }
        }
        let waiters = state.withLock { state in
            state.refreshing = false
            defer { state.refreshWaiters = [] }
            return state.refreshWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// One pass over the reachable masters, then the seeds, until one answers
    /// `CLUSTER SLOTS`; applies the map. Masters whose link is down are skipped.
    private func readSlots() async -> Bool {
        let (known, down) = state.withLock { state in (Array(state.topology.masters), state.topology.down) }
        var candidates = known.filter { !down.contains($0) }
        candidates += configuration.clusterSeeds.filter { !down.contains($0) && !candidates.contains($0) }
        for address in candidates {
            guard let reply = try? await connection(for: address).send(RedisCommand("CLUSTER", "SLOTS"), timeout: .seconds(1)),
                  let map = Self.slotMap(from: reply, answeredBy: address) else { continue }
            changeTopology { $0.apply(map) }
            let stale = state.withLock { state in
                let masters = state.topology.masters
                let gone = state.connections.keys.filter { !masters.contains($0) && !configuration.clusterSeeds.contains($0) }
                return gone.compactMap { state.connections.removeValue(forKey: $0) }
            }
            for connection in stale { await connection.shutdown() }
            logger.debug("redis cluster slot map read", metadata: ["masters": "\(map.replicasOf.count)"])
            return true
        }
        return false
    }
}

extension RedisClusterClient {
    /// The slot map in a `CLUSTER SLOTS` reply: each slot's master, how many
    /// replicas it lists, and which. Ranges that make no sense (negative,
    /// reversed, past slot 16,383, a port out of range) are skipped; `nil` when
    /// nothing usable is left.
    package static func slotMap(from reply: RedisValue, answeredBy address: Address) -> ClusterTopology.SlotMap? {
        guard let ranges = reply.array, !ranges.isEmpty else { return nil }
        var map = ClusterTopology.SlotMap()
        var any = false
        func node(_ value: RedisValue) -> Address? {
            guard let fields = value.array, fields.count >= 2, let port = fields[1].int, (1...65_535).contains(port) else { return nil }
            return Address(host: fields[0].string.flatMap { $0.isEmpty ? nil : $0 } ?? address.host, port: port)
        }
        for range in ranges {
            guard let fields = range.array, fields.count >= 3, let start = fields[0].int, let end = fields[1].int,
                  start >= 0, start <= end, end < RedisClusterSlot.count, let master = node(fields[2]) else { continue }
            let replicas = fields.dropFirst(3).compactMap(node)
            for slot in start...end { map.slots[slot] = master }
            map.replicasOf[master, default: []].formUnion(replicas)
            any = true
        }
        return any ? map : nil
    }
}

/// A `MOVED` or `ASK` error reply: `MOVED 3999 127.0.0.1:6381`.
package enum Redirect: Equatable {
    case moved(slot: Int, RedisConfiguration.Address)
    case ask(slot: Int, RedisConfiguration.Address)

    package init?(_ error: RedisError) {
        guard case .reply(let message) = error else { return nil }
        let words = message.split(separator: " ")
        guard words.count == 3, let slot = Int(words[1]), (0..<RedisClusterSlot.count).contains(slot),
              let colon = words[2].lastIndex(of: ":"),
              let port = Int(words[2][words[2].index(after: colon)...]), (1...65_535).contains(port) else { return nil }
        var host = String(words[2][..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let address = RedisConfiguration.Address(host: host, port: port)
        switch words[0] {
        case "MOVED": self = .moved(slot: slot, address)
        case "ASK": self = .ask(slot: slot, address)
        default: return nil
        }
    }
}
