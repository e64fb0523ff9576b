import Foundation

/// Cross-node unicast: sender clients on node a send probes addressed to uids
/// whose clients are on node b; node a's application forwards each one
/// (`sender.post(uid:)` or `sender.send(uid:)`, the relay). Closed loop at
/// full speed (the maximum), then open loop at fixed shares of that maximum
/// (latency under load) with the first relay.
struct UnicastScenario {
    var context: BenchContext
    var receivers: Int
    var senders: Int
    var messages: Int
    var runs: Int
    var loads: [Int]
    var pacedSeconds: Int
    var fixedMaximum: Double?
    var relays: [String]
    /// Extra arguments for both nodes' processes (`--history`).
    var nodeArguments: [String] = []
    /// Names the rows (the history scenario runs this twice).
    var label = ""

    func run(baseline: [Int: Double], withLatency: Bool) async throws -> [ResultTable] {
        try await measure(baseline: baseline, withLatency: withLatency).tables
    }

    /// What one measurement found, besides its tables.
    struct Figures {
        /// Per relay, the median full-speed msgs/s.
        var medians: [String: Double] = [:]
        /// Per relay, the median of the full-speed runs' p99 (µs).
        var fullSpeedP99: [String: Int] = [:]
        /// Per offered load (%), the open-loop p99 (µs) of the first relay.
        var latencyP99: [Int: Int] = [:]
        /// Per relay, the full-speed run with the median rate's node costs.
        var costs: [String: RelayCost] = [:]
    }

    /// The tables, and each relay's median full-speed msgs/s.
    func measure(baseline: [Int: Double], withLatency: Bool) async throws -> (tables: [ResultTable], medians: [String: Double]) {
        let (tables, figures) = try await measureFigures(baseline: baseline, withLatency: withLatency)
        return (tables, figures.medians)
    }

    /// The tables and the figures.
    func measureFigures(baseline: [Int: Double], withLatency: Bool) async throws -> (tables: [ResultTable], figures: Figures) {
        progress("unicast\(label): starting node b and \(receivers) receivers")
        let (b, portB) = try await context.startServer(["--kind", "node", "--id", "b"] + nodeArguments,
                                                      countAllocations: true)
        defer { b.stop() }
        let receiving = try context.startLoad(port: portB, path: "/ws?uid=r{n}")
        defer { receiving.stop() }
        _ = try await receiving.ask("open \(receivers)")
        try await context.waitForCount(receivers, on: b)

        let size = context.payloadSize
        var table = ResultTable(
            title: "Cross-node unicast: \(senders) sender clients on node a → \(receivers) receiver clients on node b (\(messages) msgs × \(size) B per run)",
            columns: ["relay", "run", "delivered msgs/s", "× redis-benchmark -P 1", "node CPU µs/msg (a + b)",
                      "allocations/msg (a + b)", "context switches/msg", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
                      "received once", "lost", "duplicates", "misrouted", "node drops so far (a; b)"])
        var tables: [ResultTable] = []
        var medians: [String] = []
        var figures = Figures()
        for (index, relay) in relays.enumerated() {
            progress("unicast: node a forwards with \(relay)")
            let (a, portA) = try await context.startServer(["--kind", "node", "--id", "a", "--forward", "--relay", relay]
                                                          + nodeArguments, countAllocations: true)
            defer { a.stop() }
            let sending = try context.startLoad(port: portA, path: "/ws?uid=s{n}")
            defer { sending.stop() }
            _ = try await sending.ask("open \(senders)")
            try await context.waitForCount(senders, on: a)
            try await context.waitBound("r", receivers, on: a)
            _ = try await context.tracked([(receiving, 20_000)], unicast: true) {  // warm-up
                _ = try await sending.ask("blast 20000 \(receivers) r \(size)")
            }

            var rates: [Double] = []
            var p99s: [Int] = []
            var costs: [(Double, RelayCost)] = []
            for run in stride(from: 1, through: fixedMaximum == nil ? runs : 0, by: 1) {
                progress("unicast: \(relay), full-speed run \(run)/\(runs)")
                let (outcome, cost) = try await RelayCost.measure(a: a, b: b) {
                    let outcome = try await context.tracked([(receiving, messages)], unicast: true) {
                        _ = try await sending.ask("blast \(messages) \(receivers) r \(size)")
                    }
                    return (outcome, outcome.figures[0]["distinct", default: 0])
                }
                let f = outcome.figures[0]
                let rate = Double(f["distinct", default: 0]) / outcome.seconds
                rates.append(rate)
                p99s.append(f["p99", default: 0])
                costs.append((rate, cost))
                table.add(relay + label, "\(run)", rate.grouped, ratio(rate, baseline[1]), cost.cpu, cost.allocations,
                          cost.contextSwitches, ms(f["p50"]), ms(f["p90"]), ms(f["p99"]),
                          ms(f["p999"]), "\(f["distinct", default: 0])/\(messages)", "\(messages - f["distinct", default: 0])",
                          "\(f["duplicates", default: 0])", "\(f["misrouted", default: 0])", try await nodeDrops(a, b))
            }
            if !rates.isEmpty {
                let median = rates.quantile(0.5)
                figures.medians[relay] = median
                figures.fullSpeedP99[relay] = p99s.sorted()[p99s.count / 2]
                figures.costs[relay] = costs.sorted { $0.0 < $1.0 }[costs.count / 2].1
                medians.append("\(relay): median \(median.grouped) msgs/s" + (baseline[1].map { " = \((median / $0).fixed(2))× redis-benchmark -P 1 (\($0.grouped))" } ?? ""))
            }
            if index == 0, withLatency {
                let maximum = fixedMaximum ?? rates.quantile(0.5)
                let (table, p99s) = try await latency(maximum: maximum, relay: relay, sending: sending, receiving: receiving,
                                                  nodes: (a, b))
                tables.append(table)
                figures.latencyP99 = p99s
            }
        }
        table.notes = [
            "Every process is separate: Redis, node a, node b, the sender clients and the receiver clients (2 cores shared).",
            "A sender client writes probes while its socket takes them; node a runs a `for await` loop per connection that",
            "forwards each probe: post = `await sender.post(uid:)` (queued in order, no waiting for Redis);",
            "send = `try await sender.send(uid:)` (waits for its PUBLISH's answer: one in flight per client, like redis-benchmark -P 1 -c 50).",
            "msgs/s: distinct probes received / seconds from the first send until the last arrived. Latency: probe's send",
            "time (sender process) to its arrival (receiver process), CLOCK_MONOTONIC; at full speed it is mostly queueing.",
            "Node costs per relayed message, both nodes (node a's share + node b's): CPU time (user + system, getrusage),",
            "allocation calls (ordo-one's malloc interposer preloaded into the nodes; — when it was not built) and context",
            "switches (voluntary + involuntary), from the start of the run until the last probe arrived.",
        ] + medians
        return ((table.rows.isEmpty ? [] : [table]) + tables, figures)
    }

