/// The cost of history, in `Benchmarks cluster` (same run, same machine, same
/// processes as the unicast scenario): cross-node unicast at full
/// speed with user history off and on (relay `send` by default: a `post`
/// relay offers more than Redis runs scripts for, and what waits longer than
/// the command timeout is dropped), then open-loop latency for both at one
/// offered rate (half of the history-on maximum, so neither is saturated),
/// then the time for a `ClusterWSClient` to recover N missed messages.
struct HistoryScenario {
    var context: BenchContext
    var receivers: Int
    var senders: Int
    var messages: Int
    var runs: Int
    var pacedSeconds: Int
    var missed: [Int]
    /// How node a forwards: `send` (awaits each script's answer) or `post`.
    var relay = "send"

    func run() async throws -> [ResultTable] {
        var tables: [ResultTable] = []
        var figures: [Bool: UnicastScenario.Figures] = [:]
        for history in [false, true] {
            let scenario = unicast(history: history, loads: [], maximum: nil)
            let (measured, found) = try await scenario.measureFigures(baseline: [:], withLatency: false)
            tables += measured
            figures[history] = found
        }
        let onMaximum = figures[true]?.medians[relay] ?? .nan
        let offered = (onMaximum / 2).rounded()
        var latency: [Bool: Int] = [:]
        for history in [false, true] {
            // Half of the history-on maximum for both: the same offered rate.
            let scenario = unicast(history: history, loads: [50], maximum: onMaximum)
            let (measured, found) = try await scenario.measureFigures(baseline: [:], withLatency: true)
            tables += measured
            latency[history] = found.latencyP99[50]
        }
        var summary = ResultTable(
            title: "History off vs on, cross-node unicast (\(relay) relay, \(senders) senders → \(receivers) receivers), same run",
            columns: ["history.users", "msgs/s (median of \(runs))", "full-speed p99 ms", "open-loop p99 ms at \(offered.grouped) msgs/s"])
        for history in [false, true] {
            let found = figures[history] ?? .init()
            summary.add(history ? "on" : "off", (found.medians[relay] ?? .nan).grouped, ms(found.fullSpeedP99[relay]),
                        ms(latency[history]))
        }
        let off = figures[false]?.medians[relay] ?? .nan
        summary.notes = [
            "on: every message is one script that appends it to the user's history and publishes it (receivers are raw clients).",
            "History on delivers \((onMaximum / off * 100).fixed(0)) % of history off's rate at full speed.",
            "The open-loop runs offer both the same rate, half of history on's maximum (5 s, HDR histogram, no coordinated omission).",
        ]
        tables.append(summary)
        progress("history: recovery of \(missed.map(String.init).joined(separator: ", ")) missed messages")
        tables.append(try await RecoveryBenchmark.measure(redisURL: context.redisURL, counts: missed, payload: context.payloadSize,
                                                          runs: 5))
        return tables
    }

    private func unicast(history: Bool, loads: [Int], maximum: Double?) -> UnicastScenario {
        UnicastScenario(context: context, receivers: receivers, senders: senders, messages: messages, runs: runs, loads: loads,
                        pacedSeconds: pacedSeconds, fixedMaximum: maximum, relays: [relay],
                        nodeArguments: history ? ["--history"] : [], label: history ? ", history on" : ", history off")
    }
}
