import ArgumentParser
import ClusterWS
import EmbeddedRedis
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Cross-node unicast with each delivery driver: receivers on node b, senders
/// calling `sender.send(uid:)` on node a; delivered msgs/s and end-to-end
/// latency (from the send call until the receiving client has parsed the frame).
struct DriverBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drivers",
        abstract: "Cross-node unicast throughput and latency of the pub/sub and queue drivers.")

    @Option(help: "Receiving clients on node b (distinct uids).")
    var receivers = 100

    @Option(help: "Messages in the loaded run.")
    var messages = 100_000

    @Option(help: "Concurrent senders on node a in the loaded run.")
    var senders = 50

    @Option(help: "Messages in the light run (one sender, one at a time).")
    var lightMessages = 2_000

    @Flag(help: "Run on an embedded Redis Cluster (3 masters + 3 replicas) instead of one server.")
    var redisCluster = false

    @Option(help: "On a Redis Cluster: queue.replicaAcks values to run the queue driver with (WAIT after each entry when > 0).")
    var replicaAcks: String = "0,1"

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func run() async throws {
        bootstrapQuietLogging()
        var table = ResultTable(
            title: "Cross-node unicast\(redisCluster ? " on a Redis Cluster (3+3)" : ""), \(receivers) receivers on node b, sends from node a (\(messages) msgs loaded, \(senders) senders)",
            columns: ["driver", "guarantee", "loaded msgs/s", "loaded p50 ms", "loaded p99 ms", "light p50 ms", "light p99 ms", "received", "copies dropped"])
        // On a cluster, pub/sub runs with and without standby subscriptions (each message twice, or once);
        // pub/sub runs with user history on too (one script per send instead of one PUBLISH).
        var runs: [(driver: ClusterConfiguration.Driver, acks: Int, standby: Bool, history: Bool)] = [(.pubSub, 0, true, false)]
        if redisCluster { runs.append((.pubSub, 0, false, false)) }
        runs.append((.pubSub, 0, true, true))
        for acks in redisCluster ? replicaAcks.split(separator: ",").compactMap({ Int($0) }) : [0] {
            runs.append((.queue, acks, true, false))
        }
        runs.append((.queue, 0, true, true))
        for (driver, acks, standby, history) in runs {
            let url: String
            var single: RedisServerProcess?
            var cluster: RedisClusterProcess?
            if redisCluster {
                progress("\(driver): starting a Redis Cluster (3 masters + 3 replicas)")
                cluster = try await RedisClusterProcess.start()
                url = cluster?.url ?? ""
            } else {
                let redis = try await RedisEndpoint.fromEnvironment()
                single = redis.embedded
                url = redis.url
            }
            defer {
                single?.terminate()
                cluster?.terminate()
            }
            progress("\(driver): starting two nodes")
            let result = try await measure(driver, replicaAcks: acks, standby: standby, history: history, redisURL: url)
            var name = !redisCluster ? "\(driver)"
                : driver == .queue ? "queue, replicaAcks \(acks)" : "pubSub, standby \(standby ? "on" : "off")"
            if history { name += ", history on" }
            table.add(name, driver == .queue ? "at-least-once" : "at-most-once", result.rate.grouped,
                      result.loaded.p50.fixed(2), result.loaded.p99.fixed(2), result.light.p50.fixed(2), result.light.p99.fixed(2),
                      "\(result.received)/\(messages + lightMessages)", "\(result.copiesDropped)")
        }
        table.notes = [
            "loaded: \(senders) tasks on node a each await sender.send(uid:) in turn, uids round-robin; msgs/s from the first send",
            "until the last frame is parsed by its client. light: one sender, one message at a time.",
            "Latency: from the send call to the frame parsed by the receiving client (same process, monotonic clock).",
            "history on: every send is one script that appends to the user's history and publishes (queue: appends to the nodes'",
            "queues; on a Redis Cluster a script, then the queue writes); receivers are raw clients.",
            "copies dropped: second copies node b's router dropped by id (standby subscriptions: each message arrives twice).",
            "Both nodes, Redis and the clients share this 2-core machine.",
        ]
        print(json ? table.json() : table.render())
    }

    struct Percentiles { var p50: Double; var p99: Double }

    private func measure(_ driver: ClusterConfiguration.Driver, replicaAcks: Int, standby: Bool, history: Bool,
                         redisURL: String)
        async throws -> (rate: Double, loaded: Percentiles, light: Percentiles, received: Int, copiesDropped: Int)
    {
        func node(_ id: String) throws -> ClusterNode {
            var configuration = ClusterConfiguration(redisURL: .init(redisURL), serverID: id, namespace: "bench",
                                                     webSocket: .init(keepalive: .disabled))
            configuration.driver = driver
            configuration.queue.concurrency = 256
            configuration.queue.replicaAcks = replicaAcks
            configuration.failover.standbySubscriptions = standby
            configuration.history.users = history
            var logger = Logger(label: "bench.node")
            logger.logLevel = .error
            let node = try ClusterNode(configuration: configuration, logger: logger)
            node.webSocket("/ws", authenticate: { $0.queryParameter("uid") })
            return node
        }
        let a = try node("a"), b = try node("b")
        let group = ServiceGroup(configuration: .init(services: [a, b], logger: Logger(label: "bench")))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            defer { Task { await group.triggerGracefulShutdown() } }
            let port = try await b.waitUntilListening()
            _ = try await a.waitUntilListening()
            let latencies = LatencyLog()
            var clients: [any Channel] = []
            for index in 0..<receivers {
                clients.append(try await LatencyClient.connect(port: port, path: "/ws?uid=r\(index)", log: latencies))
            }
            // Wait until every receiver is bound (visible from node a).
            for index in 0..<receivers {
                while try await !a.relations.isOnline(uid: "r\(index)") { try await Task.sleep(for: .milliseconds(5)) }
            }

            progress("\(driver): loaded run, \(messages) messages")
            latencies.reset(expecting: messages)
            let clock = ContinuousClock()
            let start = clock.now
            try await withThrowingTaskGroup(of: Void.self) { sends in
                for sender in 0..<senders {
                    sends.addTask {
                        var index = sender
                        while index < messages {
                            _ = try await a.sender.send(uid: "r\(index % receivers)", .binary(LatencyClient.stamp()))
                            index += senders
                        }
                    }
                }
                try await sends.waitForAll()
            }
            let complete = await latencies.done(within: .seconds(60))
            let rate = Double(latencies.count) / (clock.now - start).seconds
            if !complete { progress("\(driver): only \(latencies.count) of \(messages) arrived") }
            let loaded = latencies.percentiles()
            let receivedLoaded = latencies.count

            progress("\(driver): light run, \(lightMessages) messages")
            latencies.reset(expecting: lightMessages)
            for index in 0..<lightMessages {
                let before = latencies.count
                _ = try await a.sender.send(uid: "r\(index % receivers)", .binary(LatencyClient.stamp()))
                await latencies.waitBeyond(before)
            }
            let light = latencies.percentiles()
            for client in clients { client.close(promise: nil) }
            return (rate, loaded, light, receivedLoaded + latencies.count, b.statistics.duplicatesDropped)
        }
    }
}