    private func latency(maximum: Double, relay: String, sending: ChildProcess, receiving: ChildProcess,
                         nodes: (a: ChildProcess, b: ChildProcess)) async throws -> (ResultTable, [Int: Int]) {
        let size = context.payloadSize
        var latency = ResultTable(
            title: "Latency under open-loop load (cross-node unicast, relay \(relay)\(label), \(pacedSeconds) s per rate; maximum \(maximum.grouped) msgs/s)",
            columns: ["offered load", "offered msgs/s", "delivered msgs/s", "node CPU µs/msg (a + b)", "allocations/msg (a + b)",
                      "context switches/msg", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
                      "received once", "lost", "duplicates"])
        var p99s: [Int: Int] = [:]
        for share in loads {
            let rate = maximum * Double(share) / 100
            let total = Int(rate * Double(pacedSeconds))
            progress("latency: \(share)% = \(rate.grouped) msgs/s for \(pacedSeconds) s")
            let (outcome, cost) = try await RelayCost.measure(a: nodes.a, b: nodes.b) {
                let outcome = try await context.tracked([(receiving, total)], unicast: true) {
                    _ = try await sending.ask("pace \(Int(rate)) \(total) \(receivers) r \(size)")
                }
                return (outcome, outcome.figures[0]["distinct", default: 0])
            }
            let f = outcome.figures[0]
            p99s[share] = f["p99"]
            latency.add("\(share)%", rate.grouped, (Double(f["distinct", default: 0]) / outcome.seconds).grouped,
                        cost.cpu, cost.allocations, cost.contextSwitches, ms(f["p50"]), ms(f["p90"]), ms(f["p99"]), ms(f["p999"]), ms(f["max"]),
                        "\(f["distinct", default: 0])/\(total)", "\(total - f["distinct", default: 0])", "\(f["duplicates", default: 0])")
        }
        latency.notes = [
            "Open loop: each of the \(senders) sender clients sends on a fixed schedule whatever the replies; a probe carries its",
            "scheduled send time, so a late send counts as latency (no coordinated omission). Percentiles from an HDR histogram.",
        ]
        if let low = loads.min(), let high = loads.max(), let p99Low = p99s[low], let p99High = p99s[high], p99Low > 0 {
            latency.notes.append("p99 at \(high)% is \((Double(p99High) / Double(p99Low)).fixed(2))× p99 at \(low)%.")
        }
        return (latency, p99s)
    }
}

/// Both nodes' drop counters since they started (`clusterws_drops_total` by reason): what a lost count is.
func nodeDrops(_ a: ChildProcess, _ b: ChildProcess) async throws -> String {
    let inA = try await a.ask("drops").dropFirst("drops ".count)
    let inB = try await b.ask("drops").dropFirst("drops ".count)
    return "\(inA); \(inB)"
}

/// Microseconds → milliseconds with two decimals.
func ms(_ microseconds: Int?) -> String {
    guard let microseconds else { return "—" }
    return (Double(microseconds) / 1_000).fixed(2)
}

func ratio(_ value: Double, _ base: Double?) -> String {
    guard let base, base > 0 else { return "—" }
    return (value / base).fixed(2) + "×"
}
