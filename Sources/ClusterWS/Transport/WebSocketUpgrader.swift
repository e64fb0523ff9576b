package import NIOCore
package import NIOHTTP1
import NIOWebSocket
import Synchronization

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
    let server: WebSocketServer
    let handshake: NIOLoopBoundBox<HandshakeInfo>

    init(server: WebSocketServer, handshake: NIOLoopBoundBox<HandshakeInfo>) {
        self.server = server
        self.handshake = handshake
    }

    func buildUpgradeResponse(
        channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders
    ) -> EventLoopFuture<HTTPHeaders> {
        server.upgradeResponse(channel: channel, head: upgradeRequest, initialHeaders: initialResponseHeaders,
                               handshake: handshake)
    }

    func upgrade(context: ChannelHandlerContext, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<Void> {
        context.eventLoop.makeCompletedFuture {
            let pipeline = context.pipeline.syncOperations
            try pipeline.removeHandler(context: pipeline.context(handlerType: HTTPFallbackHandler.self), promise: nil)
            try server.installUpgraded(channel: context.channel, head: upgradeRequest, handshake: handshake)
        }
    }
}

extension WebSocketServer {
    /// The 101 response headers for a valid, accepted handshake; otherwise a
    /// failed future, with the ``HandshakeRejection`` recorded in `handshake`.
    package func upgradeResponse(
        channel: any Channel, head: HTTPRequestHead, initialHeaders: HTTPHeaders, handshake: NIOLoopBoundBox<HandshakeInfo>
    ) -> EventLoopFuture<HTTPHeaders> {
        if let rejection = HandshakeValidator.validate(head) {
            handshake.value.rejection = rejection
            return channel.eventLoop.makeFailedFuture(rejection)
        }
        let key = head.headers["sec-websocket-key"][0].trimmingSpaces
        return decide(channel: channel, head: head, handshake: handshake).map { extra in
            var headers = initialHeaders
            headers.add(contentsOf: extra)
            if let compression = self.negotiateCompression(channel: channel, head: head) {
                handshake.value.compression = compression
                headers.replaceOrAdd(name: "Sec-WebSocket-Extensions", value: compression.responseHeader)
            }
            headers.replaceOrAdd(name: "Upgrade", value: "websocket")
            headers.replaceOrAdd(name: "Connection", value: "Upgrade")
            headers.replaceOrAdd(name: "Sec-WebSocket-Accept", value: WebSocketAccept.value(forKey: key))
            return headers
        }
    }

    /// permessage-deflate for this request, if the client offers an acceptable
    /// form. A connection admitted with a context of its own gives its place
    /// back when its channel closes (however the handshake or connection ends).
    private func negotiateCompression(channel: any Channel, head: HTTPRequestHead) -> PerMessageDeflateParameters? {
        let limit = configuration.compression.maxContextTakeoverConnections
        var admitted = false
        let parameters = PerMessageDeflateNegotiation.negotiate(head.headers, configuration: configuration.compression) {
            guard compressionContexts.add(1, ordering: .relaxed).newValue <= limit else {
                compressionContexts.subtract(1, ordering: .relaxed)
                counters.hit(.compressionContexts)
                return false
            }
            admitted = true
            return true
        }
        if admitted {
            channel.closeFuture.whenComplete { _ in self.compressionContexts.subtract(1, ordering: .relaxed) }
        }
        return parameters
    }

    /// After the 101 went out: adds the frame decoder and opens the connection.
    package func installUpgraded(channel: any Channel, head: HTTPRequestHead, handshake: NIOLoopBoundBox<HandshakeInfo>) throws {
        try channel.pipeline.syncOperations.addHandler(
            ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: configuration.maxFrameSize)))
        try installWebSocket(channel: channel, head: head, handshake: handshake)
    }
}
