import Foundation

/// Runs Debian's `redis-benchmark` against the same server, as the baseline.
enum RedisBenchmarkTool {
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
        let data = output.fileHandleForReading.readDataToEndOfFile()
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
