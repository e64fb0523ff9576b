import NIOPosix
import CoreMetrics
import Logging
package import NIOCore
import Synchronization

/// The queue driver: every node has a durable inbox, a Redis Stream read
/// through a consumer group. Sends route to the streams of the nodes that
/// need them in one round trip (a Lua script, loaded once and run with
/// EVALSHA); consumers acknowledge an entry only after it was handed to the
/// sockets. At-least-once: an entry read but not acknowledged when a
/// consumer's connection drops is read again (so duplicates are bounded by
/// consumers × concurrency per outage).
enum QueueScript {
    /// ARGV: namespace, mode (user|room|all|node), target, self node, maxlen,
    /// envelope, user key, target epoch (node mode).
    /// Returns how many node streams got the entry.
    static let script = LuaScript("""
    local ns, mode, target, self, maxlen, env = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
    local epochs = {}
    if mode == 'user' then
      for _, fd in ipairs(redis.call('SMEMBERS', ARGV[7])) do
        local node, epoch = string.match(fd, '^(.*)#(%x+)#%d+$')
        if node then epochs[node] = epoch end
      end
    elseif mode == 'node' then
      epochs[target] = ARGV[8]
    else
      local set = (mode == 'room') and (ns .. ':room-nodes:' .. target) or (ns .. ':nodes')
      for _, node in ipairs(redis.call('SMEMBERS', set)) do
        local epoch = redis.call('GET', ns .. ':alive:' .. node)
        if epoch then epochs[node] = epoch end
      end
    end
    local count = 0
    for node, epoch in pairs(epochs) do
      if node ~= self then
        redis.call('XADD', ns .. ':queue:' .. node, 'MAXLEN', '~', maxlen, '*', 'epoch', epoch, 'env', env)
        count = count + 1
      end
    end
    return count
    """)
}

extension ClusterNode {
    /// Routes an envelope to the other nodes' streams; its reply is how many got it.
    /// For `.fds`, `toNode` names the node that has them. (`.users` goes through
    /// ``MultiUserScript``.)
    func enqueueCommand(_ target: Envelope.Target, _ message: WebSocketMessage, toNode: String = "",
                        bySource: Bool = false) throws(ClusterError) -> RedisCommand {
        let envelope = try encode(target, message)
        let (mode, name, userKey, targetEpoch): (String, String, String, String) = switch target {
        case .user(let uid): ("user", uid, keys.user(uid), "")
        case .room(let room): ("room", room, "", "")
        case .all, .users: ("all", "", "", "")
        case .fds(let targetEpoch, _): ("node", toNode, "", DistributedFD.hex(epoch: targetEpoch))
        }
        return QueueScript.script.command([
            .string(keys.namespace), .string(mode), .string(name), .string(id),
            .integer(configuration.queue.maxLength), .bytes(envelope), .string(userKey), .string(targetEpoch),
        ], bySource: bySource)
    }

    /// Runs the routing script for `target` (by SHA, by source after `NOSCRIPT`);
    /// returns how many node streams got the entry.
    func enqueue(_ target: Envelope.Target, _ message: WebSocketMessage, toNode: String = "") async throws -> Int {
        if redisConfiguration.isCluster { return try await enqueueAcrossSlots(target, message, toNode: toNode) }
        do {
            return try await redis.send(enqueueCommand(target, message, toNode: toNode)).int ?? 0
        } catch where LuaScript.isMissing(error) {
            return try await redis.send(enqueueCommand(target, message, toNode: toNode, bySource: true)).int ?? 0
        }
    }

