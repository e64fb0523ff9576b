import Logging
package import NIOCore

/// The consumers of this node's stream (queue driver): `queue.consumers` of
/// them, each on its own Redis connection (a blocked `XREADGROUP` holds up
/// nothing else), each with up to `queue.concurrency` entries in flight.
///
/// A consumer reads its own pending entries first (after a start or a
/// reconnect), then new ones; it acknowledges entries only after they were
/// handed to the sockets, claims entries idle too long for a vanished
/// consumer, and drops (acknowledged, counted) entries of an earlier epoch of
/// this node and entries that are not envelopes. At-least-once.
struct QueueConsumers: Sendable {
    let context: DriverContext
    /// The Redis settings every consumer connection starts from.
    let configuration: RedisConfiguration
    /// Makes one consumer's connection (one server, or a cluster client).
    let makeConnection: @Sendable (RedisConfiguration) -> any RedisCommands

    private var keys: ClusterKeys { context.keys }
    private var queue: ClusterConfiguration.Queue { context.queue }

    init(context: DriverContext, configuration: RedisConfiguration,
         makeConnection: @escaping @Sendable (RedisConfiguration) -> any RedisCommands) {
        var configuration = configuration
        configuration.commandTimeout = context.queue.block + .seconds(5)
        configuration.disconnectedCommandWait = .seconds(1)
        // A health-check PING queues behind a blocked XREADGROUP: give it the block time too.
        configuration.healthCheckTimeout = context.queue.block + configuration.healthCheckTimeout
        self.context = context
        self.configuration = configuration
        self.makeConnection = makeConnection
    }

    /// Runs every consumer until cancelled.
    func run(route: @escaping @Sendable (Envelope) async -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<queue.consumers {
                group.addTask { await consume(name: "\(context.id):\(index)", route: route) }
            }
        }
    }

    /// One consumer: its own pending entries first (after a start or a
    /// reconnect), then new ones; entries idle too long for others are claimed.
    private func consume(name: String, route: @escaping @Sendable (Envelope) async -> Void) async {
        let connection = makeConnection(configuration)
        let stream = keys.queue(context.id)
        let clock = ContinuousClock()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await connection.runUntilShutdown() }
            var readPending = true
            var groupReady = false
            var lastClaim = clock.now
            while !Task.isCancelled {
                do {
                    if !groupReady {
                        do {
                            _ = try await connection.send(RedisCommand(
                                "XGROUP", "CREATE", .string(stream), .string(keys.queueGroup), "0", "MKSTREAM"))
                        } catch RedisError.reply(let message) where message.hasPrefix("BUSYGROUP") {}
                        groupReady = true
                    }
                    var entries: [QueueEntry]
                    if clock.now - lastClaim >= queue.claimAfter {
                        lastClaim = clock.now
                        let claimed = try await connection.send(RedisCommand(
                            "XAUTOCLAIM", .string(stream), .string(keys.queueGroup), .string(name),
                            .integer(queue.claimAfter.milliseconds), "0-0",
                            "COUNT", .integer(queue.concurrency)))
                        entries = QueueEntry.parse(claimed.array?.dropFirst().first ?? .null)
                        if !entries.isEmpty { try await deliver(entries, connection: connection, stream: stream, route: route) }
                    }
                    let blockMillis = queue.block.milliseconds
                    // Own pending entries ("0") are returned at once; new ones (">") are waited for.
                    let wait: [RedisArgument] = readPending ? [] : ["BLOCK", .integer(blockMillis)]
                    let reply = try await connection.send(RedisCommand(
                        "XREADGROUP", arguments: ["GROUP", .string(keys.queueGroup), .string(name),
                                                  "COUNT", .integer(queue.concurrency)] + wait
                            + ["STREAMS", .string(stream), readPending ? "0" : ">"]))
                    entries = QueueEntry.parse(streamReply: reply)
                    if readPending && entries.isEmpty { readPending = false }
                    if !entries.isEmpty { try await deliver(entries, connection: connection, stream: stream, route: route) }
                } catch {
                    if Task.isCancelled { break }
                    readPending = true  // after a reconnect, unacknowledged entries come first
                    groupReady = false  // Redis may have restarted without the group
                    context.logger.debug("queue consumer retrying", metadata: ["consumer": "\(name)", "error": "\(error)"])
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
            await connection.shutdown()
        }
    }

    /// Hands entries to the sockets, then acknowledges them all at once.
    private func deliver(_ entries: [QueueEntry], connection: any RedisCommands, stream: String,
                         route: @escaping @Sendable (Envelope) async -> Void) async throws {
        for entry in entries {
            guard let epochText = entry.epoch, UInt64(epochText, radix: 16) == context.epoch else {
                context.counters.drop(.stale)
                continue  // for an earlier run's connections: acknowledged, never delivered
            }
            do {
                await route(try Envelope(decoding: entry.envelope))
            } catch {
                context.counters.drop(.garbage, metadata: ["stream entry": "\(entry.id)", "error": "\(error)"])
            }
        }
        _ = try await connection.send(RedisCommand(
            "XACK", arguments: [.string(stream), .string(keys.queueGroup)] + entries.map { .string($0.id) }))
    }
}
