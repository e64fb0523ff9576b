import Logging
import Synchronization

/// Who is alive: this node's heartbeat, the janitor that removes the
/// relations of nodes whose heartbeat lapsed, and the renewal of this node's
/// relations before their TTL runs out.
///
/// Every `heartbeatInterval` the node writes `<ns>:alive:<id>` = its epoch,
/// expiring after `livenessWindow`, and adds itself to `<ns>:nodes`. A
/// heartbeat that finds its key gone (Redis was out of reach past the window)
/// or that re-adds the node to the set (a janitor took it out) means this
/// node was considered dead: it writes its bindings and rooms again.
final class Liveness: Sendable {
    let id: String
    let epoch: UInt64
    private let redis: any RedisCommands
    private let keys: ClusterKeys
    private let commands: RelationCommands
    private let registry: LocalRegistry
    private let configuration: ClusterConfiguration
    private let logger: Logger
    /// Set after the first heartbeat: a later one that finds no key means we were dead meanwhile.
    private let announced = Atomic<Bool>(false)

    /// Room presence, when on: a dead node's members leave (one event per user, whichever janitor runs it).
    private let presence: RoomPresence?

    init(id: String, epoch: UInt64, redis: any RedisCommands, keys: ClusterKeys, commands: RelationCommands,
         registry: LocalRegistry, configuration: ClusterConfiguration, logger: Logger, presence: RoomPresence? = nil) {
        self.presence = presence
        self.id = id
        self.epoch = epoch
        self.redis = redis
        self.keys = keys
        self.commands = commands
        self.registry = registry
        self.configuration = configuration
        self.logger = logger
    }

