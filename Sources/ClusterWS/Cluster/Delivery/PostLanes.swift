import Synchronization

/// Posts that need Redis's answers before they can be written (a routing
/// read first, on a Redis Cluster) run in lanes: posts for one destination
/// run one after another in call order, posts for different destinations
/// never wait for each other (a shard in failover holds up only its own).
/// None waits for the caller.
final class PostLanes: Sendable {
    private struct State {
        var lanes: [Int: (task: Task<Void, Never>, ticket: UInt64)] = [:]
        var nextTicket: UInt64 = 0
    }

    private let state = Mutex(State())

    /// Lanes in use (for tests): a lane is gone once its last post finished.
    var activeLanes: Int { state.withLock { $0.lanes.count } }

    /// Runs `work` after every earlier one of `lane` has finished.
    func append(lane: Int, _ work: @escaping @Sendable () async -> Void) {
        state.withLock { state in
            state.nextTicket &+= 1
            let ticket = state.nextTicket
            let previous = state.lanes[lane]?.task
            let task = Task {
                await previous?.value
                await work()
                self.finished(lane: lane, ticket: ticket)
            }
            state.lanes[lane] = (task, ticket)
        }
    }

    private func finished(lane: Int, ticket: UInt64) {
        state.withLock { state in
            if state.lanes[lane]?.ticket == ticket { state.lanes[lane] = nil }
        }
    }
}

extension Destination {
    /// The post lane of this destination: its routing key's hash slot, so
    /// posts for one user, room or node keep their order and posts for
    /// different ones (on different shards) run side by side.
    var lane: Int {
        switch self {
        case .user(let uid): RedisClusterSlot.of("u:" + uid)
        case .users(let uids): RedisClusterSlot.of("m:" + (uids.first ?? ""))
        case .room(let room): RedisClusterSlot.of("r:" + room)
        case .connections(let node, _, _): RedisClusterSlot.of("n:" + node)
        case .everyone: -1
        }
    }
}
