import CoreMetrics
import NIOCore

/// The one path every send takes, `send…` and `post…` alike:
///
/// 1. ``plan(_:_:)`` checks the arguments, finds this node's own targets and
///    encodes the envelope for the others, once;
/// 2. ``send(_:)`` or ``post(_:)`` writes to the local connections (through the
///    transport's ordered per-loop queue) and hands the remote part to the
///    driver, waiting for Redis's answer or not.
///
/// A class: every send reaches it through the node, and a struct of this many
/// references cost a retain and a release of each per use.
final class DeliveryPipeline: Sendable {
    let id: String
    let epoch: UInt64
    let registry: LocalRegistry
    let server: WebSocketServer
    let driver: any DeliveryDriver
    let checks: ArgumentChecks
    let metrics: ClusterMetrics
    /// Which streams keep history: their messages reach every connection,
    /// this node's too, through Redis (in offset order, with their positions).
    let history: ClusterConfiguration.History
    /// Numbers every envelope, so a receiver can drop a second copy.
    let sequence = MessageSequence()

    init(id: String, epoch: UInt64, registry: LocalRegistry, server: WebSocketServer, driver: any DeliveryDriver,
         checks: ArgumentChecks, metrics: ClusterMetrics, history: ClusterConfiguration.History = .init()) {
        self.id = id
        self.epoch = epoch
        self.registry = registry
        self.server = server
        self.driver = driver
        self.checks = checks
        self.metrics = metrics
        self.history = history
    }

    /// Resolves a send: checks, local targets, the remote part (encoded once).
    /// - Throws: ``ClusterError`` for a bad name, too many targets, or a message
    ///   that cannot be encoded; nothing has been sent then.
    func plan(_ destination: Destination, _ message: WebSocketMessage) throws(ClusterError) -> DeliveryPlan {
        try checks.check(destination)
        var local: DeliveryPlan.Local
        var reachedHere: TargetCounts
        var remote: Destination? = destination
        switch destination {
        case .user(let uid):
            let sockets = registry.sockets(user: uid)
            (local, reachedHere) = (.sockets(sockets), .one(sockets.isEmpty ? 0 : 1))
        case .room(let room):
            let sockets = registry.sockets(room: room)
            (local, reachedHere) = (.sockets(sockets), .one(sockets.isEmpty ? 0 : 1))
        case .users(let uids):
            var seen = Set<String>()
            let distinct = uids.filter { seen.insert($0).inserted }
            let perUser = distinct.map { registry.sockets(user: $0) }
            local = .sockets(perUser.flatMap { $0 })
            reachedHere = TargetCounts(perUser.map { $0.isEmpty ? 0 : 1 })
            remote = distinct.isEmpty ? nil : .users(distinct)
        case .connections(let node, let targetEpoch, let fds) where node == id:
            let sockets = targetEpoch == epoch ? registry.sockets(fds: fds) : []
            (local, reachedHere, remote) = (.sockets(sockets), .one(sockets.isEmpty ? 0 : 1), nil)
        case .connections:
            (local, reachedHere) = (.sockets([]), .one(0))
        case .everyone(let except):
            let mine = Set(except.compactMap { $0.node == id && $0.epoch == epoch ? $0.fd : nil })
            (local, reachedHere) = (.everyone(except: mine), .one(1))
        }
        var keepsHistory = false
        switch destination {
        case .user: keepsHistory = history.users
        case .room: keepsHistory = history.rooms
        default: break
        }
        if keepsHistory {
            (local, reachedHere, remote) = (.sockets([]), .one(0), destination)
        }
        var delivery: RemoteDelivery?
        if let remote {
            let envelope = Envelope(target: remote.envelopeTarget, kind: message.kind, originNode: id,
                                    originEpoch: epoch, sequence: sequence.next(), payload: message.data)
            do {
                try envelope.validate()
            } catch {
                throw .unencodable("\(error)")
            }
            delivery = RemoteDelivery(destination: remote, message: envelope, reachedHere: reachedHere,
                                      keepsHistory: keepsHistory)
        }
        return DeliveryPlan(message: message, destination: destination, local: local, reachedHere: reachedHere,
                            remote: delivery)
    }

    /// With user history on, a message to several users is written to each
    /// user's history (each gets its own offset): one plan per distinct user.
    /// `nil` when user history is off (one plan for all, ``plan(_:_:)``).
    func perUserPlans(_ uids: [String], _ message: WebSocketMessage) throws(ClusterError) -> [(uid: String, plan: DeliveryPlan)]? {
        guard history.users else { return nil }
        try checks.check(.users(uids))
        var seen = Set<String>()
        var plans: [(uid: String, plan: DeliveryPlan)] = []
        for uid in uids where seen.insert(uid).inserted { plans.append((uid, try plan(.user(uid), message))) }
        return plans
    }

    /// Carries out `plan` and waits for Redis: per target, how many nodes had
    /// it (this one included).
    ///
    /// A broadcast is paced by this node's fan-out (see
    /// ``WebSocketServerConfiguration/fanOutPacingBytes``): it returns at once
    /// while the local writes keep up, so awaited broadcasts coalesce.
    func send(_ plan: DeliveryPlan) async throws -> TargetCounts {
        let pacing = deliverLocally(plan, paced: true)
        guard let remote = plan.remote else {
            for written in pacing { try? await written.get() }
            return plan.reachedHere
        }
        let others: TargetCounts
        do {
            others = try await driver.send(remote)
        } catch RedisError.shardUnavailable(let slot) {
            throw ClusterError.shardUnavailable(slot: slot)
        }
        for written in pacing { try? await written.get() }
        return plan.reachedHere + others
    }

    /// Carries out `plan` without waiting for Redis's answer. While more than
    /// `postPacingBytes` of posts await Redis's answers on the caller's
    /// connection, it first waits for room (back-pressure: a relay loop slows
    /// down, and stops reading its socket, instead of its posts failing).
    func post(_ plan: DeliveryPlan) async {
        _ = deliverLocally(plan, paced: false)
        guard let remote = plan.remote else { return }
        if driver.isPostBacklogged { await driver.waitForPostRoom() }
        driver.post(remote)
    }

    /// Writes the local part; returns, for a paced broadcast, what to await.
    private func deliverLocally(_ plan: DeliveryPlan, paced: Bool) -> [EventLoopFuture<Void>] {
        metrics.messagesOut[plan.destination.metricLabel]?.increment()
        switch plan.local {
        case .sockets(let sockets):
            metrics.deliveredLocal.increment(by: sockets.count)
            server.send(plan.message, to: sockets)
            return []
        case .everyone(let except):
            // Through the transport's per-loop queue, which targeted local deliveries share:
            // order holds between them, and back-to-back broadcasts merge into one write per connection.
            metrics.deliveredLocal.increment(by: max(server.connectionCount - except.count, 0))
            return server.enqueue([plan.message], except: except, notify: paced)
        }
    }
}
