import ClusterWS
import EmbeddedRedis
import Foundation

/// Runs Debian's `redis-benchmark` against the same server, as the baseline.
enum RedisBenchmarkTool {
    /// Runs `redis-benchmark` PUBLISH on `channel` while a subscriber of ours
    /// counts into `received`: (delivered msgs/s from start until the subscriber
    /// has the last one, the tool's own req/s, messages received).
    static func delivered(configuration: RedisConfiguration, received: TargetCounter, channel: String, payload: String,
                          messages: Int, clients: Int, pipeline: Int) async throws -> (Double, Double, Int) {
        progress("redis-benchmark -P \(pipeline) -c \(clients) -n \(messages) PUBLISH")
        received.reset(target: messages)
        let clock = ContinuousClock()
        let start = clock.now
        let reported = try await offPool {
            try publish(host: configuration.host, port: configuration.port, password: configuration.password,
                        channel: channel, payload: payload, requests: messages, clients: clients, pipeline: pipeline)
        }
        _ = await received.reached(within: .seconds(30))
        let count = received.count
        return (Double(count) / (clock.now - start).seconds, reported, count)
    }

    /// Requests per second `redis-benchmark` reports for
    /// `PUBLISH <channel> <payload>` with `clients` connections and pipeline depth `pipeline`.
    static func publish(host: String, port: Int, password: String?, channel: String, payload: String,
                        requests: Int, clients: Int, pipeline: Int) throws -> Double {
        guard let binary = ["/usr/bin/redis-benchmark", "/usr/local/bin/redis-benchmark"]
            .first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw BenchmarkError("redis-benchmark not found: apt-get install -y redis-tools")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        var arguments = ["-h", host, "-p", "\(port)", "-n", "\(requests)", "-c", "\(clients)",
                         "-P", "\(pipeline)", "--csv"]
        if let password { arguments += ["-a", password] }
        process.arguments = arguments + ["PUBLISH", channel, payload]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = PipeReader.readToEnd(output.fileHandleForReading)
        process.waitUntilExit()
        // CSV: "test","rps","avg_latency_ms",...
        let text = String(decoding: data, as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix("\"PUBLISH") {
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            if fields.count > 1, let rps = Double(fields[1]) { return rps }
        }
        throw BenchmarkError("could not read redis-benchmark output:\n\(text)")
    }
}

struct BenchmarkError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