    /// The consumers of this node's stream, until cancelled.
    func consumeQueue() async {
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<configuration.queue.consumers {
                group.addTask { await self.consume(name: "\(self.id):\(index)") }
            }
        }
    }

    /// One consumer: its own pending entries first (after a start or a
    /// reconnect), then new ones; entries idle too long for others are claimed.
    private func consume(name: String) async {
        var redisConfiguration = self.redisConfiguration
        redisConfiguration.commandTimeout = configuration.queue.block + .seconds(5)
        redisConfiguration.disconnectedCommandWait = .seconds(1)
        // A health-check PING queues behind a blocked XREADGROUP: give it the block time too.
        redisConfiguration.healthCheckTimeout = configuration.queue.block + redisConfiguration.healthCheckTimeout
        // Its own connection(s): a blocked XREADGROUP must not hold up the node's other commands.
        let connection: any RedisCommands = redisConfiguration.isCluster
            ? RedisClusterClient(configuration: redisConfiguration, logger: logger)
            : RedisConnection(configuration: redisConfiguration, eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
                              logger: logger)
        let stream = keys.queue(id)
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
                    if clock.now - lastClaim >= configuration.queue.claimAfter {
                        lastClaim = clock.now
                        let claimed = try await connection.send(RedisCommand(
                            "XAUTOCLAIM", .string(stream), .string(keys.queueGroup), .string(name),
                            .integer(configuration.queue.claimAfter.milliseconds), "0-0",
                            "COUNT", .integer(configuration.queue.concurrency)))
                        entries = QueueEntry.parse(claimed.array?.dropFirst().first ?? .null)
                        if !entries.isEmpty { try await deliver(entries, connection: connection, stream: stream) }
                    }
                    let blockMillis = configuration.queue.block.milliseconds
                    // Own pending entries ("0") are returned at once; new ones (">") are waited for.
                    let wait: [RedisArgument] = readPending ? [] : ["BLOCK", .integer(blockMillis)]
                    let reply = try await connection.send(RedisCommand(
                        "XREADGROUP", arguments: ["GROUP", .string(keys.queueGroup), .string(name),
                                                  "COUNT", .integer(configuration.queue.concurrency)] + wait
                            + ["STREAMS", .string(stream), readPending ? "0" : ">"]))
                    entries = QueueEntry.parse(streamReply: reply)
                    if readPending && entries.isEmpty { readPending = false }
                    if !entries.isEmpty { try await deliver(entries, connection: connection, stream: stream) }
                } catch {
                    if Task.isCancelled { break }
                    readPending = true  // after a reconnect, unacknowledged entries come first
                    groupReady = false  // Redis may have restarted without the group
                    logger.debug("queue consumer retrying", metadata: ["consumer": "\(name)", "error": "\(error)"])
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
            await connection.shutdown()
        }
    }

    /// Hands entries to the sockets, then acknowledges them all at once.
    private func deliver(_ entries: [QueueEntry], connection: any RedisCommands, stream: String) async throws {
        for entry in entries {
            guard let epochText = entry.epoch, UInt64(epochText, radix: 16) == epoch else {
                counters.drop(.stale)
                continue  // for an earlier run's connections: acknowledged, never delivered
            }
            do {
                await route(try Envelope(decoding: entry.envelope))
            } catch {
                counters.drop(.garbage, metadata: ["stream entry": "\(entry.id)", "error": "\(error)"])
            }
        }
        _ = try await connection.send(RedisCommand(
            "XACK", arguments: [.string(stream), .string(keys.queueGroup)] + entries.map { .string($0.id) }))
    }
}

/// One stream entry of a node's queue.
package struct QueueEntry {
    package var id: String
    package var epoch: String?
    package var envelope: ByteBuffer

    /// `XREADGROUP` reply: [[stream, [[id, [field, value, …]], …]]].
    package static func parse(streamReply reply: RedisValue) -> [QueueEntry] {
        guard let streams = reply.array, let first = streams.first?.array, first.count == 2 else { return [] }
        return parse(first[1])
    }

    /// A list of [id, [field, value, …]] (deleted entries have a nil field list).
    package static func parse(_ list: RedisValue) -> [QueueEntry] {
        (list.array ?? []).compactMap { item in
            guard let pair = item.array, pair.count == 2, let id = pair[0].string else { return nil }
            let fields = pair[1].array ?? []
            var entry = QueueEntry(id: id, epoch: nil, envelope: ByteBuffer())
            for index in stride(from: 0, to: fields.count - 1, by: 2) {
                switch fields[index].string {
                case "epoch": entry.epoch = fields[index + 1].string
                case "env": entry.envelope = fields[index + 1].buffer ?? ByteBuffer()
                default: break
                }
            }
            return entry
        }
    }
}
