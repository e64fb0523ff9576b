import Logging
import Synchronization

/// Cleans up after closed connections: they leave the registry, their rooms
/// and their relations in Redis.
///
/// Every close (client, network drop, limit, shutdown) is noted from the
/// transport's close callback; one task takes everything noted since its last
/// round, so a mass disconnect costs one registry call, one `UNSUBSCRIBE` and
/// pipelined removals per burst instead of one round trip per connection.
final class ConnectionReaper: Sendable {
    private let node: String
    private let epoch: UInt64
    private let registry: LocalRegistry
    private let redis: any RedisCommands
    private let commands: RelationCommands
    private let logger: Logger
    /// Set when the node stops like a crash: nothing is removed from Redis.
    private let abandoned: Atomic<Bool>
    private let pending = Mutex<[UInt64]>([])
    private let wakeups: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation

    /// Room presence, when on: closed connections leave their rooms' member lists.
    private let presence: RoomPresence?
    private let presenceHub: PresenceHub?

    init(node: String, epoch: UInt64, registry: LocalRegistry, redis: any RedisCommands, commands: RelationCommands,
         logger: Logger, presence: RoomPresence? = nil, presenceHub: PresenceHub? = nil) {
        self.presence = presence
        self.presenceHub = presenceHub
        self.node = node
        self.epoch = epoch
        self.registry = registry
        self.redis = redis
        self.commands = commands
        self.logger = logger
        self.abandoned = Atomic(false)
        (wakeups, wake) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// A connection closed (called on its event loop; never blocks).
    func noteClosed(_ fd: UInt64) {
        let first = pending.withLock { pending -> Bool in
            pending.append(fd)
            return pending.count == 1
        }
        if first { wake.yield() }
    }

    /// Cleans up until ``finish()``, then once more for the last closes.
    func run() async {
        for await _ in wakeups { await forget(takePending()) }
        await forget(takePending())
    }

    /// No more closes will come (the server has stopped).
    func finish() { wake.finish() }

    /// From now on, forget connections locally only (a crash leaves Redis as it is).
    func abandon() { abandoned.store(true, ordering: .relaxed) }

    var isAbandoned: Bool { abandoned.load(ordering: .relaxed) }

    /// Closed connections leave the registry, their rooms and their relations,
    /// in one registry call and pipelined Redis batches. Idempotent.
    func forget(_ fds: [UInt64]) async {
        guard !fds.isEmpty else { return }
        let (bound, emptiedRooms, memberships) = await registry.remove(fds)
        guard !isAbandoned else { return }
        if let presence {
            let logger = self.logger
            presence.leave(memberships.map { (DistributedFD(node: node, epoch: epoch, fd: $0.fd), $0.rooms) }) { error in
                logger.warning("a closed connection could not leave a room's presence; a janitor will when this node stops",
                               metadata: ["error": "\(error)"])
            }
        }
        if let presenceHub, presenceHub.notifiesMembers {
            for room in emptiedRooms { await presenceHub.release(room) }
        }
        var all = bound.flatMap { fd, uid in commands.unbind(DistributedFD(node: node, epoch: epoch, fd: fd), uid: uid) }
        all += commands.leave(node: node, rooms: emptiedRooms)
        do {
            try await redis.send(inBatches: all)
        } catch {
            logger.warning("could not remove relations of closed connections; the TTL or a janitor will",
                           metadata: ["error": "\(error)"])
        }
    }

    private func takePending() -> [UInt64] {
        pending.withLock { pending in
            defer { pending = [] }
            return pending
        }
    }
}