/// Latencies in milliseconds, and a count that a run can wait on.
final class LatencyLog: Sendable {
    private struct State {
        var values: [Double] = []
        var expected = 0
        var waiter: CheckedContinuation<Void, Never>?
        var beyond: (Int, CheckedContinuation<Void, Never>)?
    }
    private let state = Mutex(State())

    func reset(expecting count: Int) {
        state.withLock { state in
            state.values = []
            state.values.reserveCapacity(count)
            state.expected = count
        }
    }

    func record(_ milliseconds: Double) {
        let (waiter, beyond) = state.withLock { state -> (CheckedContinuation<Void, Never>?, CheckedContinuation<Void, Never>?) in
            state.values.append(milliseconds)
            var done: CheckedContinuation<Void, Never>?
            if state.values.count >= state.expected { done = state.waiter; state.waiter = nil }
            var next: CheckedContinuation<Void, Never>?
            if let (after, continuation) = state.beyond, state.values.count > after { next = continuation; state.beyond = nil }
            return (done, next)
        }
        waiter?.resume()
        beyond?.resume()
    }

    var count: Int { state.withLock { $0.values.count } }

    func done(within limit: Duration) async -> Bool {
        await waitUntilDone(within: limit, park: { continuation in
            self.state.withLock { state -> Bool in
                if state.values.count >= state.expected { return true }
                state.waiter = continuation
                return false
            }
        }, unpark: {
            let waiter = self.state.withLock { state in defer { state.waiter = nil }; return state.waiter }
            waiter?.resume()
        })
    }

    /// Waits until more than `count` values are recorded.
    func waitBeyond(_ count: Int) async {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Bool in
                if state.values.count > count { return true }
                state.beyond = (count, continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    func percentiles() -> DriverBenchmark.Percentiles {
        let sorted = state.withLock { $0.values }.sorted()
        guard !sorted.isEmpty else { return .init(p50: .nan, p99: .nan) }
        func at(_ q: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))] }
        return .init(p50: at(0.5), p99: at(0.99))
    }
}

/// A receiving client that reads an 8-byte send timestamp from each binary frame.
enum LatencyClient {
    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    static func stamp() -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(now())
        buffer.writeBytes([UInt8](repeating: 0x61, count: 56))  // 64-byte payload
        return buffer
    }

    static func connect(port: Int, path: String, log: LatencyLog) async throws -> any Channel {
        try await connectWebSocketClient(port: port, path: path) { upgraded in Handler(log: log, upgraded: upgraded) }
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let log: LatencyLog
        let upgraded: EventLoopPromise<Void>
        var reader = ClientFrameReader()

        init(log: LatencyLog, upgraded: EventLoopPromise<Void>) {
            self.log = log
            self.upgraded = upgraded
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var incoming = unwrapInboundIn(data)
            if reader.feed(&incoming) { upgraded.succeed() }
            let arrived = LatencyClient.now()
            while let frame = reader.next() {
                if frame.opcode == 2, frame.length >= 8, let sent = reader.pending.getInteger(at: frame.body, as: UInt64.self) {
                    log.record(Double(arrived &- sent) / 1e6)
                }
            }
            reader.compact()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            upgraded.fail(error)
            context.close(promise: nil)
        }
    }
}
