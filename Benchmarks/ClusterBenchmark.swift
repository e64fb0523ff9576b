import ArgumentParser
import ClusterWS
import EmbeddedRedis
import Foundation
import Logging
import NIOCore
import NIOPosix

/// The cluster benchmark: two ClusterNode processes on one Redis, load clients
/// in processes of their own, and Redis's own limit (`redis-benchmark`) in the
/// same run, so every figure also prints as a ratio.
struct ClusterBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Cross-node unicast, latency under open-loop load, broadcast fan-out, idle memory and the cost of history of two ClusterNode processes, beside redis-benchmark."
    )

    @Option(help: "Scenarios, comma-separated: baseline, unicast, latency, broadcast, memory, backends (one Redis vs a 3-master Redis Cluster), history (unicast with history off vs on, and recovery).")
    var scenarios = "baseline,unicast,latency,broadcast,memory,backends,history"

    @Option(help: "History scenario: missed message counts a client recovers, comma-separated.")
    var missed = "100,10000"

    @Option(help: "History scenario: how node a forwards (send or post).")
    var historyRelay = "send"

    @Option(help: "Receiving clients on node b (distinct uids).")
    var receivers = 100

    @Option(help: "Sending clients on node a.")
    var senders = 50

    @Option(help: "Messages per unicast run.")
    var messages = 200_000

    @Option(help: "Unicast runs at full speed per relay (the median of the first relay's sets the maximum).")
    var runs = 3

    @Option(help: "How node a's forwarder sends, comma-separated: post (no waiting for Redis), send (awaits each). The first one also runs the latency scenario.")
    var relays = "post,send"

    @Option(help: "Offered loads for the latency runs, in % of the measured maximum.")
    var loads = "10,50,80"

    @Option(help: "Use this maximum (msgs/s) for the latency runs instead of measuring it.")
    var maximum: Double?

    @Option(help: "Seconds per latency run.")
    var pacedSeconds = 5

    @Option(help: "Payload bytes per message.")
    var payloadSize = 64

    @Option(help: "Broadcast sizes (connections, half on each node), comma-separated.")
    var fanout = "1000,10000"

    @Option(help: "Single broadcasts timed to the last connection, per size.")
    var fanoutRepeats = 50

    @Option(help: "Broadcasts sent back to back for the deliveries/s figure.")
    var fanoutMessages = 100

    @Option(help: "Idle connections for the memory figure.")
    var idleConnections = 10_000

    @Option(help: "Connect/disconnect rounds for the memory figure.")
    var memoryRounds = 5

    @Option(help: "PUBLISH requests per redis-benchmark run.")
    var baselineMessages = 400_000

    @Flag(help: "Print JSON instead of tables.")
    var json = false

    func run() async throws {
        bootstrapQuietLogging()
        let selected = Set(scenarios.split(separator: ",").map(String.init))
        let redis = try await RedisEndpoint.fromEnvironment()
        defer { redis.embedded?.terminate() }
        progress("redis at \(redis.url)\(redis.embedded == nil ? "" : " (embedded)")")
        let context = BenchContext(redisURL: redis.url, payloadSize: payloadSize)
        var tables: [ResultTable] = []

        var baseline: [Int: Double] = [:]
        if selected.contains("baseline") {
            let (table, rates) = try await measureBaseline(redisURL: redis.url)
            tables.append(table)
            baseline = rates
        }
        if selected.contains("unicast") || selected.contains("latency") {
            let unicast = UnicastScenario(context: context, receivers: receivers, senders: senders, messages: messages,
                                          runs: runs, loads: loads.split(separator: ",").compactMap { Int($0) },
                                          pacedSeconds: pacedSeconds, fixedMaximum: maximum,
                                          relays: relays.split(separator: ",").map(String.init))
            tables += try await unicast.run(baseline: baseline, withLatency: selected.contains("latency"))
        }
        if selected.contains("broadcast") {
            let scenario = BroadcastScenario(context: context, repeats: fanoutRepeats, messages: fanoutMessages)
            tables.append(try await scenario.run(sizes: fanout.split(separator: ",").compactMap { Int($0) }))
        }
        if selected.contains("memory") {
            tables.append(try await measureIdleMemory(context: context))
        }
        if selected.contains("backends") {
            tables.append(try await compareBackends(single: context))
        }
        if selected.contains("history") {
            tables += try await HistoryScenario(context: context, receivers: receivers, senders: senders, messages: messages,
                                                runs: runs, pacedSeconds: pacedSeconds,
                                                missed: missed.split(separator: ",").compactMap { Int($0) },
                                                relay: historyRelay).run()
        }
        if json {
            print("[" + tables.map { $0.json() }.joined(separator: ",\n") + "]")
        } else {
            tables.forEach { print($0.render()) }
        }
    }

    /// Unicast (post relay) and broadcast (postAll) on one Redis and on a Redis
    /// Cluster of 3 masters + 3 replicas (embedded, or `REDIS_CLUSTER_URL`).
    private func compareBackends(single: BenchContext) async throws -> ResultTable {
        var embedded: RedisClusterProcess?
        let clusterURL: String
        if let url = ProcessInfo.processInfo.environment["REDIS_CLUSTER_URL"], !url.isEmpty {
            clusterURL = url
        } else {
            progress("backends: starting a Redis Cluster (3 masters + 3 replicas)")
            let cluster = try await RedisClusterProcess.start()
            embedded = cluster
            clusterURL = cluster.url
        }
        defer { embedded?.terminate() }
        var table = ResultTable(
            title: "One Redis vs a Redis Cluster (3 masters + 3 replicas, sharded pub/sub), same run",
            columns: ["Redis", "unicast msgs/s (post, median of \(runs))", "broadcast deliveries/s (1,000 conns, postAll)",
                      "time to last p50 ms", "p99 ms"])
        for (name, url) in [("one redis-server", single.redisURL), ("Redis Cluster, 3 masters", clusterURL)] {
            progress("backends: \(name)")
            let context = BenchContext(redisURL: url, payloadSize: payloadSize)
            let unicast = UnicastScenario(context: context, receivers: receivers, senders: senders, messages: messages,
                                          runs: runs, loads: [], pacedSeconds: pacedSeconds, fixedMaximum: nil, relays: ["post"])
            let rate = try await unicast.measure(baseline: [:], withLatency: false).medians["post"] ?? .nan
            let broadcast = try await BroadcastScenario(context: context, repeats: fanoutRepeats, messages: fanoutMessages)
                .clusterPostAll(size: 1_000)
            table.add(name, rate.grouped, broadcast.rate.grouped + (broadcast.complete ? "" : " (INCOMPLETE)"),
                      broadcast.timeToLast.quantile(0.5).fixed(2), broadcast.timeToLast.quantile(0.99).fixed(2))
        }
        table.notes = [
            "Same processes as above (node a, node b, load clients), with the nodes' REDIS_URL pointing at one server or at the cluster.",
            "On the cluster, user channels are sharded (SPUBLISH to the channel's master only); broadcasts use classic PUBLISH,",
            "which the cluster bus copies to every one of its 6 nodes. All 6 redis-server processes share the same 2 cores.",
        ]
        return table
    }

    /// redis-benchmark PUBLISH with one subscriber of ours receiving every message.
    private func measureBaseline(redisURL: String) async throws -> (ResultTable, [Int: Double]) {
        let configuration = try RedisConfiguration(url: redisURL)
        let subscriber = RedisSubscriber(configuration: configuration, eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
                                         buffer: .init(messages: 1 << 22, bytes: 1 << 30))
        let received = TargetCounter()
        var table = ResultTable(
            title: "Baseline: redis-benchmark PUBLISH (\(baselineMessages) × \(payloadSize) B, 50 clients), one subscriber receiving all",
            columns: ["pipeline", "delivered msgs/s", "redis-benchmark's own req/s", "received"])
        var rates: [Int: Double] = [:]
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await subscriber.run() }
            group.addTask { for await _ in subscriber.messages { received.increment() } }
            defer { group.cancelAll() }
            try await subscriber.waitUntilConnected(timeout: .seconds(5))
            try await subscriber.subscribe(["bench:baseline"])
            for depth in [1, 16] {
                let (rate, reported, count) = try await RedisBenchmarkTool.delivered(
                    configuration: configuration, received: received, channel: "bench:baseline",
                    payload: String(repeating: "x", count: payloadSize), messages: baselineMessages, clients: 50, pipeline: depth)
                rates[depth] = rate
                table.add("-P \(depth)", rate.grouped, reported.grouped, "\(count)/\(baselineMessages)")
            }
        }
        table.notes = ["delivered: from the start of redis-benchmark until our subscriber has the last message."]
        return (table, rates)
    }

    /// RSS growth per idle connection of a whole node (every connection bound
    /// to its own uid): push only, a `for await` message loop per connection,
    /// and the `handleMessages` callback; `memoryRounds` rounds of connect and
    /// disconnect on one node process, to see that it stays flat.
    private func measureIdleMemory(context: BenchContext) async throws -> ResultTable {
        var table = ResultTable(
            title: "Idle memory of a node process (\(idleConnections) connections, each bound to its own uid; \(memoryRounds) rounds)",
            columns: ["node", "RSS before (MiB)", "KiB per connection, round 1", "rounds 2…\(memoryRounds) (KiB per connection)",
                      "RSS after the last close (MiB)", "heap in use after each close (MiB)"])
        for (name, flags) in [("push only (no message loop)", [String]()),
                              ("a `for await` message loop per connection", ["--forward"]),
                              ("a `handleMessages` callback per connection", ["--forward", "--callback"])] {
            progress("memory: a fresh node, \(idleConnections) idle connections × \(memoryRounds) rounds, \(name)")
            let (node, port) = try await context.startServer(["--kind", "node", "--id", "m"] + flags)
            defer { node.stop() }
            let load = try context.startLoad(port: port, path: "/ws?uid=idle{n}")
            defer { load.stop() }
            try await Task.sleep(for: .milliseconds(500))
            let before = node.residentBytes
            var perConnection: [Double] = []
            var heapAfterClose: [Double] = []
            for _ in 0..<memoryRounds {
                _ = try await load.ask("open \(idleConnections)")
                try await context.waitForCount(idleConnections, on: node)
                try await context.waitBound("idle", idleConnections, on: node)
                try await Task.sleep(for: .milliseconds(500))
                perConnection.append(Double(node.residentBytes - before) / Double(idleConnections) / 1024)
                _ = try await load.ask("closeall")
                try await context.waitForCount(0, on: node)
                try await Task.sleep(for: .milliseconds(300))
                let heap = try await node.ask("heap").split(separator: " ").last.flatMap { Double($0) } ?? 0
                heapAfterClose.append(heap / 1_048_576)
            }
            try await Task.sleep(for: .milliseconds(500))
            let last = node.residentBytes
            table.add(name, (Double(before) / 1_048_576).fixed(1), perConnection[0].fixed(2),
                      perConnection.dropFirst().map { $0.fixed(2) }.joined(separator: ", "),
                      (Double(last) / 1_048_576).fixed(1), heapAfterClose.map { $0.fixed(1) }.joined(separator: ", "))
        }
        table.notes = [
            "Relations in Redis, a user channel subscribed per uid. The message loop is the unicast runs' forwarder",
            "(a task per connection suspended in `for await`); the callback is the same forwarder given to",
            "socket.handleMessages (onOpen returns; a task runs only while messages wait).",
            "KiB per connection = (RSS with every connection open − RSS of the fresh node) / connections, per round.",
            "Heap in use = glibc malloc_info (taken from the system minus free in its bins) once every connection of the round has closed: flat means",
            "nothing is kept per closed connection (RSS stays higher because malloc keeps freed pages).",
            "50,000 cannot be measured here: this machine's hard limit of 20,000 open files per process caps one node process.",
        ]
        return table
    }
}

