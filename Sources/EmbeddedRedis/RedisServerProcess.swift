import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Why an embedded `redis-server` could not be started.
public enum EmbeddedRedisError: Error, CustomStringConvertible {
    /// No `redis-server` binary on `PATH`, `/usr/bin` or `/usr/sbin`.
    case notInstalled
    /// The server exited before it was ready; its output says why.
    case failedToStart(output: String)
    /// The server did not report readiness in time.
    case startTimeout(output: String)

    /// A sentence saying what went wrong and how to fix it.
    public var description: String {
        switch self {
        case .notInstalled:
            return "redis-server was not found. Install it with `apt-get install -y redis-server` (or run `make setup`)."
        case .failedToStart(let output):
            return "redis-server exited before it was ready:\n\(output)"
        case .startTimeout(let output):
            return "redis-server did not become ready within 10 s:\n\(output)"
        }
    }
}

/// A throwaway `redis-server` on a free loopback port, with persistence off
/// (unless asked for) and its output captured.
///
/// Used by the tests, the demo and the benchmarks when no `REDIS_URL` is
/// given. It can be stopped and started again on the same port, to test
/// what happens when Redis goes away and comes back.
///
/// ```swift
/// let redis = try await RedisServerProcess.start()
/// defer { redis.terminate() }
/// print(redis.url)   // redis://127.0.0.1:41234
/// ```
public final class RedisServerProcess: @unchecked Sendable {
    /// The loopback port the server listens on.
    public let port: Int
    /// Extra `redis-server` arguments, such as `["--requirepass", "secret"]`.
    public let arguments: [String]
    private let lock = NSLock()
    private var process: Process?
    private var output = ""

    /// `redis://127.0.0.1:<port>`.
    public var url: String { "redis://127.0.0.1:\(port)" }

    private init(port: Int, arguments: [String]) {
        self.port = port
        self.arguments = arguments
    }

    /// Starts a server on a free port (or `port`) and returns once it accepts connections.
    public static func start(port: Int? = nil, arguments: [String] = []) async throws -> RedisServerProcess {
        var lastError: (any Error)?
        for _ in 0..<5 {  // a free port can be taken between probe and bind; try another
            let server = RedisServerProcess(port: try port ?? freeLoopbackPort(), arguments: arguments)
            do {
                try await server.launch()
                return server
            } catch EmbeddedRedisError.failedToStart(let output) where port == nil && output.contains("Address already in use") {
                lastError = EmbeddedRedisError.failedToStart(output: output)
            }
        }
        throw lastError ?? EmbeddedRedisError.notInstalled
    }

    /// Starts the server again on the same port after ``stop(crash:)``.
    public func restart() async throws {
        try await launch()
    }

    /// Stops the server and waits for it to exit. By default it shuts down
    /// cleanly (`SHUTDOWN NOSAVE` through `redis-cli`, closing every client
    /// connection); `crash: true` kills it with `SIGKILL`, as a crash would.
    ///
    /// (`SIGTERM` is not used: a child started from a Swift process inherits
    /// a signal mask that blocks it.)
    public func stop(crash: Bool = false) async {
        guard let process = lock.withLock({ self.process }) else { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let running = lock.withLock { () -> Bool in
                guard process.isRunning else { return false }
                process.terminationHandler = { _ in continuation.resume() }
                return true
            }
            guard running else { return continuation.resume() }
            if crash || !shutdownThroughCLI() {
                kill(process.processIdentifier, SIGKILL)
            }
        }
        lock.withLock { self.process = nil }
    }

    private func shutdownThroughCLI() -> Bool {
        guard let cli = Self.findBinary("redis-cli") else { return false }
        let shutdown = Process()
        shutdown.executableURL = URL(fileURLWithPath: cli)
        shutdown.arguments = ["-h", "127.0.0.1", "-p", "\(port)"] + authArguments + ["SHUTDOWN", "NOSAVE"]
        shutdown.standardOutput = FileHandle.nullDevice
        shutdown.standardError = FileHandle.nullDevice
        return (try? shutdown.run()) != nil
    }

    /// `-a password` when the server was started with `--requirepass`.
    private var authArguments: [String] {
        guard let index = arguments.firstIndex(of: "--requirepass"), index + 1 < arguments.count else { return [] }
        return ["--no-auth-warning", "-a", arguments[index + 1]]
    }

    /// Kills the server without waiting (for `defer` blocks and deinit).
    public func terminate() {
        lock.withLock {
            if let process, process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process = nil
        }
    }

    deinit { terminate() }

    /// Everything the server printed so far.
    public var log: String { lock.withLock { output } }

    private func launch() async throws {
        guard let binary = Self.findBinary("redis-server") else { throw EmbeddedRedisError.notInstalled }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--logfile", "", "--protected-mode", "no",
        ] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice

        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let state = LaunchState(continuation)
            // The server's output is read on a thread of its own until the pipe closes
            // (no readabilityHandler: its dispatch source can race with the pipe's close).
            let handle = pipe.fileHandleForReading
            Thread { [weak self] in
                PipeReader.forEachChunk(of: handle) { chunk in
                    let text = String(decoding: chunk, as: UTF8.self)
                    let all = self?.lock.withLock { () -> String in
                        guard let self else { return "" }
                        self.output += text
                        // Only the start-up and the last lines matter (for error reports): bounded.
                        if self.output.utf8.count > 64 << 10 { self.output = String(self.output.suffix(32 << 10)) }
                        return self.output
                    } ?? text
                    if all.contains("Ready to accept connections") { state.finish(nil) }
                }
            }.start()
            process.terminationHandler = { [weak self] _ in
                state.finish(EmbeddedRedisError.failedToStart(output: self?.log ?? ""))
            }
            do {
                lock.withLock {
                    output = ""
                    self.process = process
                }
                try process.run()
            } catch {
                state.finish(error)
            }
            DispatchQueue.global().asyncAfter(deadline: .now() + 10) { [weak self] in
                state.finish(EmbeddedRedisError.startTimeout(output: self?.log ?? ""))
            }
        }
        process.terminationHandler = nil
    }

    private static func findBinary(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let candidates = path.split(separator: ":").map { "\($0)/\(name)" } + ["/usr/bin/\(name)", "/usr/sbin/\(name)"]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Whether the server process is running.
    public var isRunning: Bool { lock.withLock { process?.isRunning ?? false } }

    /// Whether `port` can be bound on loopback right now.
    public static func isFree(_ port: Int) -> Bool {
        guard port > 0, port < 65_536 else { return false }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let length = socklen_t(MemoryLayout<sockaddr_in>.size)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        } == 0
    }

    /// Asks the kernel for a free loopback port.
    public static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { throw POSIXError(.EADDRINUSE) }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Resumes a launch continuation exactly once, whichever event comes first.
private final class LaunchState: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<Void, any Error>?

    init(_ continuation: CheckedContinuation<Void, any Error>) { self.continuation = continuation }

    func finish(_ error: (any Error)?) {
        let continuation = lock.withLock { () -> CheckedContinuation<Void, any Error>? in
            defer { self.continuation = nil }
            return self.continuation
        }
        if let error { continuation?.resume(throwing: error) } else { continuation?.resume() }
    }
}
