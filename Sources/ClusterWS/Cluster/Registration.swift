import Logging

/// Connections joining the cluster.
///
/// Before the upgrade, ``admit(uid:connection:)`` checks the uid and the
/// per-user limit **and records the connection in the same step**, on Redis
/// (one script on the user's set, so it works on one slot of a Redis Cluster
/// too): concurrent handshakes of one uid, on any nodes, cannot overshoot
/// `maxConnectionsPerUser`. Connections of dead nodes still in the set do not
/// count: when the set is full they are pruned (by heartbeat) and the check
/// runs once more. A handshake that was admitted but never opened gives its
/// place back (``release(uid:connection:)``).
///
/// After the upgrade, ``register(_:)`` adds the connection to the registry
/// and binds it (subscription, relations).
struct Registration: Sendable {
    let id: String
    let epoch: UInt64
    let registry: LocalRegistry
    let redis: any RedisCommands
    let keys: ClusterKeys
    let commands: RelationCommands
    let checks: ArgumentChecks
    let liveness: Liveness
    let reaper: ConnectionReaper
    let maxConnectionsPerUser: Int
    let logger: Logger
    let recovery: HistoryRecovery

    /// Records `member` in a user's set unless the set already holds `limit`.
    /// KEYS[1]: the user's set. ARGV: member, limit, ttl in seconds. Returns 1 if recorded.
    static let reserveScript = LuaScript("""
    if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
    if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
    redis.call('SADD', KEYS[1], ARGV[1])
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    return 1
    """)

    /// Before the upgrade: whether `uid` may have this connection. Admitted, it
    /// is already counted in the user's set.
    func admit(uid: String, connection: UInt64) async throws -> WebSocketUpgradeDecision {
        do {
            try checks.check(uid: uid)
        } catch {
            return .badRequest("\(error)")
        }
        let fd = DistributedFD(node: id, epoch: epoch, fd: connection)
        if try await reserve(fd, uid: uid) { return .accept(attributes: ["uid": uid]) }
        // Full: connections of nodes that died (and no janitor removed yet) may still count.
        try await pruneDead(of: uid)
        if try await reserve(fd, uid: uid) { return .accept(attributes: ["uid": uid]) }
        checks.counters.hit(.connectionsPerUser)
        return .tooManyRequests("user \(uid) already has \(maxConnectionsPerUser) connections")
    }

    /// An admitted handshake that never opened: its place in the user's set goes.
    func release(uid: String, connection: UInt64) {
        let fd = DistributedFD(node: id, epoch: epoch, fd: connection)
        redis.post(RedisCommand("SREM", .string(keys.user(uid)), .string(fd.description))) { _ in }
    }

    /// After the upgrade: adds the connection to the registry and binds its
    /// uid; `nil` if it closed meanwhile (then nothing of it is left behind).
    func register(_ socket: WebSocket) async -> ClusterSocket? {
        let fd = DistributedFD(node: id, epoch: epoch, fd: socket.id)
        await registry.add(fd.fd, socket, session: recovery.session(for: socket))
        if let uid = socket.attributes["uid"] {
            do {
                try await bind(fd, uid: uid)
            } catch {
                if await socket.closeCode == nil {
                    logger.warning("bind failed; closing", metadata: ["fd": "\(fd)", "uid": "\(uid)", "error": "\(error)"])
                    await socket.close(code: .internalError, reason: "could not register")
                }
            }
        }
        // The client may have gone while it was being registered; the reaper may then
        // have run before the registration and found nothing, or while it ran, with its
        // Redis writes overtaking ours. Forget it here, and remove its relations again
        // (idempotent, and after this task's own writes to Redis, so nothing is left behind).
        if await socket.closeCode != nil {
            await reaper.forget([fd.fd])
            if let uid = socket.attributes["uid"] {
                _ = try? await redis.send(batch: commands.unbind(fd, uid: uid))
            }
            return nil
        }
        logger.debug("connection open", metadata: ["fd": "\(fd)", "uid": "\(socket.attributes["uid"] ?? "-")"])
        return ClusterSocket(fd: fd, socket: socket, uid: socket.attributes["uid"])
    }

    /// Binds a connection of this node to `uid` (replacing an earlier uid):
    /// the subscription to the user's channel, then the relations.
    func bind(_ fd: DistributedFD, uid: String) async throws {
        let baseline = await recovery.baseline(registry.session(fd.fd), .user(uid))
        let previous = try await registry.bind(fd.fd, uid: uid)
        var all: [RedisCommand] = []
        if let previous { all += commands.unbind(fd, uid: previous) }
        all += commands.bind(fd, uid: uid)
        try await redis.send(batch: all).throwFirstFailure()
        // A client-protocol connection: its user's stream, recovered (the channel is subscribed).
        if previous != uid, let session = registry.session(fd.fd) {
            if let previous { session.end(.user(previous)) }
            await recovery.start(session, .user(uid), baseline: baseline)
        }
    }

    private func reserve(_ fd: DistributedFD, uid: String) async throws -> Bool {
        let reply = try await redis.evaluate(Self.reserveScript, keys: [keys.user(uid)], [
            .string(fd.description), .integer(maxConnectionsPerUser), .integer(commands.ttl.wholeSeconds),
        ])
        return reply.int == 1
    }

    /// Removes from `uid`'s set the connections whose node is dead or restarted.
    private func pruneDead(of uid: String) async throws {
        let members = try await redis.send(RedisCommand("SMEMBERS", .string(keys.user(uid)))).array ?? []
        let dead = try await liveness.dead(members.compactMap { $0.string.flatMap(DistributedFD.init) })
        guard !dead.isEmpty else { return }
        _ = try await redis.send(RedisCommand("SREM", arguments: [.string(keys.user(uid))] + dead.map { .string($0.description) }))
    }
}