/// What every scenario needs: where Redis is and how to start servers and load processes.
struct BenchContext: Sendable {
    var redisURL: String
    var payloadSize: Int

    /// Starts `serve …` on Redis; returns it and the port it listens on. With
    /// `countAllocations` the malloc interposer is preloaded into it when it
    /// was built (its 16-byte header per allocation would skew memory figures,
    /// so only the relay runs ask for it; `BENCH_ALLOCATIONS=0` turns it off).
    func startServer(_ arguments: [String], countAllocations: Bool = false) async throws -> (ChildProcess, Int) {
        var environment = ["REDIS_URL": redisURL]
        if countAllocations, ProcessInfo.processInfo.environment["BENCH_ALLOCATIONS"] != "0",
           let library = MallocCounter.libraryPath {
            environment["LD_PRELOAD"] = library
        }
        let server = try ChildProcess(arguments: ["serve"] + arguments, environment: environment)
        let line = try await server.readLine()
        guard line.hasPrefix("port "), let port = Int(line.dropFirst(5)) else { throw BenchmarkError("server said \(line)") }
        return (server, port)
    }

    /// Starts a load process of probe clients for `port`; `{n}` in `path` numbers the connections.
    func startLoad(port: Int, path: String) throws -> ChildProcess {
        try ChildProcess(arguments: ["load", "--probe", "--port", "\(port)", "--path", path])
    }

