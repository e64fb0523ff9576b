@testable import ClusterWS
import EmbeddedRedis
import NIOCore
import ServiceLifecycle
import Logging
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Thrown when something a test waits for does not happen in time.
struct TimedOut: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Runs `body`, failing with ``TimedOut`` if it takes longer than `limit`.
/// The guard against hangs: tests wait for events, this only bounds the wait.
/// `body` runs in its own task, so even an await that ignores cancellation
/// cannot hold the test past `limit`.
func within<T: Sendable>(
    _ limit: Duration, _ what: String = "the operation",
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let outcome = Once<T>()
    let timer = Mutex<Task<Void, Never>?>(nil)
    defer { timer.withLock { $0?.cancel() } }  // done in time: the timer goes too
    return try await withCheckedThrowingContinuation { continuation in
        outcome.arm(continuation)
        let work = Task {
            do { outcome.finish(.success(try await body())) } catch { outcome.finish(.failure(error)) }
        }
        timer.withLock {
            $0 = Task {
                do { try await Task.sleep(for: limit) } catch { return }  // cancelled: finished in time
                outcome.finish(.failure(TimedOut(what: what)))
                work.cancel()
            }
        }
    }
}

/// Resumes a continuation with the first result it is given.
private final class Once<T: Sendable>: Sendable {
    private let state = Mutex<(CheckedContinuation<T, any Error>?, Bool)>((nil, false))

    func arm(_ continuation: CheckedContinuation<T, any Error>) {
        state.withLock { $0.0 = continuation }
    }

    func finish(_ result: Result<T, any Error>) {
        let continuation = state.withLock { state -> CheckedContinuation<T, any Error>? in
            defer { state = (nil, true) }
            return state.1 ? nil : state.0
        }
        continuation?.resume(with: result)
    }
}

/// Starts a real `redis-server` on a free loopback port for the duration of `body`.
/// A missing `redis-server` fails the test with instructions; it never skips.
func withRedisServer<T>(
    arguments: [String] = [],
    _ body: (RedisServerProcess) async throws -> T
) async throws -> T {
    let server: RedisServerProcess
    do {
        server = try await RedisServerProcess.start(arguments: arguments)
    } catch {
        Issue.record("could not start redis-server: \(error)")
        throw error
    }
    defer { server.terminate() }
    return try await body(server)
}

/// Runs `services` (their `run()`) while `body` runs, then cancels them and
/// waits for them to return.
func withRunning<T: Sendable>(
    _ services: [any Service],
    _ body: () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for service in services {
            group.addTask { try await service.run() }
        }
        do {
            let result = try await body()
            group.cancelAll()
            try await group.waitForAll()
            return result
        } catch {
            group.cancelAll()
            throw error
        }
    }
}

extension RedisConfiguration {
    /// A configuration for `server` with short timings, so failures show quickly.
    static func testing(_ server: RedisServerProcess) -> RedisConfiguration {
        var configuration = try! RedisConfiguration(url: server.url)
        configuration.connectTimeout = .seconds(2)
        configuration.commandTimeout = .seconds(5)
        configuration.disconnectedCommandWait = .seconds(5)
        configuration.reconnectBackoff = .init(initial: .milliseconds(20), maximum: .milliseconds(200))
        return configuration
    }
}

extension ByteBuffer {
    init(bytes: some Sequence<UInt8>) {
        self.init()
        writeBytes(Array(bytes))
    }
}

/// Collects the next `count` messages of `stream`, failing after `limit`.
func next<Messages: AsyncSequence & Sendable>(
    _ count: Int, from stream: Messages, within limit: Duration = .seconds(10)
) async throws -> [Messages.Element] where Messages.Element: Sendable, Messages.Failure == Never {
    try await within(limit, "\(count) messages") {
        var collected: [Messages.Element] = []
        for await element in stream {
            collected.append(element)
            if collected.count == count { break }
        }
        return collected
    }
}

/// Runs services in a real `ServiceGroup`, so a test can trigger a graceful shutdown.
final class ServiceGroupHarness: Sendable {
    private let group: ServiceGroup
    private let task = Mutex<Task<Void, any Error>?>(nil)

    init(_ services: any Service...) {
        var logger = Logger(label: "test.services")
        logger.logLevel = .error
        group = ServiceGroup(configuration: .init(services: services, logger: logger))
    }

    func start() async throws {
        let group = self.group
        task.withLock { $0 = Task { try await group.run() } }
    }

    func shutdownGracefully() async throws {
        await group.triggerGracefulShutdown()
        try await task.withLock { $0 }?.value
    }
}

/// Returns once Redis reports a client blocked in BLPOP (asked over `redis`,
/// one round trip per check, so this waits on Redis, not on a clock).
func waitForBlockedClient(using redis: RedisConnection, count: Int = 1) async throws {
    try await within(.seconds(5), "\(count) blocked clients") {
        while try await redis.send(RedisCommand("INFO", "clients")).string?.contains("blocked_clients:\(count)\r\n") != true {}
    }
}

/// A loopback port bound but not listening: connections to it are refused,
/// and no other test can take it while this is alive.
final class RefusingPort: Sendable {
    let port: Int
    private let fd: Int32

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        // Through NIO's SocketAddress and raw bytes: no sockaddr_in members (which module
        // defines them depends on the module cache, and MemberImportVisibility then fails).
        let loopback = try SocketAddress(ipAddress: "127.0.0.1", port: 0)
        let bound = loopback.withSockAddr { address, size in bind(fd, address, socklen_t(size)) }
        guard fd >= 0, bound == 0 else { throw TimedOut(what: "a port to reserve") }
        var raw = [UInt8](repeating: 0, count: 128)
        var length = socklen_t(raw.count)
        _ = raw.withUnsafeMutableBytes { bytes in
            getsockname(fd, bytes.baseAddress?.assumingMemoryBound(to: sockaddr.self), &length)
        }
        self.fd = fd
        self.port = Int(raw[2]) << 8 | Int(raw[3])  // sin_port, network byte order
    }

    deinit { close(fd) }
}

/// At most `limit` bodies at once (a Redis Cluster is six redis-servers: too
/// many at once on two cores would make every timing-sensitive test flaky).
actor AsyncLimiter {
    static let redisClusters = AsyncLimiter(limit: 2)

    private let limit: Int
    private var running = 0
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(limit: Int) { self.limit = limit }

    func run<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        if running >= limit { await withCheckedContinuation { waiters.append($0) } } else { running += 1 }
        defer {
            if waiters.isEmpty { running -= 1 } else { waiters.removeFirst().resume() }
        }
        return try await body()
    }
}
