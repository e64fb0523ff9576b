import Foundation
import Synchronization

/// Broadcast fan-out over two nodes (`sender.sendAll` on node a, half the
/// connections on each node) beside the same broadcast on one server without
/// Redis (`WebSocketServer.broadcast`, all connections local).
struct BroadcastScenario {
    var context: BenchContext
    var repeats: Int
    var messages: Int

    struct Figures {
        var timeToLast: [Double]  // ms, one per single broadcast
        var rate: Double          // deliveries/s, messages sent back to back
        var complete: Bool
        var perCall: String       // "p50 / p90" µs of one call in the back-to-back run
    }

    func run(sizes: [Int]) async throws -> ResultTable {
        var table = ResultTable(
            title: "Broadcast fan-out (\(context.payloadSize) B): time until the last connection has it, and deliveries/s",
            columns: ["connections", "where", "time to last p50 ms", "p99 ms", "deliveries/s (\(messages) back to back)",
                      "× single node", "one call p50 / p90 µs"])
        progress("broadcast: starting nodes a and b, and a single server")
        let (a, portA) = try await context.startServer(["--kind", "node", "--id", "a"])
        defer { a.stop() }
        let (b, portB) = try await context.startServer(["--kind", "node", "--id", "b"])
        defer { b.stop() }
        let (single, portSingle) = try await context.startServer(["--kind", "clusterws"])
        defer { single.stop() }
        for size in sizes {
            let half = size / 2
            progress("broadcast: \(size) connections over nodes a and b")
            let cluster = try await measure(half: half, servers: [(a, portA, "x"), (b, portB, "y")], sendingServer: a,
                                            command: "paced", bound: true)
            let posted = try await measure(half: half, servers: [(a, portA, "x"), (b, portB, "y")], sendingServer: a,
                                           command: "broadcast", bound: true)
            progress("broadcast: \(size) connections on one server")
            let local = try await measure(half: half, servers: [(single, portSingle, "x"), (single, portSingle, "y")],
                                          sendingServer: single, command: "broadcast", bound: false)
            let awaited = try await measure(half: half, servers: [(single, portSingle, "x"), (single, portSingle, "y")],
                                            sendingServer: single, command: "paced", bound: false)
            for (name, figures) in [("2 nodes via Redis: sendAll, each awaited", cluster),
                                    ("2 nodes via Redis: postAll, back to back", posted),
                                    ("1 server, no Redis: broadcast, back to back", local),
                                    ("1 server, no Redis: broadcastAndWait, each awaited", awaited)] {
                table.add("\(2 * half)", name + (figures.complete ? "" : " (INCOMPLETE)"),
                          figures.timeToLast.quantile(0.5).fixed(2), figures.timeToLast.quantile(0.99).fixed(2),
                          figures.rate.grouped, (figures.rate / local.rate).fixed(2) + "×", figures.perCall)
            }
        }
        table.notes = [
            "Two nodes: node a calls sender.sendAll (local connections at once, one PUBLISH for node b, awaited before the next),",
            "or sender.postAll back to back (nothing awaited; node a's and node b's deliveries coalesce per event loop).",
            "One server: ClusterWS's WebSocketServer in its own process, every connection local, no Redis.",
            "Load clients: two processes with half the connections each; time to last = latest arrival − send stamp",
            "over both processes, for \(repeats) single broadcasts (p50/p99); deliveries/s = connections × \(messages) / time",
            "from the first send until every connection has every message. One call: how long each of those",
            "\(messages) calls took on node a (an awaited sendAll waits for its PUBLISH's answer and this node's pacing).",
        ]
        return table
    }

    /// Two nodes, `postAll` back to back from node a (for comparing Redis backends).
    func clusterPostAll(size: Int) async throws -> Figures {
        let (a, portA) = try await context.startServer(["--kind", "node", "--id", "a"])
        defer { a.stop() }
        let (b, portB) = try await context.startServer(["--kind", "node", "--id", "b"])
        defer { b.stop() }
        return try await measure(half: size / 2, servers: [(a, portA, "x"), (b, portB, "y")], sendingServer: a,
                                 command: "broadcast", bound: true)
    }

    private func measure(half: Int, servers: [(ChildProcess, Int, String)], sendingServer: ChildProcess,
                         command: String, bound: Bool) async throws -> Figures {
        var loads: [ChildProcess] = []
        defer { loads.forEach { $0.stop() } }
        for (_, port, prefix) in servers {
            loads.append(try context.startLoad(port: port, path: "/ws?uid=\(prefix){n}"))
        }
        for (index, load) in loads.enumerated() {
            _ = try await load.ask("open \(half)")
            let (server, _, _) = servers[index]
            if servers[0].0 !== servers[1].0 { try await context.waitForCount(half, on: server) }
        }
        if servers[0].0 === servers[1].0 { try await context.waitForCount(2 * half, on: servers[0].0) }
        if bound {
            for (server, _, prefix) in servers { try await context.waitBound(prefix, half, on: server) }
        }
        var timeToLast: [Double] = []
        var complete = true
        for _ in 0..<repeats {
            let outcome = try await context.tracked(loads.map { ($0, half) }, unicast: false, limit: 30) {
                _ = try await sendingServer.ask("\(command) 1 \(context.payloadSize)")
            }
            complete = complete && outcome.complete
            timeToLast.append(Double(outcome.figures.map { $0["max", default: 0] }.max() ?? 0) / 1_000)
        }
        let answer = Mutex("")
        let outcome = try await context.tracked(loads.map { ($0, half * messages) }, unicast: false) {
            let line = try await sendingServer.ask("\(command) \(messages) \(context.payloadSize)")
            answer.withLock { $0 = line }
        }
        let words = answer.withLock { $0 }.split(separator: " ")
        let perCall = words.count == 3 ? "\(words[1]) / \(words[2])" : "—"
        let delivered = outcome.figures.map { $0["count", default: 0] }.reduce(0, +)
        for load in loads { _ = try await load.ask("closeall") }
        for (server, _, _) in servers { try await context.waitForCount(0, on: server) }
        return Figures(timeToLast: timeToLast, rate: Double(delivered) / outcome.seconds, complete: complete && outcome.complete,
                       perCall: perCall)
    }
}
