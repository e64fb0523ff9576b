import EmbeddedRedis
import Foundation

/// Line-based commands between the benchmark driver and its child processes
/// (servers and load clients each run in their own process, so their memory
/// is measured apart and the 20,000-open-files limit applies per process).
final class ChildProcess: @unchecked Sendable {
    let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let lines: AsyncStream<String>
    private var iterator: AsyncStream<String>.AsyncIterator

    /// Starts this same executable with `arguments`, adding `environment` to this process's.
    init(arguments: [String], environment: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
        if !FileManager.default.isExecutableFile(atPath: process.executableURL!.path) {
            process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        }
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        let (stream, continuation) = AsyncStream<String>.makeStream()
        lines = stream
        iterator = stream.makeAsyncIterator()
        let handle = output.fileHandleForReading
        Thread {
            var pending: [UInt8] = []
            PipeReader.forEachChunk(of: handle) { chunk in
                pending.append(contentsOf: chunk)
                while let newline = pending.firstIndex(of: 10) {
                    continuation.yield(String(decoding: pending[..<newline], as: UTF8.self))
                    pending.removeSubrange(...newline)
                }
            }
            continuation.finish()
        }.start()
        try process.run()
    }

    func send(_ line: String) {
        input.fileHandleForWriting.write(Data((line + "\n").utf8))
    }

    /// The next line the child prints.
    func readLine() async throws -> String {
        guard let line = await iterator.next() else { throw BenchmarkError("child process \(process.arguments ?? []) exited") }
        return line
    }

    /// Sends `command` and returns the reply line.
    func ask(_ command: String) async throws -> String {
        send(command)
        return try await readLine()
    }

    /// Resident memory of the child, from /proc.
    var residentBytes: Int { Self.residentBytes(pid: process.processIdentifier) }

    static func residentBytes(pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kilobytes = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
            return kilobytes * 1024
        }
        return 0
    }

    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    deinit { stop() }
}

/// Reads commands from standard input on a thread of its own.
func standardInputLines() -> AsyncStream<String> {
    AsyncStream { continuation in
        Thread {
            while let line = Swift.readLine() { continuation.yield(line) }
            continuation.finish()
        }.start()
    }
}

/// Prints a reply line for the driver and flushes it.
func reply(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
