import NIOCore

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
/// Cost: two to three round trips per send instead of one, not atomic (a node
/// that joins between the read and the write misses that message, as it would
/// have a moment earlier). Posts need those reads too, so they run one after
/// another in a chain, in call order.
struct ClusterQueueDriver: DeliveryDriver {
    let cluster: RedisClusterClient
    let context: DriverContext
    let consumers: QueueConsumers
    private let chain = PostChain()

    init(cluster: RedisClusterClient, context: DriverContext, consumers: QueueConsumers) {
        self.cluster = cluster
        self.context = context
        self.consumers = consumers
    }

    func send(_ delivery: RemoteDelivery) async throws -> [Int] {
        let keys = context.keys
        var epochs: [String: UInt64] = [:]
        switch delivery.destination {
        case .users(let uids):
            let found = try await UserNodes.read(uids, from: cluster, context: context)
            let written = try await append(delivery.envelope, epochs: found.epochs)
            return found.counts(reached: Set(written))
        case .user(let uid):
            let found = try await UserNodes.read([uid], from: cluster, context: context)
            epochs = found.epochs
        case .connections(let node, let epoch, _):
            epochs[node] = epoch
        case .room, .everyone:
            let set = if case .room(let room) = delivery.destination { keys.roomNodes(room) } else { keys.nodes }
            let nodes = try await cluster.send(RedisCommand("SMEMBERS", .string(set))).array?.compactMap(\.string) ?? []
            let alive = try await cluster.send(batch: nodes.map { RedisCommand("GET", .string(keys.alive($0))) })
            for (node, value) in zip(nodes, alive) {
                if let text = (try? value.get())?.string, let epoch = UInt64(text, radix: 16) { epochs[node] = epoch }
            }
        }
        epochs[context.id] = nil
        return [try await append(delivery.envelope, epochs: epochs).count]
    }

    func post(_ delivery: RemoteDelivery) {
        let context = self.context
        chain.append {
            do { _ = try await send(delivery) } catch { context.postFailed(error) }
        }
    }

    func run(route: @escaping @Sendable (Envelope) async -> Void) async {
        await consumers.run(route: route)
    }

    /// One `XADD` per node's stream (with that node's epoch), pipelined per
    /// master, each followed by `WAIT` for `queue.replicaAcks` replicas (only
    /// as many as the master has: right after a failover it may have none).
    /// Returns the nodes written to; a failed `XADD` fails the call (the caller may retry).
    private func append(_ envelope: ByteBuffer, epochs: [String: UInt64]) async throws -> [String] {
        var commands: [RedisCommand] = []
        var writes: [(node: String, index: Int)] = []
        let queue = context.queue
        for (node, epoch) in epochs where node != context.id {
            let stream = context.keys.queue(node)
            writes.append((node, commands.count))
            commands.append(RedisCommand("XADD", .string(stream), "MAXLEN", "~", .integer(queue.maxLength), "*",
                                         "epoch", .string(DistributedFD.hex(epoch: epoch)), "env", .bytes(envelope)))
            let acks = min(queue.replicaAcks, cluster.replicaCount(ofSlot: RedisClusterSlot.of(stream)))
            if acks > 0 {
                commands.append(RedisCommand("WAIT", .integer(acks), .integer(queue.replicaAckTimeout.milliseconds))
                    .routed(withSlotOf: stream))
            }
        }
        guard !commands.isEmpty else { return [] }
        let replies = try await cluster.send(batch: commands)
        for write in writes { _ = try replies[write.index].get() }
        return writes.map(\.node)
    }
}
