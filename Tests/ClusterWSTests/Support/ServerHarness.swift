@testable import ClusterWS
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Runs a real ``WebSocketServer`` on a free loopback port for the test body,
/// with an echo route at `/ws`, then shuts it down.
func withWebSocketServer<T: Sendable>(
    _ configuration: WebSocketServerConfiguration = .testing,
    setup: (WebSocketServer) -> Void = { _ in },
    _ body: @escaping @Sendable (WebSocketServer, Int) async throws -> T
) async throws -> T {
    var logger = Logger(label: "test.transport")
    logger.logLevel = .warning
    let server = WebSocketServer(configuration: configuration, logger: logger)
    server.addRoute("/ws") { socket in
        for await message in socket.messages {
            try? await socket.send(message)
        }
    }
    setup(server)
    return try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await server.run(); return nil }
        let port = try await server.waitUntilListening()
        do {
            let result = try await within(.seconds(30), "the test body") { try await body(server, port) }
            server.shutdown()
            try await group.waitForAll()
            return result
        } catch {
            server.shutdown()
            group.cancelAll()
            throw error
        }
    }
}

/// Runs a push-only ``WebSocketServer`` (route `/ws`, no message loop) on its
/// own one-thread event loop group, so a test can hold that loop (starve it)
/// or queue jobs on it; shuts both down after the body.
func withOneLoopServer(
    _ configuration: WebSocketServerConfiguration = .testing,
    _ body: @escaping @Sendable (WebSocketServer, any EventLoop, Int) async throws -> Void
) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let server = WebSocketServer(configuration: configuration, eventLoopGroup: group)
    server.addRoute("/ws") { _ in }
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await server.run() }
        let port = try await server.waitUntilListening()
        do {
            try await body(server, group.next(), port)
        } catch {
            server.shutdown()
            try? await tasks.waitForAll()
            throw error
        }
        server.shutdown()
        try await tasks.waitForAll()
    }
    try await group.shutdownGracefully()
}

extension WebSocketServerConfiguration {
    /// Small limits and short timeouts so limit and timeout tests run fast.
    static var testing: WebSocketServerConfiguration {
        WebSocketServerConfiguration(
            maxFrameSize: 64 * 1024, maxMessageSize: 128 * 1024, handshakeTimeout: .seconds(5),
            keepalive: .disabled, closeTimeout: .seconds(2))
    }
}

/// Records what a route saw, for assertions; a test can wait for a count.
final class Recorder<Value: Sendable>: Sendable {
    private let state = Mutex<(values: [Value], waiters: [(Int, CheckedContinuation<Void, Never>)])>(([], []))

    func append(_ value: Value) {
        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.values.append(value)
            let count = state.values.count
            let ready = state.waiters.filter { $0.0 <= count }.map(\.1)
            state.waiters.removeAll { $0.0 <= count }
            return ready
        }
        for waiter in ready { waiter.resume() }
    }

    var all: [Value] { state.withLock { $0.values } }

    /// Returns once at least `count` values were recorded.
    func wait(for count: Int) async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state -> Bool in
                if state.values.count >= count { return true }
                state.waiters.append((count, continuation))
                return false
            }
            if done { continuation.resume() }
        }
    }
}

/// Connects and upgrades a raw client to `path`.
///
/// With `sync`, it also completes a ping/pong round trip: the 101 is sent
/// before the server registers the connection, the pong only after, so on
/// return the server counts this connection.
func connectedClient(port: Int, path: String = "/ws", extra: [String] = [], sync: Bool = true) async throws -> RawClient {
    let client = try await RawClient.connect(port: port)
    _ = try await client.upgrade(path: path, extra: extra)
    if sync {
        try await client.send(Wire.frame(Wire.ping, Array("sync".utf8)))
        while true {
            let frame = try await client.readFrame()
            if frame.opcode == Wire.pong, frame.text == "sync" { break }
            guard frame.opcode == Wire.ping else { throw UpgradeFailed(status: 0, body: "no pong") }
            try await client.send(Wire.frame(Wire.pong, frame.payload))  // a keepalive ping got there first
        }
    }
    return client
}
