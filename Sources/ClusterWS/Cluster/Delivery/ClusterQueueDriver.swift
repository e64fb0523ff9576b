import NIOCore

/// The queue driver on a Redis Cluster.
///
/// The single-server driver routes with one Lua script, but that script reads
/// and writes keys of several slots (a user's fds, the live nodes, the target
/// nodes' streams), which a cluster refuses. Here the same routing runs from
/// the node, a step per slot: read the targets (`SMEMBERS`, the heartbeats),
/// then one `XADD` per target node's stream, pipelined per master, and with
/// `queue.replicaAcks` > 0 a `WAIT` round on each master written to (see
/// ``ReplicaAcks``) — so an entry a send reported is on a replica too and
/// survives its master's crash.
/// Cost: two to three round trips per send instead of one, not atomic (a node
/// that joins between the read and the write misses that message, as it would
/// have a moment earlier). Posts need those reads too, so they run in lanes
/// (``PostLanes``): in call order per destination, side by side across them.
struct ClusterQueueDriver: DeliveryDriver {
    let cluster: RedisClusterClient
    let context: DriverContext
    let consumers: QueueConsumers
    private let lanes = PostLanes()
    /// `WAIT` rounds when `queue.replicaAcks` > 0.
    private let acks: ReplicaAcks?

    init(cluster: RedisClusterClient, context: DriverContext, consumers: QueueConsumers) {
        self.cluster = cluster
        self.context = context
        self.consumers = consumers
        acks = context.queue.replicaAcks > 0
            ? ReplicaAcks(cluster: cluster, replicas: context.queue.replicaAcks, timeout: context.queue.replicaAckTimeout)
            : nil
    }

    func send(_ delivery: RemoteDelivery) async throws -> TargetCounts {
        if delivery.keepsHistory, let sent = try await sendWithHistory(delivery) { return sent }
        let keys = context.keys
        var epochs: [String: UInt64] = [:]
        switch delivery.destination {
        case .users(let uids):
            let found = try await UserNodes.read(uids, from: cluster, context: context)
            let written = try await append(delivery.envelope, epochs: found.epochs)
            return TargetCounts(found.counts(reached: Set(written)))
        case .user(let uid):
            let found = try await UserNodes.read([uid], from: cluster, context: context)
            epochs = found.epochs
        case .connections(let node, let epoch, _):
            epochs[node] = epoch
        case .room, .everyone:
            let set = if case .room(let room) = delivery.destination { keys.roomNodes(room) } else { keys.nodes }
            epochs = try await liveNodes(in: set)
        }
        epochs[context.id] = nil
        return .one(try await append(delivery.envelope, epochs: epochs).count)
    }

    /// With history: the message is appended to its stream's history first
    /// (``HistoryScript/appendOnly``, on the stream's slot), then queued with
    /// its position on every node of the user or room — this one's too, so
    /// every node delivers in offset order. Two steps, not one: a node that
    /// dies between them leaves the message in history only, and two
    /// senders' messages may reach a node's queue in the other order; a
    /// client-protocol connection is unaffected (it takes messages in offset
    /// order, and reads a missing one from history), raw ones may see that
    /// order. `nil` for other destinations.
    private func sendWithHistory(_ delivery: RemoteDelivery) async throws -> TargetCounts? {
        let keys = context.keys
        let channel: String
        var epochs: [String: UInt64]
        switch delivery.destination {
        case .user(let uid):
            channel = keys.userChannel(uid)
            epochs = try await UserNodes.read([uid], from: cluster, context: context, includingSelf: true).epochs
        case .room(let room):
            channel = keys.roomChannel(room)
            epochs = try await liveNodes(in: keys.roomNodes(room))
        default:
            return nil
        }
        let (scriptKeys, arguments) = HistoryScript.call(delivery, channel: channel, history: context.history)
        let position = try HistoryScript.position(in: try await cluster.evaluate(HistoryScript.appendOnly, keys: scriptKeys, arguments))
        var envelope = delivery.envelope
        try Envelope.appendHistory(position, to: &envelope)
        return .one(try await append(envelope, epochs: epochs, includingSelf: true).count)
    }

    /// The nodes in `set` that are alive, with their epochs.
    private func liveNodes(in set: String) async throws -> [String: UInt64] {
        let keys = context.keys
        let nodes = try await cluster.send(RedisCommand("SMEMBERS", .string(set))).array?.compactMap(\.string) ?? []
        let alive = try await cluster.send(batch: nodes.map { RedisCommand("GET", .string(keys.alive($0))) })
        var epochs: [String: UInt64] = [:]
        for (node, value) in zip(nodes, alive) {
            if let text = (try? value.get())?.string, let epoch = UInt64(text, radix: 16) { epochs[node] = epoch }
        }
        return epochs
    }

    func post(_ delivery: RemoteDelivery) {
        let context = self.context
        lanes.append(lane: delivery.destination.lane) {
            // A post never waits out a failover: a shard without a master drops it at once (counted).
            do { _ = try await RedisClusterClient.$failoverWait.withValue(.zero) { try await send(delivery) } } catch {
                context.postFailed(error)
            }
        }
    }

    func run(route: @escaping @Sendable (Envelope) async -> Void) async {
        await consumers.run(route: route)
    }

    /// One `XADD` per node's stream (with that node's epoch), pipelined per
    /// master; then, with `queue.replicaAcks`, a round of ``ReplicaAcks`` per
    /// master written to. Returns the nodes written to; a failed `XADD` fails
    /// the call (the caller may retry), and so does a write no replica
    /// confirmed in time (``ClusterError/notReplicated(node:)``: it is on the
    /// master and may still arrive, so a retry may duplicate it).
    private func append(_ envelope: ByteBuffer, epochs: [String: UInt64], includingSelf: Bool = false) async throws -> [String] {
        var commands: [RedisCommand] = []
        var nodes: [String] = []
        let queue = context.queue
        for (node, epoch) in epochs where includingSelf || node != context.id {
            nodes.append(node)
            commands.append(RedisCommand("XADD", .string(context.keys.queue(node)), "MAXLEN", "~", .integer(queue.maxLength), "*",
                                         "epoch", .string(DistributedFD.hex(epoch: epoch)), "env", .bytes(envelope)))
        }
        guard !commands.isEmpty else { return [] }
        let replies = try await cluster.send(batch: commands)
        for reply in replies { _ = try reply.get() }
        guard let acks else { return nodes }
        let keys = context.keys
        let unconfirmed = await withTaskGroup(of: String?.self) { group in
            for node in nodes {
                group.addTask { await acks.confirmed(writesTo: keys.queue(node)) ? nil : node }
            }
            var unconfirmed: String?
            for await node in group where node != nil { unconfirmed = node }
            return unconfirmed
        }
        if let unconfirmed { throw ClusterError.notReplicated(node: unconfirmed) }
        return nodes
    }
}
