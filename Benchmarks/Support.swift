import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// Runs blocking work (a child process, a file read) on its own thread, so it
/// never occupies a thread of Swift's cooperative pool.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try body() })
        }
        thread.start()
    }
}

/// Counts events from any thread and wakes one waiter when a target is reached.
final class TargetCounter: Sendable {
    private struct State {
        var count = 0
        var target = Int.max
        var waiter: CheckedContinuation<Void, Never>?
        var countBeforeTimeout = 0
    }

    private let state = Mutex(State())

    /// Starts a new round: the count goes back to zero.
    func reset(target: Int) {
        state.withLock { $0 = State(count: 0, target: target, waiter: nil) }
    }

    func increment(by amount: Int = 1) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.count += amount
            guard state.count >= state.target, let waiter = state.waiter else { return nil }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    var count: Int { state.withLock { $0.count } }

    /// The count when ``reached(within:)`` last gave up.
    var countBeforeTimeout: Int { state.withLock { $0.countBeforeTimeout } }

    /// Returns once the count reaches the target.
    func reached() async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state -> Bool in
                if state.count >= state.target { return true }
                state.waiter = continuation
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Returns `true` once the target is reached, `false` after `limit`.
    func reached(within limit: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { await self.reached(); return true }
            group.addTask { try? await Task.sleep(for: limit); return false }
            let first = await group.next() ?? false
            if !first {
                state.withLock { $0.countBeforeTimeout = $0.count }
                self.increment(by: Int.max / 2)  // release the waiter
            }
            group.cancelAll()
            return first
        }
    }
}

extension Duration {
    /// The duration in (fractional) seconds.
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

/// Opens a raw WebSocket client: connects, sends the upgrade request and
/// returns once the server's 101 has been seen by the handler that
/// `makeHandler` builds (it succeeds the promise it is given).
func connectWebSocketClient(
    host: String = "127.0.0.1", port: Int, path: String,
    makeHandler: @escaping @Sendable (EventLoopPromise<Void>) -> any ChannelInboundHandler
) async throws -> any Channel {
    let loop = MultiThreadedEventLoopGroup.singleton.next()
    let upgraded = loop.makePromise(of: Void.self)
    let channel = try await ClientBootstrap(group: loop)
        .channelOption(.socketOption(.tcp_nodelay), value: 1)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(makeHandler(upgraded))
            }
        }
        .connect(host: host, port: port).get()
    let request = "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    try await channel.writeAndFlush(ByteBuffer(string: request))
    try await upgraded.futureResult.get()
    return channel
}

/// Waits until a condition its owner tracks holds, or `limit` passes.
/// `park` is called once with a continuation: it returns `true` if the
/// condition already holds, else stores the continuation for the owner to
/// resume; on timeout `unpark` must resume a stored one. `true` when it held.
func waitUntilDone(within limit: Duration,
                   park: @escaping @Sendable (CheckedContinuation<Void, Never>) -> Bool,
                   unpark: @escaping @Sendable () -> Void) async -> Bool {
    await withTaskGroup(of: Bool.self) { group in
        group.addTask {
            await withCheckedContinuation { continuation in
                if park(continuation) { continuation.resume() }
            }
            return true
        }
        group.addTask { try? await Task.sleep(for: limit); return false }
        let first = await group.next() ?? false
        if !first { unpark() }
        group.cancelAll()
        return first
    }
}
