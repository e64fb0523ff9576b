import ClusterWS
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// A Hummingbird child channel: HTTP/1 with ClusterWS's WebSocket upgrade.
struct ClusterWSChildChannel: ServerChildChannel, HTTPChannelHandler {
    enum UpgradeResult: Sendable {
        /// Upgraded: the connection now lives in ClusterWS's handler, no task needed.
        case webSocket
        /// A plain HTTP request for the Hummingbird router.
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        /// A refused handshake: answer it and close.
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, PlainHTTPResponse)
    }

    struct Value: ServerChildChannelValue {
        let result: EventLoopFuture<UpgradeResult>
        let channel: any Channel
    }

    let webSockets: WebSocketServer
    let responder: HTTPChannelHandler.Responder
    let configuration: HTTP1Channel.Configuration

    init(webSockets: WebSocketServer, responder: @escaping HTTPChannelHandler.Responder,
         configuration: HTTP1Channel.Configuration) {
        self.webSockets = webSockets
        self.responder = responder
        self.configuration = configuration
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let handshake = NIOLoopBoundBox(HandshakeInfo(), eventLoop: channel.eventLoop)
            let upgrader = TypedUpgrader(webSockets: webSockets, handshake: handshake)
            let upgrade = NIOTypedHTTPServerUpgradeConfiguration<UpgradeResult>(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try channel.pipeline.syncOperations.addHandlers(configuration.additionalChannelHandlers())
                        let asyncChannel = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(isOutboundHalfClosureEnabled: true))
                        if let rejection = handshake.value.rejection {
                            return .refused(asyncChannel, rejection.response)
                        }
                        return .http(asyncChannel)
                    }
                })
            var pipeline = NIOUpgradableHTTPServerPipelineConfiguration(upgradeConfiguration: upgrade)
            pipeline.enablePipelining = false
            pipeline.enableErrorHandling = false
            pipeline.enableResponseHeaderValidation = false
            let result = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: pipeline)
            return Value(result: result, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.result.get() {
            case .webSocket:
                return
            case .http(let asyncChannel):
                await handleHTTP(asyncChannel: asyncChannel, logger: logger)
            case .refused(let asyncChannel, let response):
                try await asyncChannel.executeThenClose { _, outbound in
                    var fields: HTTPFields = [.connection: "close", .contentLength: String(response.body.readableBytes)]
                    for header in response.headers {
                        if let name = HTTPField.Name(header.name) { fields.append(HTTPField(name: name, value: header.value)) }
                    }
                    try await outbound.write(contentsOf: [
                        .head(HTTPResponse(status: .init(code: Int(response.status.code)), headerFields: fields)),
                        .body(response.body),
                        .end(nil),
                    ])
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }
}

/// ClusterWS's handshake validation and route decision as NIO's typed upgrader.
private struct TypedUpgrader: NIOTypedHTTPServerProtocolUpgrader {
    typealias UpgradeResult = ClusterWSChildChannel.UpgradeResult
    let supportedProtocol = "websocket"
    let requiredUpgradeHeaders: [String] = []
    let webSockets: WebSocketServer
    let handshake: NIOLoopBoundBox<HandshakeInfo>

    func buildUpgradeResponse(channel: any Channel, upgradeRequest: HTTPRequestHead,
                              initialResponseHeaders: HTTPHeaders) -> EventLoopFuture<HTTPHeaders> {
        webSockets.upgradeResponse(channel: channel, head: upgradeRequest, initialHeaders: initialResponseHeaders,
                                   handshake: handshake)
    }

    func upgrade(channel: any Channel, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<UpgradeResult> {
        channel.eventLoop.makeCompletedFuture {
            try webSockets.installUpgraded(channel: channel, head: upgradeRequest, handshake: handshake)
            return .webSocket
        }
    }
}
