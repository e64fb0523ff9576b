import NIOCore
import Synchronization

/// The queue driver on a Redis Cluster.
///
/// The single-server driver routes with one Lua script, but that script reads
/// and writes keys of several slots (a user's fds, the live nodes, the target
/// nodes' streams), which a cluster refuses. Here the same routing runs from
/// the node, a step per slot: read the targets (`SMEMBERS`, the heartbeats),
/// then one `XADD` per target node's stream, pipelined per master, each
/// followed by `WAIT` for `queue.replicaAcks` replicas on that master (as many
/// as the slot map lists for it) — so an entry a send reported is on a replica
/// too and survives its master's crash.
/// Cost: two to three round trips per send instead of one, not atomic (a
/// node that joins between the read and the write misses that message, as it
/// would have a moment earlier).
extension ClusterNode {
    /// Routes `message` to the other nodes' streams; returns how many streams got it.
    func enqueueAcrossSlots(_ target: Envelope.Target, _ message: WebSocketMessage, toNode: String = "") async throws -> Int {
        let payload = try encode(target, message)
        var epochs: [String: UInt64] = [:]
        switch target {
        case .user(let uid):
            let members = try await redis.send(RedisCommand("SMEMBERS", .string(keys.user(uid)))).array ?? []
            for case let fd? in members.compactMap({ $0.string.flatMap(DistributedFD.init) }) {
                epochs[fd.node] = fd.epoch
            }
        case .users(let uids):
            return try await sendRemote(users: uids, message).max() ?? 0
        case .fds(let targetEpoch, _):
            epochs[toNode] = targetEpoch
        case .room, .all:
            let set: String = if case .room(let room) = target { keys.roomNodes(room) } else { keys.nodes }
            let nodes = try await redis.send(RedisCommand("SMEMBERS", .string(set))).array?.compactMap(\.string) ?? []
            for (node, value) in zip(nodes, try await values(of: nodes.map(keys.alive))) {
                if let text = value.string, let epoch = UInt64(text, radix: 16) { epochs[node] = epoch }
            }
        }
        epochs[id] = nil
        return try await appendToStreams(payload, epochs: epochs).count
    }

    /// One `XADD` per node's stream (with that node's epoch), pipelined per
    /// master, each followed by `WAIT` for `queue.replicaAcks` replicas (as many
    /// as the slot map lists for that master). Returns the nodes written to; a
    /// failed `XADD` fails the call (the caller may retry).
    func appendToStreams(_ envelope: ByteBuffer, epochs: [String: UInt64]) async throws -> [String] {
        guard !epochs.isEmpty else { return [] }
        var commands: [RedisCommand] = []
        var writes: [(node: String, index: Int)] = []
        let cluster = redis as? RedisClusterClient
        for (node, epoch) in epochs where node != id {
            let stream = keys.queue(node)
            writes.append((node, commands.count))
            commands.append(RedisCommand("XADD", .string(stream), "MAXLEN", "~", .integer(configuration.queue.maxLength), "*",
                                         "epoch", .string(DistributedFD.hex(epoch: epoch)), "env", .bytes(envelope)))
            // Only as many replicas as the master has: right after a failover it may have none.
            let acks = min(configuration.queue.replicaAcks, cluster?.replicaCount(ofSlot: RedisClusterSlot.of(stream)) ?? 0)
            if acks > 0 {
                commands.append(RedisCommand("WAIT", .integer(acks), .integer(configuration.queue.replicaAckTimeout.milliseconds))
                    .routed(withSlotOf: stream))
            }
        }
        let replies = try await redis.send(batch: commands)
        for write in writes { _ = try replies[write.index].get() }
        return writes.map(\.node)
    }

    /// Posts on a cluster with the queue driver: routing needs reads, so posts
    /// run one after another in a chain of tasks (the order of the calls).
    func postAcrossSlots(_ target: Envelope.Target, _ message: WebSocketMessage, toNode: String) {
        let next = postChain.withLock { previous -> Task<Void, Never> in
            let task = Task { [previous] in
                await previous?.value
                do { _ = try await self.enqueueAcrossSlots(target, message, toNode: toNode) } catch let error as RedisError {
                    self.postFailed(error)
                } catch {
                    self.postFailed(.connectionLost)
                }
            }
            previous = task
            return task
        }
        _ = next
    }
}
