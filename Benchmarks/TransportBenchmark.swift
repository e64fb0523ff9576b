import ArgumentParser
import Foundation
import Synchronization

/// Idle memory per connection, RSS over connect/disconnect rounds, and local
/// broadcast throughput: ClusterWS's transport beside a plain
/// hummingbird-websocket server, each in its own process, with the load
/// clients in a third.
struct TransportBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transport",
        abstract: "Idle RSS per connection, RSS over rounds, local broadcast deliveries/s: ClusterWS vs hummingbird-websocket."
    )

    @Option(help: "Idle connections for the memory figures.")
    var idleConnections = 10_000

    @Option(help: "Connections receiving the broadcast.")
    var broadcastConnections = 1_000

    @Option(help: "Messages per broadcast run.")
    var messages = 500

    @Option(help: "Payload bytes per message.")
    var payloadSize = 64

    @Option(help: "Broadcast runs (the median is reported).")
    var repeats = 5

    @Option(help: "Rounds of opening and closing all idle connections.")
    var rounds = 5

    @Option(help: "Servers to measure, comma-separated: clusterws, hummingbird, hosted (ClusterWS inside a Hummingbird app), node (a whole ClusterNode, connections bound to uids).")
    var servers = "clusterws,hummingbird,hosted"

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    struct Figures {
        var kind: String
        var idleBytesPerConnection: Double
        var roundPeaks: [Int]
        var deliveriesPerSecond: Double
        var runs: [Double]
        var pacedPerSecond: Double
        var pacedRuns: [Double]
    }

    func run() async throws {
        var results: [Figures] = []
        for kind in servers.split(separator: ",").map(String.init) {
            results.append(try await measure(kind))
        }
        var table = ResultTable(
            title: "WebSocket transport: \(idleConnections) idle connections, broadcast to \(broadcastConnections) (\(messages) msgs × \(payloadSize) B, median of \(repeats))",
            columns: ["server", "idle KiB/conn", "broadcast deliveries/s (back to back)", "broadcast deliveries/s (each awaited)",
                      "RSS peak per round (MiB)", "worst peak vs round 2"])
        for figures in results {
            let second = Double(figures.roundPeaks.count > 1 ? figures.roundPeaks[1] : figures.roundPeaks.first ?? 1)
            let worst = figures.roundPeaks.map { Double($0) / second - 1 }.max() ?? 0
            table.add(figures.kind, (figures.idleBytesPerConnection / 1024).fixed(1), figures.deliveriesPerSecond.grouped,
                      figures.pacedPerSecond.grouped,
                      figures.roundPeaks.map { (Double($0) / 1_048_576).fixed(1) }.joined(separator: " / "),
                      (worst * 100 >= 0 ? "+" : "") + (worst * 100).fixed(1) + "%")
        }
        if results.count >= 2 {
            let ratio = results[0].deliveriesPerSecond / results[1].deliveriesPerSecond
            let paced = results[0].pacedPerSecond / results[1].pacedPerSecond
            table.notes.append("broadcast: \(results[0].kind) is \(ratio.fixed(2))× \(results[1].kind) back to back, \(paced.fixed(2))× with each broadcast awaited.")
        }
        table.notes += results.map { "\($0.kind) back-to-back runs (deliveries/s): " + $0.runs.map(\.grouped).joined(separator: ", ") }
        table.notes += results.map { "\($0.kind) awaited runs (deliveries/s): " + $0.pacedRuns.map(\.grouped).joined(separator: ", ") }
        table.notes.append("back to back: the server calls broadcast \(messages) times without waiting (ClusterWS coalesces them into bursts);")
        table.notes.append("each awaited: every broadcast is awaited before the next (ClusterWS: broadcastAndWait, paced by fanOutPacingBytes).")
        for line in incompleteRuns.all { table.notes.append("INCOMPLETE RUN: " + line) }
        table.notes.append("Each server runs in its own process; RSS is read from /proc/<pid>/status. Load clients run in a third process.")
        print(json ? table.json() : table.render())
    }

    private func measure(_ kind: String) async throws -> Figures {
        progress("\(kind): starting server and load process")
        let server = try ChildProcess(arguments: ["serve", "--kind", kind])
        defer { server.stop() }
        let portLine = try await server.readLine()
        guard portLine.hasPrefix("port "), let port = Int(portLine.dropFirst(5)) else { throw BenchmarkError("server said \(portLine)") }
        // A cluster node binds every connection to a uid: give each its own.
        let path = kind == "node" ? "/ws?uid=u{n}" : "/ws"
        let load = try ChildProcess(arguments: ["load", "--port", "\(port)", "--path", path])
        defer { load.stop() }

        try await Task.sleep(for: .milliseconds(300))
        let before = server.residentBytes
        progress("\(kind): opening \(idleConnections) idle connections")
        try await open(idleConnections, load: load, server: server)
        try await Task.sleep(for: .milliseconds(500))
        let idle = Double(server.residentBytes - before) / Double(idleConnections)
        try await closeAll(load: load, server: server)

        var peaks: [Int] = []
        for round in 1...rounds {
            progress("\(kind): round \(round)/\(rounds): open and close \(idleConnections)")
            try await open(idleConnections, load: load, server: server)
            peaks.append(server.residentBytes)
            try await closeAll(load: load, server: server)
        }

        progress("\(kind): broadcast to \(broadcastConnections) connections")
        try await open(broadcastConnections, load: load, server: server)
        let runs = try await broadcastRuns("broadcast", load: load, server: server)
        let paced = try await broadcastRuns("paced", load: load, server: server)
        try await closeAll(load: load, server: server)
        return Figures(kind: kind, idleBytesPerConnection: idle, roundPeaks: peaks,
                       deliveriesPerSecond: runs.sorted()[runs.count / 2], runs: runs,
                       pacedPerSecond: paced.sorted()[paced.count / 2], pacedRuns: paced)
    }

    /// Deliveries per second, from the server's first send until the load
    /// process has counted every frame, for `repeats` runs.
    private func broadcastRuns(_ command: String, load: ChildProcess, server: ChildProcess) async throws -> [Double] {
        var runs: [Double] = []
        let deliveries = broadcastConnections * messages
        for _ in 0..<repeats {
            guard try await load.ask("expect \(deliveries)") == "armed" else { throw BenchmarkError("load not armed") }
            let clock = ContinuousClock()
            let start = clock.now
            _ = try await server.ask("\(command) \(messages) \(payloadSize)")
            let outcome = try await load.readLine()
            if outcome.hasPrefix("timeout") {
                progress("\(command): only \(outcome.dropFirst(8)) of \(deliveries) frames arrived within 60 s")
                incompleteRuns.append(("\(command): \(outcome.dropFirst(8)) of \(deliveries) frames in 60 s"))
                runs.append(Double(Int(outcome.dropFirst(8)) ?? 0) / (clock.now - start).seconds)
                continue
            }
            runs.append(Double(deliveries) / (clock.now - start).seconds)
        }
        return runs
    }

    private func open(_ count: Int, load: ChildProcess, server: ChildProcess) async throws {
        _ = try await load.ask("open \(count)")
        try await waitForServerCount(count, server: server)
    }

    private func closeAll(load: ChildProcess, server: ChildProcess) async throws {
        _ = try await load.ask("closeall")
        try await waitForServerCount(0, server: server)
    }

    /// Polls the server until it counts `expected` open connections.
    private func waitForServerCount(_ expected: Int, server: ChildProcess) async throws {
        for _ in 0..<600 {
            if try await server.ask("count") == "count \(expected)" { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw BenchmarkError("server never reached \(expected) connections")
    }
}

/// Runs in which not every frame arrived: reported in the table, never hidden.
let incompleteRuns = IncompleteRuns()

final class IncompleteRuns: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}
