import Synchronization

/// Waits until replicas hold what this node wrote to a Redis Cluster master:
/// `WAIT` in rounds, one at a time per master. `WAIT` blocks the connection
/// it is sent on, and every send shares the master's one connection, so a
/// `WAIT` per write would queue them (a replica that stopped answering would
/// then stall the connection for a timeout per write). One round's `WAIT`
/// covers every write that connection carried before it: callers whose
/// write was answered before a round started join it, later ones the next.
final class ReplicaAcks: Sendable {
    private struct Master {
        var running = false
        var waiting: [CheckedContinuation<Bool, Never>] = []
    }

    private let cluster: RedisClusterClient
    private let replicas: Int
    private let timeout: Duration
    private let masters = Mutex<[RedisConfiguration.Address: Master]>([:])

    /// - Parameters:
    ///   - replicas: how many replicas must confirm (`queue.replicaAcks`).
    ///   - timeout: how long one round waits for them (`queue.replicaAckTimeout`).
    init(cluster: RedisClusterClient, replicas: Int, timeout: Duration) {
        self.cluster = cluster
        self.replicas = replicas
        self.timeout = timeout
    }

    /// Whether enough replicas of `key`'s master confirmed every write this
    /// node made there so far (as many as the slot map lists, at most
    /// `replicas`: right after a failover a master may have none, and then
    /// there is nothing to wait for).
    func confirmed(writesTo key: String) async -> Bool {
        let slot = RedisClusterSlot.of(key)
        guard min(replicas, cluster.replicaCount(ofSlot: slot)) > 0, let master = cluster.owner(ofSlot: slot) else { return true }
        return await withCheckedContinuation { continuation in
            let start = masters.withLock { masters -> Bool in
                masters[master, default: Master()].waiting.append(continuation)
                guard masters[master]?.running == false else { return false }
                masters[master]?.running = true
                return true
            }
            if start { Task { await self.rounds(on: master, key: key) } }
        }
    }

    private func rounds(on master: RedisConfiguration.Address, key: String) async {
        while true {
            let waiting = masters.withLock { masters -> [CheckedContinuation<Bool, Never>] in
                let waiting = masters[master]?.waiting ?? []
                if waiting.isEmpty { masters[master] = nil } else { masters[master]?.waiting = [] }
                return waiting
            }
            guard !waiting.isEmpty else { return }
            let wanted = min(replicas, cluster.replicaCount(ofSlot: RedisClusterSlot.of(key)))
            var confirmed = wanted == 0
            if !confirmed {
                let command = RedisCommand("WAIT", .integer(wanted), .integer(timeout.milliseconds)).routed(withSlotOf: key)
                confirmed = ((try? await cluster.send(command, timeout: timeout + .seconds(1)))?.int ?? 0) >= wanted
            }
            for continuation in waiting { continuation.resume(returning: confirmed) }
        }
    }
}
