import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import Synchronization

/// One WebSocket client connection (SwiftNIO): the upgrade with a
/// subprotocol, text frames handed to `onText`, pings answered, masked sends.
final class WebSocketConnection: Sendable {
    private let channel: any Channel
    private let ended: Mutex<(reason: String?, waiters: [CheckedContinuation<String, Never>])>

    private init(channel: any Channel) {
        self.channel = channel
        ended = Mutex((nil, []))
    }

    /// Connects to `url` (`ws://host[:port]/path?query`), upgrades with
    /// `subprotocol`, and returns once the server accepted both. `onOpen` runs
    /// on the event loop when the upgrade is accepted, before the first frame
    /// reaches `onText` (frames can follow the 101 in the same read).
    static func open(url: String, subprotocol: String, maxFrameSize: Int,
                     onOpen: @escaping @Sendable () -> Void = {},
                     onText: @escaping @Sendable (String) -> Void) async throws -> WebSocketConnection {
        guard let components = URLComponents(string: url), components.scheme == "ws", let host = components.host else {
            throw ClientError.invalidURL(url)
        }
        let port = components.port ?? 80
        var target = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
        if let query = components.percentEncodedQuery { target += "?" + query }
        let upgraded = Mutex<EventLoopPromise<Void>?>(nil)
        let reader = Mutex<FrameReader?>(nil)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                let promise = channel.eventLoop.makePromise(of: Void.self)
                upgraded.withLock { $0 = promise }
                let frames = FrameReader(onText: onText, maxMessageBytes: maxFrameSize)
                reader.withLock { $0 = frames }
                let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: maxFrameSize) { channel, response in
                    guard response.headers["Sec-WebSocket-Protocol"].first == subprotocol else {
                        promise.fail(ClientError.upgradeRefused("no \(subprotocol) in the answer"))
                        return channel.close()
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        onOpen()
                        try channel.pipeline.syncOperations.addHandler(frames)
                        promise.succeed()
                    }
                }
                let request = UpgradeRequest(host: host, port: port, target: target, subprotocol: subprotocol, failed: promise)
                let configuration: NIOHTTPClientUpgradeSendableConfiguration = (
                    upgraders: [upgrader],
                    completionHandler: { context in context.pipeline.removeHandler(request, promise: nil) }
                )
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(withClientUpgrade: configuration)
                    try channel.pipeline.syncOperations.addHandler(request)
                }
            }
            .connect(host: host, port: port).get()
        let connection = WebSocketConnection(channel: channel)
        channel.closeFuture.whenComplete { _ in
            upgraded.withLock { $0 }?.fail(ClientError.upgradeRefused("the connection closed during the upgrade"))
            connection.finish(reader.withLock { $0 }?.closeReason ?? "connection closed")
        }
        guard let promise = upgraded.withLock({ $0 }) else { throw ClientError.upgradeRefused("no pipeline") }
        do {
            try await promise.futureResult.get()
        } catch {
            channel.close(promise: nil)
            throw error
        }
        return connection
    }

    func send(text: String) {
        write(opcode: .text, ByteBuffer(string: text))
    }

    func send(binary bytes: [UInt8]) {
        write(opcode: .binary, ByteBuffer(bytes: bytes))
    }

    private func write(opcode: WebSocketOpcode, _ data: ByteBuffer) {
        let frame = WebSocketFrame(fin: true, opcode: opcode, maskKey: .random(), data: data)
        channel.writeAndFlush(frame, promise: nil)
    }

    /// A close handshake (1000), then the socket closes.
    func close() {
        var data = channel.allocator.buffer(capacity: 2)
        data.write(webSocketErrorCode: .normalClosure)
        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: data)
        channel.writeAndFlush(frame).whenComplete { _ in
            self.channel.eventLoop.scheduleTask(in: .seconds(2)) { self.channel.close(promise: nil) }
        }
    }

    /// Closes the socket without a close frame (a network failure, as the server sees it).
    func abort() {
        channel.close(promise: nil)
    }

    /// Waits until the connection has ended; returns why.
    func closed() async -> String {
        await withCheckedContinuation { continuation in
            let reason = ended.withLock { state -> String? in
                if state.reason == nil { state.waiters.append(continuation) }
                return state.reason
            }
            if let reason { continuation.resume(returning: reason) }
        }
    }

    private func finish(_ reason: String) {
        let waiters = ended.withLock { state -> [CheckedContinuation<String, Never>] in
            guard state.reason == nil else { return [] }
            state.reason = reason
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: reason) }
    }
}

/// Writes the upgrade request once the socket is connected.
private final class UpgradeRequest: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    let host: String
    let port: Int
    let target: String
    let subprotocol: String
    let failed: EventLoopPromise<Void>

    init(host: String, port: Int, target: String, subprotocol: String, failed: EventLoopPromise<Void>) {
        self.host = host
        self.port = port
        self.target = target
        self.subprotocol = subprotocol
        self.failed = failed
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(host):\(port)")
        headers.add(name: "Sec-WebSocket-Protocol", value: subprotocol)
        headers.add(name: "Content-Length", value: "0")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: target, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    /// A response that is not the upgrade (a 4xx): the upgrade failed.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            failed.fail(ClientError.upgradeRefused("HTTP \(head.status.code)"))
        }
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failed.fail(ClientError.upgradeRefused("\(error)"))
        context.close(promise: nil)
    }
}

/// Reassembles messages, answers pings, hands text to the client.
private final class FrameReader: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let onText: @Sendable (String) -> Void
    private let maxMessageBytes: Int
    // Touched on the channel's event loop only.
    private var fragments = ByteBuffer()
    private var fragmentedOpcode: WebSocketOpcode?
    private let reason = Mutex<String?>(nil)

    init(onText: @escaping @Sendable (String) -> Void, maxMessageBytes: Int) {
        self.onText = onText
        self.maxMessageBytes = maxMessageBytes
    }

    var closeReason: String? { reason.withLock { $0 } }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            var data = frame.unmaskedData
            let code = data.readWebSocketErrorCode().map { "\($0)" } ?? "no code"
            reason.withLock { $0 = "closed by the server (\(code))" }
            let answer = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(answer)).whenComplete { _ in context.close(promise: nil) }
        case .text, .binary, .continuation:
            if frame.opcode != .continuation { fragmentedOpcode = frame.opcode; fragments.clear() }
            var data = frame.unmaskedData
            guard fragments.readableBytes + data.readableBytes <= maxMessageBytes else {
                reason.withLock { $0 = "a message over \(maxMessageBytes) bytes" }
                return context.close(promise: nil)
            }
            fragments.writeBuffer(&data)
            guard frame.fin else { return }
            if fragmentedOpcode == .text { onText(String(buffer: fragments)) }
            fragments.clear()
            fragmentedOpcode = nil
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        reason.withLock { $0 = "\(error)" }
        context.close(promise: nil)
    }
}
