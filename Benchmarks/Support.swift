import Logging
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

/// Logs errors only, on standard error (tables stay alone on standard output).
func bootstrapQuietLogging() {
    // BENCH_LOG_LEVEL=info shows drops and limit closes while a benchmark runs.
    let level = ProcessInfo.processInfo.environment["BENCH_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .error
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}

/// What a benchmark client has read: the 101 response is skipped, then whole
/// server frames are handed out one at a time (payloads stay in the buffer).
struct ClientFrameReader {
    private(set) var pending = ByteBuffer()
    private var handshakeDone = false
    /// The frame handed out last, consumed at the next call (its payload stays readable till then).
    private var skip = 0

    /// Adds bytes; `true` exactly once, when the 101 response has been passed.
    mutating func feed(_ incoming: inout ByteBuffer) -> Bool {
        if pending.readableBytes == 0 { pending = incoming } else { pending.writeBuffer(&incoming) }
        guard !handshakeDone else { return false }
        let view = pending.readableBytesView
        guard let end = view.firstRange(of: [13, 10, 13, 10]) else { return false }
        pending.moveReaderIndex(forwardBy: view.distance(from: view.startIndex, to: end.upperBound))
        handshakeDone = true
        return true
    }

    /// The next whole frame: its opcode, where its payload starts in ``pending`` and its length.
    mutating func next() -> (opcode: UInt8, body: Int, length: Int)? {
        pending.moveReaderIndex(forwardBy: skip)
        skip = 0
        guard handshakeDone, pending.readableBytes >= 2 else { return nil }
        let start = pending.readerIndex
        let opcode = pending.getInteger(at: start, as: UInt8.self)! & 0x0F
        let short = Int(pending.getInteger(at: start + 1, as: UInt8.self)! & 0x7F)
        let headerSize = short < 126 ? 2 : (short == 126 ? 4 : 10)
        guard pending.readableBytes >= headerSize else { return nil }
        let length = short < 126 ? short
            : short == 126 ? Int(pending.getInteger(at: start + 2, as: UInt16.self)!)
            : Int(pending.getInteger(at: start + 2, as: UInt64.self)!)
        guard pending.readableBytes >= headerSize + length else { return nil }
        skip = headerSize + length
        return (opcode, start + headerSize, length)
    }

    /// Drops what has been read.
    mutating func compact() {
        pending.moveReaderIndex(forwardBy: skip)
        skip = 0
        if pending.readableBytes == 0 { pending.clear() } else { pending.discardReadBytes() }
    }
}
