import NIOCore
import NIOHTTP1
import NIOWebSocket

/// Our side of the WebSocket upgrade, plugged into NIO's HTTP upgrade handler.
///
/// Unlike `NIOWebSocketServerUpgrader` it validates the whole handshake
/// (§4.2.1) and remembers *why* it refused, so the fallback HTTP handler can
/// answer 400, 426, 403, 401 or 404 instead of dropping the connection. It
/// installs only the frame decoder: frames are written pre-encoded by
/// ``WebSocketFrameEncoding``, which lets a fan-out share one encoded frame.
final class WebSocketUpgrader: HTTPServerProtocolUpgrader, Sendable {
    let supportedProtocol = "websocket"
    let requiredUpgradeHeaders: [String] = []

    /// Decides whether to accept: the extra response headers, or a failed
    /// future carrying a ``HandshakeRejection``.
    let decide: @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<HTTPHeaders>
    /// Installs the WebSocket handlers once the 101 response is sent.
    let install: @Sendable (ChannelHandlerContext, HTTPRequestHead) throws -> Void
    let maxFrameSize: Int

    init(
        maxFrameSize: Int,
        decide: @escaping @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<HTTPHeaders>,
        install: @escaping @Sendable (ChannelHandlerContext, HTTPRequestHead) throws -> Void
    ) {
        self.maxFrameSize = maxFrameSize
        self.decide = decide
        self.install = install
    }

    func buildUpgradeResponse(
        channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders
    ) -> EventLoopFuture<HTTPHeaders> {
        if let rejection = HandshakeValidator.validate(upgradeRequest) {
            return channel.eventLoop.makeFailedFuture(rejection)
        }
        let key = upgradeRequest.headers["sec-websocket-key"][0].trimmingSpaces
        return decide(channel, upgradeRequest).map { extra in
            var headers = initialResponseHeaders
            headers.add(contentsOf: extra)
            headers.replaceOrAdd(name: "Upgrade", value: "websocket")
            headers.replaceOrAdd(name: "Connection", value: "Upgrade")
            headers.replaceOrAdd(name: "Sec-WebSocket-Accept", value: WebSocketAccept.value(forKey: key))
            return headers
        }
    }

    func upgrade(context: ChannelHandlerContext, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<Void> {
        context.eventLoop.makeCompletedFuture {
            try context.pipeline.syncOperations.addHandler(
                ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxFrameSize)))
            try install(context, upgradeRequest)
        }
    }
}
