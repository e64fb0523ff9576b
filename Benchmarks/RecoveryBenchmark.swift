import ArgumentParser
import ClusterWS
import ClusterWSClient
import EmbeddedRedis
import Logging
import ServiceLifecycle

/// How long a `ClusterWSClient` takes to get back N messages it missed: it
/// learns its position on node b, disconnects, N messages are sent to its
/// user, and a new client resumes from that position on node a.
struct RecoveryBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recovery",
        abstract: "Time for a client (ClusterWSClient) to recover N missed messages on another node.")

    @Option(help: "Missed message counts to measure, comma-separated.")
    var missed = "100,10000"

    @Option(help: "Payload bytes per message.")
    var payload = 100

    @Option(help: "Runs per count (the median is reported).")
    var runs = 5

    @Option(help: "Delivery driver of the two nodes: pubSub or queue.")
    var driver = "pubSub"

    func run() async throws {
        bootstrapQuietLogging()
        let counts = missed.split(separator: ",").compactMap { Int($0) }
        let redis = try await RedisEndpoint.fromEnvironment()
        defer { redis.embedded?.terminate() }
        let table = try await Self.measure(redisURL: redis.url, counts: counts, payload: payload, runs: runs,
                                           driver: driver == "queue" ? .queue : .pubSub)
        print(table.render())
    }

    /// Runs two nodes (history on) in this process and times, `runs` times
    /// per count, a `ClusterWSClient` recovering that many missed messages.
    static func measure(redisURL: String, counts: [Int], payload: Int, runs: Int,
                        driver: ClusterConfiguration.Driver = .pubSub) async throws -> ResultTable {
        func node(_ id: String) throws -> ClusterNode {
            var configuration = ClusterConfiguration(redisURL: .init(redisURL), serverID: id, namespace: "bench-recovery",
                                                     webSocket: .init(keepalive: .disabled))
            configuration.driver = driver
            configuration.history.users = true
            configuration.history.maxLength = (counts.max() ?? 0) + 10
            var logger = Logger(label: "bench.node")
            logger.logLevel = .error
            let node = try ClusterNode(configuration: configuration, logger: logger)
            node.webSocket("/ws", authenticate: { $0.queryParameter("uid") })
            return node
        }
        let a = try node("a"), b = try node("b")
        let group = ServiceGroup(configuration: .init(services: [a, b], logger: Logger(label: "bench")))
        var table = ResultTable(title: "Recovery (\(driver)): a client resumes on another node after N messages were sent to it while away",
                                columns: ["missed", "recovery ms (median of \(runs))", "min ms", "max ms", "messages/s"])
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let portA = try await a.waitUntilListening()
            let portB = try await b.waitUntilListening()
            let body = String(repeating: "x", count: payload)
            for (round, count) in counts.enumerated() {
                var times: [Double] = []
                for run in 0..<runs {
                    let uid = "bench-\(round)-\(run)"
                    progress("recovery: \(count) missed, run \(run + 1)")
                    // Learn the position on node b, then leave.
                    let first = ClusterWSClient(urls: ["ws://127.0.0.1:\(portB)/ws?uid=\(uid)"])
                    let firstRun = Task { await first.run() }
                    while first.positions["user:\(uid)"] == nil { try await Task.sleep(for: .milliseconds(2)) }
                    let positions = first.positions
                    first.close()
                    await firstRun.value
                    for index in 0..<count { try await a.sender.post(uid: uid, .text("\(index) \(body)")) }
                    try await a.sender.send(uid: uid, .text("last"))  // after every post: all are in the history
                    // Resume on node a, timed until the last missed message is parsed.
                    let clock = ContinuousClock()
                    let start = clock.now
                    let second = ClusterWSClient(urls: ["ws://127.0.0.1:\(portA)/ws?uid=\(uid)"], positions: positions)
                    let secondRun = Task { await second.run() }
                    // A recovery that fails ends the wait (and the benchmark) instead of hanging it.
                    let watch = Task {
                        for await state in second.states {
                            if case .recovery(let recovery) = state, !recovery.recovered {
                                progress("recovery failed: \(recovery)")
                                second.close()
                            }
                        }
                    }
                    defer { watch.cancel() }
                    var received = 0
                    for await message in second.messages where message.position != nil {
                        received += 1
                        if received == count + 1 { break }
                    }
                    times.append((clock.now - start).seconds * 1_000)
                    second.close()
                    await secondRun.value
                    guard received == count + 1 else { throw BenchmarkError("only \(received) of \(count + 1) recovered") }
                }
                times.sort()
                let median = times[times.count / 2]
                table.add(Double(count).grouped, median.fixed(1), times[0].fixed(1), times[times.count - 1].fixed(1),
                          (Double(count) / (median / 1_000)).grouped)
            }
            table.notes = [
                "Each run: a ClusterWSClient learns its position on node b and closes; node a posts N messages of \(payload) bytes (and one more",
                "to mark the end) to its user (history on); a new ClusterWSClient resumes on node a from that position. Timed from its start",
                "(TCP connect, upgrade, history read, replay) until the Nth missed message is parsed. One Redis, same machine.",
            ]
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        return table
    }
}
