import Foundation

/// A throwaway Redis Cluster on loopback: `masters` primaries with
/// `replicasPerMaster` replicas each, every node a ``RedisServerProcess`` with
/// `--cluster-enabled yes`, joined with `redis-cli --cluster create`.
///
/// ```swift
/// let cluster = try await RedisClusterProcess.start()   // 3 masters + 3 replicas
/// defer { cluster.terminate() }
/// print(cluster.url)   // redis+cluster://127.0.0.1:31001,127.0.0.1:31002,…
/// ```
public final class RedisClusterProcess: @unchecked Sendable {
    /// Every node, in the order given to `redis-cli --cluster create` (masters first).
    public let nodes: [RedisServerProcess]
    private let directory: URL

    /// `redis+cluster://` with every node as a seed.
    public var url: String {
        "redis+cluster://" + nodes.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
    }

    private init(nodes: [RedisServerProcess], directory: URL) {
        self.nodes = nodes
        self.directory = directory
    }

    /// Starts the nodes, creates the cluster and returns once every node reports `cluster_state:ok`.
    public static func start(masters: Int = 3, replicasPerMaster: Int = 1, nodeTimeout: Duration = .seconds(2)) async throws -> RedisClusterProcess {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("clusterws-cluster-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var nodes: [RedisServerProcess] = []
        do {
            for index in 0..<(masters * (1 + replicasPerMaster)) {
                var attempt = 0
                while true {  // a port found free can be taken before redis-server binds it: try another
                    let port = try clusterPort()
                    do {
                        nodes.append(try await RedisServerProcess.start(port: port, arguments: [
                            "--cluster-enabled", "yes",
                            "--cluster-config-file", directory.appendingPathComponent("nodes-\(index)-\(attempt).conf").path,
                            "--cluster-node-timeout", "\(Int(nodeTimeout.components.seconds * 1000 + nodeTimeout.components.attoseconds / 1_000_000_000_000_000))",
                            "--dir", directory.path,
                            // A replica may always take over (a fresh test cluster's replica may not have synced long ago).
                            "--cluster-replica-validity-factor", "0",
                            // A shard without a master stops only its own slots, not the whole cluster.
                            "--cluster-require-full-coverage", "no",
                        ]))
                        break
                    } catch EmbeddedRedisError.failedToStart(let output) where attempt < 5 && output.contains("in use") {
                        attempt += 1
                    }
                }
            }
            let cluster = RedisClusterProcess(nodes: nodes, directory: directory)
            try await cluster.cli(["--cluster", "create"] + nodes.map { "127.0.0.1:\($0.port)" }
                                  + ["--cluster-replicas", "\(replicasPerMaster)", "--cluster-yes"])
            try await cluster.waitUntilHealthy()
            return cluster
        } catch {
            for node in nodes { node.terminate() }
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
    }

    /// Waits until every running node says `cluster_state:ok` and knows the
    /// same number of masters (after a start, a failover or a restart).
    public func waitUntilHealthy(within limit: Duration = .seconds(30)) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        while clock.now < deadline {
            var healthy = true
            for node in nodes where node.isRunning {
                let info = (try? await cli(["-p", "\(node.port)", "CLUSTER", "INFO"])) ?? ""
                if !info.contains("cluster_state:ok") { healthy = false; break }
                // Replicas have synced with their master.
                let replication = (try? await cli(["-p", "\(node.port)", "INFO", "replication"])) ?? ""
                if replication.contains("role:slave"), !replication.contains("master_link_status:up") { healthy = false; break }
            }
            if healthy { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw EmbeddedRedisError.startTimeout(output: "the cluster did not reach cluster_state:ok")
    }

    /// Ports of the current masters, from `CLUSTER NODES` of a running node.
    public func masterPorts() async throws -> [Int] {
        guard let node = nodes.first(where: { $0.isRunning }) else { return [] }
        let text = try await cli(["-p", "\(node.port)", "CLUSTER", "NODES"])
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count > 2, fields[2].contains("master"), !fields[2].contains("fail") else { return nil }
            return fields[1].split(separator: "@").first?.split(separator: ":").last.flatMap { Int($0) }
        }
    }

    /// Runs `redis-cli` with `arguments` (host 127.0.0.1) and returns its output.
    @discardableResult
    public func cli(_ arguments: [String]) async throws -> String {
        guard let binary = ["/usr/bin/redis-cli", "/usr/local/bin/redis-cli"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw EmbeddedRedisError.notInstalled
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["-h", "127.0.0.1"] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        // Read and wait on a thread of our own (never the cooperative pool; and no
        // readabilityHandler, whose dispatch source can race with the pipe's close).
        return try await withCheckedThrowingContinuation { continuation in
            do { try process.run() } catch { return continuation.resume(throwing: error) }
            Thread {
                let data = PipeReader.readToEnd(output.fileHandleForReading)
                process.waitUntilExit()
                let text = String(decoding: data, as: UTF8.self)
                if process.terminationStatus == 0 {
                    continuation.resume(returning: text)
                } else {
                    continuation.resume(throwing: EmbeddedRedisError.failedToStart(output: "redis-cli \(arguments.joined(separator: " ")): \(text)"))
                }
            }.start()
        }
    }

    /// Kills every node and removes the cluster's files.
    public func terminate() {
        for node in nodes { node.terminate() }
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { terminate() }

    /// A free loopback port whose cluster-bus port (port + 10000) is free too.
    private static func clusterPort() throws -> Int {
        for _ in 0..<100 {
            let port = Int.random(in: 20_000...55_000)
            if RedisServerProcess.isFree(port), RedisServerProcess.isFree(port + 10_000) { return port }
        }
        throw EmbeddedRedisError.failedToStart(output: "no free port pair for a cluster node")
    }
}