    /// Heartbeats, the janitor and relation refreshes, until cancelled.
    func run() async {
        let clock = ContinuousClock()
        var lastRefresh = clock.now
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: configuration.heartbeatInterval)
            } catch {
                return
            }
            do {
                try await heartbeat()
                try await removeDeadNodes()
                if clock.now - lastRefresh >= configuration.ttl / 3 {
                    try await refreshRelations()
                    lastRefresh = clock.now
                }
            } catch {
                logger.warning("liveness round failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Announces this node: its epoch under the heartbeat key (expiring after
    /// the liveness window) and its id in the set of nodes.
    func heartbeat() async throws {
        let replies = try await redis.send(batch: [
            RedisCommand("SET", .string(keys.alive(id)), .string(DistributedFD.hex(epoch: epoch)),
                         "PX", .integer(configuration.livenessWindow.milliseconds), "GET"),
            RedisCommand("SADD", .string(keys.nodes), .string(id)),
        ])
        try replies.throwFirstFailure()
        // Our heartbeat had lapsed, or a janitor took us out of the node set (it does
        // that last, after removing our relations — so this also catches a janitor
        // that saw us dead just before our heartbeat came back). Put them back.
        let lapsed = (try? replies[0].get())?.isNull == true
        let removed = (try? replies[1].get())?.int == 1
        if announced.exchange(true, ordering: .relaxed), lapsed || removed {
            logger.warning("this node was considered dead; registering its connections again")
            try await reregister()
        }
    }

    /// Writes every local binding and room membership to Redis again.
    private func reregister() async throws {
        var all: [RedisCommand] = []
        for (fd, uid) in registry.bindings() {
            all += commands.bind(DistributedFD(node: id, epoch: epoch, fd: fd), uid: uid)
        }
        for room in registry.localRooms() { all += commands.join(node: id, room: room) }
        try await redis.send(inBatches: all)
    }

    /// Renews the TTL of every relation of this node, in pipelined batches.
    private func refreshRelations() async throws {
        try await redis.send(inBatches: registry.bindings().flatMap { fd, uid in
            commands.refresh(DistributedFD(node: id, epoch: epoch, fd: fd), uid: uid)
        })
    }

    /// The janitor: every node whose heartbeat has lapsed loses its relations.
    private func removeDeadNodes() async throws {
        let nodes = try await redis.send(RedisCommand("SMEMBERS", .string(keys.nodes))).array?.compactMap(\.string) ?? []
        let others = nodes.filter { $0 != id }
        guard !others.isEmpty else { return }
        let alive = try await heartbeats(of: others)
        for node in others where alive[node] == .gone {
            logger.info("node is gone; removing its relations", metadata: ["dead": "\(node)"])
            try await removeRelations(ofNode: node, keepEpoch: nil)
            try await removeRoomMemberships(ofNode: node, keepEpoch: nil)
            _ = try await redis.send(RedisCommand("SREM", .string(keys.nodes), .string(node)))
        }
    }

    /// At start: relations left by an earlier run of this node id (a crash) go.
    func removeStaleRelationsOfThisNode() async {
        do {
            try await removeRelations(ofNode: id, keepEpoch: epoch)
            try await removeRoomMemberships(ofNode: id, keepEpoch: epoch)
        } catch {
            logger.warning("could not remove relations of an earlier run", metadata: ["error": "\(error)"])
        }
    }

    /// On shutdown: this node's relations and heartbeat go, so nobody is sent
    /// to a connection that no longer exists.
    func leave() async {
        do {
            try await removeRelations(ofNode: id, keepEpoch: nil)
            try await removeRoomMemberships(ofNode: id, keepEpoch: nil)
            _ = try await redis.send(batch: [
                RedisCommand("DEL", .string(keys.alive(id))),
                RedisCommand("SREM", .string(keys.nodes), .string(id)),
                RedisCommand("DEL", .string(keys.nodeFDs(id))),
            ])
        } catch {
            logger.warning("could not remove this node's relations on shutdown", metadata: ["error": "\(error)"])
        }
    }

    /// The subset of `fds` whose node is alive in the same epoch.
    func live(_ fds: [DistributedFD]) async throws -> [DistributedFD] {
        let alive = try await heartbeats(of: Array(Set(fds.map(\.node))))
        return fds.filter { alive[$0.node] == .alive($0.epoch) }
    }

    /// The subset of `fds` whose node is certainly gone or restarted (a
    /// heartbeat that could not be read counts as neither).
    func dead(_ fds: [DistributedFD]) async throws -> [DistributedFD] {
        let alive = try await heartbeats(of: Array(Set(fds.map(\.node))))
        return fds.filter { fd in
            switch alive[fd.node] {
            case .alive(let epoch): epoch != fd.epoch
            case .gone: true
            case .unknown, nil: false
            }
        }
    }

    // MARK: Internals

    /// Removes the relations `node` recorded, except those of `keepEpoch`.
    private func removeRelations(ofNode node: String, keepEpoch: UInt64?) async throws {
        let members = try await redis.send(RedisCommand("SMEMBERS", .string(keys.nodeFDs(node)))).array ?? []
        let fds = members.compactMap { $0.string.flatMap(DistributedFD.init) }.filter { $0.epoch != keepEpoch }
        guard !fds.isEmpty else { return }
        let users = try await redis.send(batch: fds.map { RedisCommand("GET", .string(keys.fd($0))) })
        var all: [RedisCommand] = []
        for (fd, user) in zip(fds, users) {
            if let uid = try? user.get().string {
                all += commands.unbind(fd, uid: uid)
            } else {
                all += [RedisCommand("DEL", .string(keys.fd(fd))),
                        RedisCommand("SREM", .string(keys.nodeFDs(node)), .string(fd.description))]
            }
        }
        try await redis.send(inBatches: all)
    }

    /// Removes `node` from every room it had members of (and, with presence,
    /// its members from the rooms' member lists, except those of `keepEpoch`).
    private func removeRoomMemberships(ofNode node: String, keepEpoch: UInt64?) async throws {
        let rooms = try await redis.send(RedisCommand("SMEMBERS", .string(keys.nodeRooms(node)))).array?.compactMap(\.string) ?? []
        guard !rooms.isEmpty else { return }
        try await presence?.removeMembers(ofNode: node, keepEpoch: keepEpoch, rooms: rooms)
        try await redis.send(inBatches: commands.leave(node: node, rooms: rooms))
    }

    /// What a node's heartbeat key says.
    private enum Heartbeat: Equatable {
        case alive(UInt64)
        case gone
        /// Could not be read: neither alive for a send nor dead for the janitor.
        case unknown
    }

    /// Each node's heartbeat: `GET` per node, pipelined (not `MGET`: on a Redis
    /// Cluster the keys live in different slots).
    private func heartbeats(of nodes: [String]) async throws -> [String: Heartbeat] {
        guard !nodes.isEmpty else { return [:] }
        let replies = try await redis.send(batch: nodes.map { RedisCommand("GET", .string(keys.alive($0))) })
        var result: [String: Heartbeat] = [:]
        for (node, reply) in zip(nodes, replies) {
            switch reply {
            case .success(let value):
                result[node] = value.string.flatMap { UInt64($0, radix: 16) }.map(Heartbeat.alive) ?? .gone
            case .failure:
                result[node] = .unknown
            }
        }
        return result
    }
}
