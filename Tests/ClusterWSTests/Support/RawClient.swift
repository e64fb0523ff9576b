import NIOCore
import NIOPosix
import Synchronization

/// A TCP client that speaks raw bytes, so tests see exactly what is on the
/// wire (no WebSocket library in between).
final class RawClient: Sendable {
    private struct State {
        var buffer: [UInt8] = []
        var closed = false
        var waiter: (count: Int, continuation: CheckedContinuation<Void, Never>)?
    }

    private let state = Mutex(State())
    let channel: any Channel

    private init(channel: any Channel) { self.channel = channel }

    /// - Parameter receiveBuffer: `SO_RCVBUF` in bytes, to make a client that stops reading back up sooner.
    static func connect(port: Int, host: String = "127.0.0.1", receiveBuffer: Int? = nil) async throws -> RawClient {
        // Events that arrive before the client exists (a server that closes at once) are kept and replayed.
        let box = Mutex<(client: RawClient?, early: [Event])>((nil, []))
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
        if let receiveBuffer {
            bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBuffer))
        }
        let channel = try await bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector { event in
                        let client = box.withLock { box -> RawClient? in
                            if box.client == nil { box.early.append(event) }
                            return box.client
                        }
                        client?.receive(event)
                    })
                }
            }
            .connect(host: host, port: port).get()
        let client = RawClient(channel: channel)
        let early = box.withLock { box -> [Event] in
            box.client = client
            defer { box.early = [] }
            return box.early
        }
        for event in early { client.receive(event) }
        return client
    }

    fileprivate enum Event { case bytes([UInt8]), closed }

    fileprivate func receive(_ event: Event) {
        let resume = state.withLock { state -> CheckedContinuation<Void, Never>? in
            switch event {
            case .bytes(let bytes): state.buffer += bytes
            case .closed: state.closed = true
            }
            guard let waiter = state.waiter, state.closed || state.buffer.count >= waiter.count else { return nil }
            state.waiter = nil
            return waiter.continuation
        }
        resume?.resume()
    }

    func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    func send(_ text: String) async throws { try await send(Array(text.utf8)) }

    /// Queues bytes without waiting for them to be written (to a peer that may never read them).
    func sendWithoutWaiting(_ bytes: [UInt8]) {
        channel.writeAndFlush(ByteBuffer(bytes: bytes), promise: nil)
    }

    /// Waits until `count` bytes are buffered (or the connection closed).
    private func waitFor(_ count: Int) async {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Bool in
                if state.closed || state.buffer.count >= count { return true }
                state.waiter = (count, continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    struct Closed: Error {}

    /// Reads exactly `count` bytes.
    func read(_ count: Int) async throws -> [UInt8] {
        await waitFor(count)
        return try state.withLock { state in
            guard state.buffer.count >= count else { throw Closed() }
            defer { state.buffer.removeFirst(count) }
            return Array(state.buffer.prefix(count))
        }
    }

    /// Returns once the server has closed the TCP connection (any unread bytes are dropped).
    func waitForClose() async {
        await waitFor(Int.max)
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// Stops reading the socket: the peer's writes back up (a client that never reads).
    func stopReading() async throws {
        try await channel.setOption(.autoRead, value: false)
    }

    func close() { channel.close(promise: nil) }

    /// Reads an HTTP response head and its body (by Content-Length).
    func readHTTPResponse() async throws -> (status: Int, headers: [String: String], body: String) {
        var bytes: [UInt8] = []
        while !(bytes.count >= 4 && bytes.suffix(4) == [13, 10, 13, 10]) {
            bytes += try await read(1)
        }
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\r\n")
        let status = Int(lines[0].split(separator: " ")[1]) ?? 0
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: " ")
        }
        let length = Int(headers["content-length"] ?? "0") ?? 0
        let body = length > 0 ? String(decoding: try await read(length), as: UTF8.self) : ""
        return (status, headers, body)
    }
}

private final class Collector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let sink: @Sendable (RawClient.Event) -> Void
    init(sink: @escaping @Sendable (RawClient.Event) -> Void) { self.sink = sink }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        sink(.bytes(Array(buffer.readableBytesView)))
    }

    func channelInactive(context: ChannelHandlerContext) {
        sink(.closed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

extension Substring {
    func trimmingCharacters(in set: Character) -> String {
        var text = self
        while text.first == set { text.removeFirst() }
        while text.last == set { text.removeLast() }
        return String(text)
    }
}