    /// Polls a server until it counts `expected` connections.
    func waitForCount(_ expected: Int, on server: ChildProcess) async throws {
        for _ in 0..<1_200 {
            if try await server.ask("count") == "count \(expected)" { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw BenchmarkError("server never reached \(expected) connections")
    }

    /// Polls a node until uids prefix0…prefix(n-1) are all online.
    func waitBound(_ prefix: String, _ count: Int, on node: ChildProcess) async throws {
        for _ in 0..<600 {
            if try await node.ask("bound \(prefix) \(count)") == "bound yes" { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw BenchmarkError("uids \(prefix)0… never all online")
    }

    /// Arms `loads` to record a run, runs `body`, waits for every expected
    /// probe (or `limit`), and returns each load's figures and the seconds from
    /// the start of `body` until the last load was complete.
    func tracked(_ loads: [(ChildProcess, Int)], unicast: Bool, limit: Int = 60,
                 _ body: () async throws -> Void) async throws -> (figures: [[String: Int]], seconds: Double, complete: Bool) {
        for (load, expected) in loads {
            guard try await load.ask("track \(expected) \(unicast ? 1 : 0)") == "armed" else { throw BenchmarkError("load not armed") }
        }
        let clock = ContinuousClock()
        let start = clock.now
        try await body()
        var complete = true
        for (load, _) in loads where try await load.ask("wait \(limit)") != "done" { complete = false }
        let seconds = (clock.now - start).seconds
        var result: [[String: Int]] = []
        for (load, _) in loads { result.append(figures(try await load.ask("stats"))) }
        return (result, seconds, complete)
    }
}

extension Array where Element == Double {
    /// The value at `quantile` (0…1) of the sorted values.
    func quantile(_ q: Double) -> Double {
        guard !isEmpty else { return .nan }
        let sorted = self.sorted()
        return sorted[Swift.min(sorted.count - 1, Int(Double(sorted.count - 1) * q + 0.5))]
    }
}
