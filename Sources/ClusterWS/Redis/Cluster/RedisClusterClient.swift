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
/// command on the importing node, once), and refreshes the map when a node
/// cannot be reached, so a failover is followed by itself. Connections to
/// nodes that left the map are closed.
///
/// A command whose connection dropped after it was written fails with
/// ``RedisError/connectionLost`` and is not retried (Redis may have run it);
/// one that was never sent is retried on the slot's new owner.
package final class RedisClusterClient: Sendable {
    package typealias Address = RedisConfiguration.Address

    package let configuration: RedisConfiguration
    let logger: Logger

    private struct State {
        var slots: [Address?] = Array(repeating: nil, count: RedisClusterSlot.count)
        /// Replicas listed for each slot's master in the last map.
        var replicas: [UInt8] = Array(repeating: 0, count: RedisClusterSlot.count)
        var connections: [Address: RedisConnection] = [:]
        var refreshing = false
        var refreshWaiters: [CheckedContinuation<Void, Never>] = []
        var shuttingDown = false
        var refreshes = 0
    }

    private let state = Mutex(State())
    private let added: AsyncStream<RedisConnection>
    private let addedContinuation: AsyncStream<RedisConnection>.Continuation
    private let maxRedirects = 5

    /// Creates a client; nothing connects until ``runUntilShutdown()``. Seeds
    /// come from `configuration.clusterSeeds` (or its host and port when it has none).
    package init(configuration: RedisConfiguration, logger: Logger = Logger(label: "clusterws.redis.cluster")) {
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
        let connections = state.withLock { state in
            state.shuttingDown = true
            return Array(state.connections.values)
        }
        for connection in connections { Task { await connection.shutdown() } }
        addedContinuation.finish()
    }

    /// How many times the slot map has been read (for tests and metrics).
    package var slotMapRefreshes: Int { state.withLock { $0.refreshes } }

    /// How many replicas the map lists for `slot`'s master (0 right after a
    /// failover, until the old master comes back as a replica).
    package func replicaCount(ofSlot slot: Int) -> Int { state.withLock { Int($0.replicas[slot]) } }

    /// The master that owns `slot` in the current map.
    package func owner(ofSlot slot: Int) -> Address? { state.withLock { $0.slots[slot] } }

    // MARK: Commands

    /// Sends one command to its slot's master and returns the reply, following redirects.
    package func send(_ command: RedisCommand, timeout: Duration? = nil) async throws -> RedisValue {
        var target = try await connection(forSlot: command.slot)
        var asking = false
        var attempt = 0
        while true {
            do {
                if asking {
                    return try await target.send(batch: [RedisCommand("ASKING"), command])[1].get()
                }
                return try await target.send(command, timeout: timeout)
            } catch let error as RedisError {
                attempt += 1
                guard attempt <= maxRedirects else { throw error }
                switch Redirect(error) {
                case .moved(let slot, let address):
                    state.withLock { $0.slots[slot] = address }
                    scheduleRefresh()
                    target = connection(for: address)
                    asking = false
                case .ask(_, let address):
                    target = connection(for: address)
                    asking = true
                case nil:
                    guard Self.neverSent(error) else { throw error }
                    // The node is unreachable: a failover may be under way. Re-read the map and retry.
                    await refreshSlots()
                    try await Task.sleep(for: .milliseconds(100 * attempt))
                    target = try await connection(forSlot: command.slot)
                }
            }
        }
    }

    /// Sends several commands, one pipelined batch per node, and returns each
    /// one's outcome in order (a redirected command is re-sent on its own).
    package func send(batch commands: [RedisCommand]) async throws -> [Result<RedisValue, RedisError>] {
        guard !commands.isEmpty else { return [] }
        var groups: [ObjectIdentifier: (connection: RedisConnection, indices: [Int])] = [:]
        for (index, command) in commands.enumerated() {
            let connection = try await connection(forSlot: command.slot)
            groups[ObjectIdentifier(connection), default: (connection, [])].indices.append(index)
        }
        var results = [Result<RedisValue, RedisError>](repeating: .failure(.notConnected), count: commands.count)
        try await withThrowingTaskGroup(of: [(Int, Result<RedisValue, RedisError>)].self) { tasks in
            for (_, group) in groups {
                tasks.addTask {
                    let replies: [Result<RedisValue, RedisError>]
                    do {
                        replies = try await group.connection.send(batch: group.indices.map { commands[$0] })
                    } catch let error as RedisError {
                        // The node could not be reached: each command is retried below (map re-read).
                        replies = Array(repeating: .failure(error), count: group.indices.count)
                    }
                    var outcome: [(Int, Result<RedisValue, RedisError>)] = []
                    for (position, index) in group.indices.enumerated() {
                        var result = replies[position]
                        if case .failure(let error) = result, Redirect(error) != nil || Self.neverSent(error) {
                            do { result = .success(try await self.send(commands[index])) } catch let error as RedisError {
                                result = .failure(error)
                            }
                        }
                        outcome.append((index, result))
                    }
                    return outcome
                }
            }
            for try await outcome in tasks {
                for (index, result) in outcome { results[index] = result }
            }
        }
        return results
    }

    /// Writes `command` to its slot's master without waiting (see
    /// ``RedisConnection/post(_:onFailure:)``); a `MOVED` or `ASK` answer
    /// re-posts it to the right node, so a redirected command may arrive after
    /// later ones.
    package func post(_ command: RedisCommand, onFailure: @escaping @Sendable (RedisError) -> Void) {
        guard let target = knownConnection(forSlot: command.slot) else {
            scheduleRefresh()
            return onFailure(.notConnected)
        }
        post(command, to: target, redirects: 0, onFailure: onFailure)
    }

    private func post(_ command: RedisCommand, to target: RedisConnection, redirects: Int,
                      onFailure: @escaping @Sendable (RedisError) -> Void) {
        target.post(command) { error in
            guard redirects < self.maxRedirects else { return onFailure(error) }
            switch Redirect(error) {
            case .moved(let slot, let address):
                self.state.withLock { $0.slots[slot] = address }
                self.scheduleRefresh()
                self.post(command, to: self.connection(for: address), redirects: redirects + 1, onFailure: onFailure)
            case .ask(_, let address):
                let importing = self.connection(for: address)
                importing.post(RedisCommand("ASKING")) { _ in }
                self.post(command, to: importing, redirects: redirects + 1, onFailure: onFailure)
            case nil:
                if Self.neverSent(error) { self.scheduleRefresh() }
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

    // MARK: Slot map

    /// The connection of the master that owns `slot` (any master for `nil`),
    /// reading the map first if it is not known yet.
    private func connection(forSlot slot: Int?) async throws -> RedisConnection {
        if let known = knownConnection(forSlot: slot) { return known }
        await refreshSlots()
        if let known = knownConnection(forSlot: slot) { return known }
        throw RedisError.notConnected
    }

    private func knownConnection(forSlot slot: Int?) -> RedisConnection? {
        let address: Address? = state.withLock { state in
            if let slot { return state.slots[slot] }
            return state.slots.lazy.compactMap { $0 }.first
        }
        return address.map(connection(for:))
    }

    /// The connection to `address`, created (and started) on first use.
    private func connection(for address: Address) -> RedisConnection {
        let (connection, isNew) = state.withLock { state -> (RedisConnection, Bool) in
            if let existing = state.connections[address] { return (existing, false) }
            let connection = RedisConnection(configuration: configuration.node(address),
                                             eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: logger)
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

    /// Reads `CLUSTER SLOTS` from a known master, else a seed; concurrent
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

    private func readSlots() async -> Bool {
        let known = state.withLock { state in Array(Set(state.slots.compactMap { $0 })) }
        for address in known + configuration.clusterSeeds {
            guard let reply = try? await connection(for: address).send(RedisCommand("CLUSTER", "SLOTS"), timeout: .seconds(2)),
                  let (slots, replicas) = Self.slotMap(from: reply, answeredBy: address) else { continue }
            let masters = Set(slots.compactMap { $0 })
            let stale = state.withLock { state -> [RedisConnection] in
                state.slots = slots
                state.replicas = replicas
                state.refreshes += 1
                let gone = state.connections.keys.filter { !masters.contains($0) && !configuration.clusterSeeds.contains($0) }
                return gone.compactMap { state.connections.removeValue(forKey: $0) }
            }
            for connection in stale { await connection.shutdown() }
            logger.debug("redis cluster slot map read", metadata: ["masters": "\(masters.count)"])
            return true
        }
        return false
    }
}

extension RedisClusterClient {
    /// The slot map in a `CLUSTER SLOTS` reply: each slot's master and how
    /// many replicas it lists. Ranges that make no sense (negative, reversed,
    /// past slot 16,383, a port out of range) are skipped; `nil` when nothing usable is left.
    package static func slotMap(from reply: RedisValue, answeredBy address: Address)
        -> (slots: [Address?], replicas: [UInt8])?
    {
        guard let ranges = reply.array, !ranges.isEmpty else { return nil }
        var slots = [Address?](repeating: nil, count: RedisClusterSlot.count)
        var replicas = [UInt8](repeating: 0, count: RedisClusterSlot.count)
        var any = false
        for range in ranges {
            guard let fields = range.array, fields.count >= 3, let start = fields[0].int, let end = fields[1].int,
                  let master = fields[2].array, master.count >= 2, let port = master[1].int,
                  start >= 0, start <= end, end < RedisClusterSlot.count, (1...65_535).contains(port) else { continue }
            let host = master[0].string.flatMap { $0.isEmpty ? nil : $0 } ?? address.host
            for slot in start...end {
                slots[slot] = Address(host: host, port: port)
                replicas[slot] = UInt8(min(fields.count - 3, 255))
            }
            any = true
        }
        return any ? (slots, replicas) : nil
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
