@testable import ClusterWS
import EmbeddedRedis
import Foundation
import Synchronization
import Testing

/// One failover experiment: two nodes on a 3+3 Redis Cluster, 12 users on
/// node b, node a relaying 200 messages/s round-robin to them (`send` with a
/// task per message, or `post`), a fault two seconds in, traffic on until
/// delivery has been back for two seconds. Users are chosen so that half
/// have their keys on the shard the fault hits (victims) and half elsewhere
/// (healthy); for a fault that should touch nothing, all are elsewhere.
struct FailoverTraffic {
    enum Fault: String, CaseIterable, Sendable {
        /// SIGKILL the master that owns the victims' keys.
        case killMaster = "master killed"
        /// SIGKILL that master's replica.
        case killReplica = "replica killed"
        /// SIGKILL a master that owns none of the traffic's keys.
        case killUnrelatedMaster = "unrelated master killed"
        /// `CLUSTER FAILOVER` on that master's replica.
        case manualFailover = "manual CLUSTER FAILOVER"
        /// SIGKILL the master of node b's queue stream (queue driver: every user's messages).
        case killStreamMaster = "master of b's stream killed"
    }

    enum Relay: String, Sendable { case send, post }

    /// What one run measured; times from the fault (`ContinuousClock`).
    struct Report: Sendable, CustomStringConvertible {
        var driver: ClusterConfiguration.Driver
        var relay: Relay
        var fault: Fault
        var replicaAcks = 0
        /// When the replica said `role: master` (nil: no promotion in this fault).
        var promotion: Duration?
        /// First delivery to a victim sent after the fault (nil: none needed to resume).
        var resumed: Duration?
        var sent = 0
        var victimsSent = 0
        /// Sends that threw `shardUnavailable`, and the longest such answer.
        var unavailable = 0
        var slowestUnavailable: Duration = .zero
        /// Sends that threw anything else (a command in flight when the link dropped).
        var otherErrors: [String] = []
        var longestSend: Duration = .zero
        /// Messages to victims that never arrived, in all and of those sent after the resume.
        var victimsLost = 0
        var victimsLostAfterResume = 0
        /// `send`s that returned ≥ 1 node but whose message never arrived.
        var acknowledgedLost = 0
        var healthyLost = 0
        var healthySlowest: Duration = .zero
        var duplicates = 0
        var socketsClosed = 0
        var postsDropped = 0
        /// Second copies node b's router dropped (standby subscriptions).
        var duplicatesDropped = 0
        /// The first lost messages to the failing shard: sent at (ms after the fault), answered after (ms), nodes reached.
        var lostSamples: [String] = []

        var resumeAfterPromotion: Duration? {
            guard let promotion, let resumed else { return nil }
            return resumed - promotion
        }

        var description: String {
            func ms(_ duration: Duration?) -> String {
                duration.map { String(format: "%.0f ms", $0.seconds * 1_000) } ?? "—"
            }
            return "failover \(fault.rawValue), \(driver) + \(relay)\(driver == .queue ? " (replicaAcks \(replicaAcks))" : ""): promotion \(ms(promotion)) after the fault, "
                + "delivery back \(ms(resumeAfterPromotion)) after it (\(ms(resumed)) after the fault); "
                + "\(sent) sent (\(victimsSent) to the failing shard); \(unavailable) shardUnavailable (slowest \(ms(slowestUnavailable))), "
                + "\(otherErrors.count) other errors \(Set(otherErrors).sorted()), longest send \(ms(longestSend)); "
                + "lost to the shard \(victimsLost) (\(victimsLostAfterResume) after the resume, \(acknowledgedLost) acknowledged), "
                + "healthy shards lost \(healthyLost), slowest \(ms(healthySlowest)); duplicates \(duplicates); "
                + "posts dropped \(postsDropped); second copies dropped \(duplicatesDropped); sockets closed \(socketsClosed)"
                + (lostSamples.isEmpty ? "" : "; lost \(lostSamples.prefix(10).joined(separator: ", "))")
        }
    }

    let driver: ClusterConfiguration.Driver
    let relay: Relay
    let fault: Fault
    /// `queue.replicaAcks` of the nodes (`WAIT` after each entry when > 0).
    var replicaAcks = 0

    /// A namespace whose infrastructure keys (heartbeats, node set, streams,
    /// node channels) all hash below slot 10923, so the third master of
    /// `redis-cli --cluster create` (10923…16383) holds only user keys.
    static func namespace() -> String {
        for index in 0..<10_000 {
            let namespace = "fo\(index)"
            let keys = ["alive:a", "alive:b", "nodes", "queue:a", "queue:b", "node-fds:a", "node-fds:b", "node:a", "node:b",
                        "node-rooms:a", "node-rooms:b"].map { "\(namespace):\($0)" }
            if keys.allSatisfy({ RedisClusterSlot.of($0) < 10_923 }) { return namespace }
        }
        return "fo"
    }

    func run() async throws -> Report {
        let namespace = Self.namespace()
        let acks = replicaAcks
        return try await withCluster(["a", "b"], namespace: namespace, RoutingCase(driver: driver, backend: .cluster),
                                     configure: { $0.queue.replicaAcks = acks }) { cluster in
            try await run(on: cluster)
        }
    }

