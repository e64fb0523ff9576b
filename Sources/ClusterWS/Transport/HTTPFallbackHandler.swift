public import NIOCore
public import NIOHTTP1

/// Answers plain HTTP requests (through a responder hook, e.g. `/health`) and
/// every refused WebSocket handshake, with a real HTTP response.
///
/// One request per connection: once the first request is complete, nothing
/// more is read (pipelined requests behind it are never run), the answer is
/// written, and the connection is closed.
final class HTTPFallbackHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let handshake: NIOLoopBoundBox<HandshakeInfo>
    private let isWebSocketPath: @Sendable (Substring) -> Bool
    private let responder: @Sendable () -> (@Sendable (PlainHTTPRequest) async -> PlainHTTPResponse)?
    private let maxBodyBytes: Int
    private let counters: NodeCounters
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()
    /// Set when the first request is complete (or refused): everything after it is ignored.
    private var busy = false
    private var answered = false

    init(
        handshake: NIOLoopBoundBox<HandshakeInfo>,
        maxBodyBytes: Int,
        counters: NodeCounters,
        isWebSocketPath: @escaping @Sendable (Substring) -> Bool,
        responder: @escaping @Sendable () -> (@Sendable (PlainHTTPRequest) async -> PlainHTTPResponse)?
    ) {
        self.handshake = handshake
        self.maxBodyBytes = maxBodyBytes
        self.counters = counters
        self.isWebSocketPath = isWebSocketPath
        self.responder = responder
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !busy else { return }
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
        case .body(var chunk):
            guard body.readableBytes + chunk.readableBytes <= maxBodyBytes else {
                counters.hit(.requestBody)
                return respond(context: context, PlainHTTPResponse.text("request body too large\n", status: .payloadTooLarge))
            }
            body.writeBuffer(&chunk)
        case .end:
            guard let head else { return }
            handshake.value.timer?.cancel()
            // One request at a time: stop reading until this one is answered (then we close).
            busy = true
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
            route(context: context, head: head)
        }
    }

    /// A request NIO's decoder could not parse: its protocol error handler
    /// has already written and flushed `400 Bad Request`; close at once.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Other errors (a refused upgrade) are answered by `route` with their own status.
        guard error is HTTPParserError else { return context.fireErrorCaught(error) }
        busy = true
        answered = true
        context.close(promise: nil)
    }

    private func route(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let path = HandshakeValidator.path(of: head.uri)
        var rejection = handshake.value.rejection
        if rejection == nil, HandshakeValidator.isUpgradeAttempt(head) {
            rejection = isWebSocketPath(path) ? (HandshakeValidator.validate(head) ?? .badRequest("bad handshake")) : .notFound
        }
        if rejection == nil, isWebSocketPath(path) {
            rejection = .upgradeRequired("this path only speaks WebSocket")
        }
        if let rejection { return respond(context: context, rejection.response) }
        guard let responder = responder() else {
            return respond(context: context, .text("not found\n", status: .notFound))
        }
        let request = PlainHTTPRequest(head: head, body: body)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.makeFutureWithTask { await responder(request) }.whenSuccess { response in
            let (handler, context) = bound.value
            handler.respond(context: context, response)
        }
    }

    private func respond(context: ChannelHandlerContext, _ response: PlainHTTPResponse) {
        guard !answered else { return }
        answered = true
        busy = true
        var headers = response.headers
        headers.replaceOrAdd(name: "Content-Length", value: String(response.body.readableBytes))
        headers.replaceOrAdd(name: "Connection", value: "close")
        let version = head?.version ?? .http1_1
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: response.status, headers: headers))),
                      promise: nil)
        if response.body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}

/// What the upgrade path learned about one connection's handshake, for the
/// fallback handler and the installer. Lives on the connection's event loop.
package struct HandshakeInfo {
    /// Why the upgrade was refused, if it was.
    package var rejection: HandshakeRejection?
    var attributes: [String: String] = [:]
    var timer: Scheduled<Void>?
    /// Counted among the server's pending handshakes (until upgraded or closed).
    var pending = false
    /// The connection's number, drawn when its route decided.
    var connectionID: UInt64?
    /// The connection was opened (the upgrade went through).
    var installed = false
    /// permessage-deflate as negotiated, if it was.
    var compression: PerMessageDeflateParameters?

    package init() {}
}