    private func run(on cluster: TestCluster) async throws -> Report {
        let redisCluster = try #require(cluster.redisCluster)
        guard case .cluster(let client, _) = cluster["a"].backend else {
            Issue.record("node a is not on a Redis Cluster")
            return Report(driver: driver, relay: relay, fault: fault)
        }
        let keys = cluster["a"].keys
        let driver = self.driver
        func key(_ uid: String) -> String { driver == .pubSub ? keys.userChannel(uid) : keys.user(uid) }
        // The shard the fault is about: the one holding slot 16383 (no infrastructure key),
        // or the one holding node b's stream.
        let streamOwner = try #require(client.owner(ofSlot: RedisClusterSlot.of(keys.queue("b"))))
        let target = fault == .killStreamMaster ? streamOwner : try #require(client.owner(ofSlot: RedisClusterSlot.count - 1))
        let infrastructure = [keys.alive("a"), keys.alive("b"), keys.nodes, keys.queue("a"), keys.queue("b"),
                              keys.nodeChannel("a"), keys.nodeChannel("b")]
        if fault != .killStreamMaster {
            for name in infrastructure { #expect(client.owner(ofSlot: RedisClusterSlot.of(name)) != target, "\(name) on the target shard") }
        }
        let replica = try await Self.replica(of: target.port, in: redisCluster)

        var victims: [String] = []
        var healthy: [String] = []
        let wantVictims = switch fault {
        case .killUnrelatedMaster: 0
        case .killStreamMaster: 12  // every message goes through that stream
        default: 6
        }
        for index in 0..<2_000 where victims.count < wantVictims || healthy.count < 12 - wantVictims {
            let uid = "user\(index)"
            if fault == .killStreamMaster || client.owner(ofSlot: RedisClusterSlot.of(key(uid))) == target {
                if victims.count < wantVictims { victims.append(uid) }
            } else if healthy.count < 12 - wantVictims {
                healthy.append(uid)
            }
        }
        let users = victims + healthy
        let victimSet = Set(victims)
        let noVictims = victims.isEmpty

        let log = TrafficLog()
        var readers: [Task<Void, Never>] = []
        var clients: [ClusterClient] = []
        for uid in users {
            let user = try await ClusterClient.connect(cluster["b"], uid: uid)
            clients.append(user)
            readers.append(Task {
                while !Task.isCancelled {
                    do {
                        let frame = try await user.raw.readFrame()
                        if let number = Int(frame.text) { log.arrived(number) }
                    } catch {
                        if !Task.isCancelled { log.closed() }
                        return
                    }
                }
            })
        }
        defer {
            for reader in readers { reader.cancel() }
            for user in clients { user.close() }
        }

        let clock = ContinuousClock()
        let sender = cluster["a"].sender
        let relay = self.relay
        let traffic = Task {
            var number = 0
            var next = clock.now
            let inFlight = Tasks()
            while !Task.isCancelled {
                let uid = users[number % users.count]
                let current = number
                log.sent(current, to: uid, at: clock.now)
                switch relay {
                case .post:
                    try? await sender.post(uid: uid, .text(String(current)))
                case .send:
                    // A task per message: a send that waits on a failing shard holds up nothing else.
                    inFlight.add(Task {
                        let began = clock.now
                        do {
                            let nodes = try await sender.send(uid: uid, .text(String(current)))
                            log.answered(current, after: clock.now - began, error: nil, acknowledged: nodes > 0)
                        } catch ClusterError.shardUnavailable {
                            log.answered(current, after: clock.now - began, error: "shardUnavailable", acknowledged: false)
                        } catch {
                            log.answered(current, after: clock.now - began, error: "\(error)", acknowledged: false)
                        }
                    })
                }
                number += 1
                next = next + .milliseconds(5)
                try? await Task.sleep(until: next)
            }
            await inFlight.waitAll()
        }

        try await Task.sleep(for: .seconds(2))
        let faultAt = clock.now
        var promotedAt: ContinuousClock.Instant?
        switch fault {
        case .killMaster, .killStreamMaster:
            await redisCluster.nodes.first { $0.port == target.port }?.stop(crash: true)
        case .killReplica:
            await redisCluster.nodes.first { $0.port == replica }?.stop(crash: true)
        case .killUnrelatedMaster:
            await redisCluster.nodes.first { $0.port == target.port }?.stop(crash: true)
        case .manualFailover:
            try await redisCluster.cli(["-p", "\(replica)", "CLUSTER", "FAILOVER"])
        }
        // Wait for the promotion (when there is one), then for delivery to be back.
        if fault == .killMaster || fault == .killStreamMaster || fault == .manualFailover {
            while clock.now - faultAt < .seconds(20) {
                let role = (try? await redisCluster.cli(["-p", "\(replica)", "ROLE"])) ?? ""
                if role.hasPrefix("master") { promotedAt = clock.now; break }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        try? await eventually("delivery to the failing shard", within: .seconds(20)) {
            noVictims || log.firstArrival(toAny: victimSet, sentAfter: faultAt) != nil
        }
        try await Task.sleep(for: .seconds(2))
        traffic.cancel()
        await traffic.value
        try? await Task.sleep(for: .seconds(1))  // the last messages are on their way

        var report = Report(driver: driver, relay: relay, fault: fault, replicaAcks: replicaAcks)
        report.promotion = promotedAt.map { $0 - faultAt }
        let resumedAt = victims.isEmpty ? nil : log.firstArrival(toAny: victimSet, sentAfter: faultAt)
        report.resumed = resumedAt.map { $0 - faultAt }
        log.summarize(into: &report, victims: victimSet, resumedAt: resumedAt, start: faultAt)
        report.postsDropped = cluster["a"].statistics.shardUnavailableDropped
        report.duplicatesDropped = cluster["b"].statistics.duplicatesDropped
        print(report)
        return report
    }

    /// The port of `masterPort`'s replica, from `CLUSTER NODES`.
    static func replica(of masterPort: Int, in cluster: RedisClusterProcess) async throws -> Int {
        let text = try await cluster.cli(["-p", "\(masterPort)", "CLUSTER", "NODES"])
        let lines = text.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        let port: ([String]) -> Int? = { fields in
            fields[1].split(separator: "@").first?.split(separator: ":").last.flatMap { Int($0) }
        }
        guard let master = lines.first(where: { $0.count > 3 && port($0) == masterPort })?[0],
              let replica = lines.first(where: { $0.count > 3 && $0[2].contains("slave") && $0[3] == master }),
              let replicaPort = port(replica) else {
            throw UpgradeFailed(status: 0, body: "no replica of \(masterPort) in CLUSTER NODES")
        }
        return replicaPort
    }
}

/// The record of one run's messages: sent (when, to whom), answered, arrived.
final class TrafficLog: Sendable {
    private struct Message {
        var uid: String
        var sentAt: ContinuousClock.Instant
        var arrivals: [ContinuousClock.Instant] = []
        var answer: Duration?
        var error: String?
        var acknowledged = false
    }

    private let messages = Mutex<[Int: Message]>([:])
    private let closedSockets = Atomic<Int>(0)

    func sent(_ number: Int, to uid: String, at instant: ContinuousClock.Instant) {
        messages.withLock { $0[number] = Message(uid: uid, sentAt: instant) }
    }

    func answered(_ number: Int, after duration: Duration, error: String?, acknowledged: Bool) {
        messages.withLock { messages in
            messages[number]?.answer = duration
            messages[number]?.error = error
            messages[number]?.acknowledged = acknowledged
        }
    }

    func arrived(_ number: Int) {
        let now = ContinuousClock.now
        messages.withLock { $0[number]?.arrivals.append(now) }
    }

    func closed() { closedSockets.add(1, ordering: .relaxed) }

    /// When the first message to one of `uids` sent after `instant` arrived.
    func firstArrival(toAny uids: Set<String>, sentAfter instant: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        messages.withLock { messages in
            messages.values.lazy.filter { uids.contains($0.uid) && $0.sentAt > instant }.compactMap(\.arrivals.first).min()
        }
    }

    fileprivate func summarize(into report: inout FailoverTraffic.Report, victims: Set<String>,
                               resumedAt: ContinuousClock.Instant?, start: ContinuousClock.Instant) {
        report.socketsClosed = closedSockets.load(ordering: .relaxed)
        messages.withLock { messages in
            for (number, message) in messages.sorted(by: { $0.key < $1.key }) {
                report.sent += 1
                let arrived = !message.arrivals.isEmpty
                report.duplicates += max(message.arrivals.count - 1, 0)
                if let answer = message.answer { report.longestSend = max(report.longestSend, answer) }
                switch message.error {
                case "shardUnavailable"?:
                    report.unavailable += 1
                    report.slowestUnavailable = max(report.slowestUnavailable, message.answer ?? .zero)
                case let error?:
                    report.otherErrors.append(error)
                case nil: break
                }
                if message.acknowledged, !arrived { report.acknowledgedLost += 1 }
                if victims.contains(message.uid) {
                    report.victimsSent += 1
                    if !arrived {
                        if message.error == nil {
                            let at = (message.sentAt - start).seconds * 1_000
                            report.lostSamples.append(String(format: "#%d at %.0f ms answered in %.0f ms, %@", number, at,
                                                             (message.answer ?? .zero).seconds * 1_000,
                                                             message.acknowledged ? "reached" : "reached none"))
                        }
                        report.victimsLost += 1
                        if let resumedAt, message.sentAt > resumedAt + .milliseconds(100) { report.victimsLostAfterResume += 1 }
                    }
                } else if let first = message.arrivals.first {
                    report.healthySlowest = max(report.healthySlowest, first - message.sentAt)
                } else {
                    report.healthyLost += 1
                }
            }
        }
    }
}

/// Tasks to wait for at the end.
final class Tasks: Sendable {
    private let tasks = Mutex<[Task<Void, Never>]>([])
    func add(_ task: Task<Void, Never>) { tasks.withLock { $0.append(task) } }
    func waitAll() async {
        for task in tasks.withLock({ $0 }) { await task.value }
    }
}
