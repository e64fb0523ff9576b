import CoreMetrics
import NIOCore
import NIOWebSocket

/// The channel handler of an upgraded connection: frames in, through the
/// protocol state machine, whole messages out to the connection's
/// ``WebSocket`` actor — on the same event loop, so without a hop or a task.
final class WebSocketHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    private var machine: WebSocketStateMachine
    private let socket: WebSocket
    private let configuration: WebSocketServerConfiguration
    private let onClose: (WebSocket, WebSocketCloseCode) -> Void
    private var keepaliveTimer: Scheduled<Void>?
    private var closeTimer: Scheduled<Void>?
    private var awaitingPong = false
    private var heardFromPeer = false
    /// Inbound rate limit: a token bucket refilled at `maxMessagesPerSecond`.
    private var tokens: Double
    private var refilled = NIODeadline.now()

    init(socket: WebSocket, configuration: WebSocketServerConfiguration,
         onClose: @escaping (WebSocket, WebSocketCloseCode) -> Void) {
        self.socket = socket
        self.configuration = configuration
        self.onClose = onClose
        self.machine = WebSocketStateMachine(maxMessageSize: configuration.maxMessageSize)
        self.tokens = Double((configuration.maxMessagesPerSecond ?? 0) * 2)
    }

    /// Takes a token for one inbound message; `false` when the client is too fast.
    private func withinRate() -> Bool {
        guard let rate = configuration.maxMessagesPerSecond else { return true }
        let now = NIODeadline.now()
        let elapsed = Double((now - refilled).nanoseconds) / 1e9
        refilled = now
        tokens = min(Double(rate * 2), tokens + elapsed * Double(rate))
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        socket.assumeIsolated { socket in
            socket.attach { code, reason, abort in
                let (handler, context) = bound.value
                if abort {
                    handler.abort(context: context, code: code, reason: reason)
                } else {
                    handler.startClose(context: context, code: code, reason: reason)
                }
            }
        }
        scheduleKeepalive(context: context, after: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        heardFromPeer = true
        perform(machine.receive(unwrapInboundIn(data)), context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Frame-level errors from NIO's WebSocketFrameDecoder.
        let action: WebSocketStateMachine.Action
        switch error as? NIOWebSocketError {
        case .invalidFrameLength?: action = machine.fail(.messageTooBig, "frame too big")
        case .fragmentedControlFrame?, .multiByteControlFrameLength?: action = machine.fail(.protocolError, "bad control frame")
        default: action = .closeTCP
        }
        perform(action, context: context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let writable = context.channel.isWritable
        socket.assumeIsolated { $0.writabilityChanged(isWritable: writable) }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        keepaliveTimer?.cancel()
        closeTimer?.cancel()
        machine.closed()
        let code = machine.closeCode ?? .abnormalClosure
        socket.assumeIsolated { $0.didClose(code: code) }
        onClose(socket, code)
        context.fireChannelInactive()
    }

    private func perform(_ action: WebSocketStateMachine.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break
        case .deliver(let message):
            guard withinRate() else {
                socket.assumeIsolated { $0.countRateLimitClose() }
                return perform(machine.fail(.policyViolation, "rate limit"), context: context)
            }
            socket.assumeIsolated { $0.countInbound(message.kind) }
            if socket.inbound.append(message) {
                context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
            }
        case .pong(let payload):
            let frame = WebSocketFrameEncoding.frame(opcode: WebSocketFrameEncoding.opcodePong, payload: payload,
                                                     allocator: context.channel.allocator)
            context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        case .pongReceived:
            break  // channelRead already noted that the peer is alive
        case .sendClose(let code, let reason, let thenCloseTCP):
            let frame = WebSocketFrameEncoding.closeFrame(code: code, reason: reason, allocator: context.channel.allocator)
            if thenCloseTCP {
                context.writeAndFlush(wrapOutboundOut(frame)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            } else {
                context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
            }
        case .closeTCP:
            context.close(promise: nil)
        }
    }

    /// Server-side close: send a close frame, then wait for the peer's close
    /// frame up to the close timeout.
    private func startClose(context: ChannelHandlerContext, code: WebSocketCloseCode, reason: String) {
        guard machine.startClose(code) else { return }
        perform(.sendClose(code, reason: reason, thenCloseTCP: false), context: context)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        closeTimer = context.eventLoop.scheduleTask(in: configuration.closeTimeout.timeAmount) {
            bound.value.close(promise: nil)
        }
    }

    /// Fails the connection at once (a slow consumer whose buffer is full):
    /// the close frame is queued best-effort and TCP is closed without waiting.
    private func abort(context: ChannelHandlerContext, code: WebSocketCloseCode, reason: String) {
        guard machine.state != .closed else { return }
        _ = machine.fail(code, reason)
        let frame = WebSocketFrameEncoding.closeFrame(code: code, reason: reason, allocator: context.channel.allocator)
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        context.close(promise: nil)
    }

    // MARK: Keepalive

    /// Every `pingInterval` the server pings; if the peer sends nothing at all
    /// (no pong, no data) within `pongTimeout` of a ping, the connection is
    /// failed with 1008 and closed.
    private func scheduleKeepalive(context: ChannelHandlerContext, after delay: Duration?) {
        guard case .enabled(let pingInterval, let pongTimeout) = configuration.keepalive.mode else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        keepaliveTimer = context.eventLoop.scheduleTask(in: (delay ?? pingInterval).timeAmount) {
            let (handler, context) = bound.value
            handler.keepaliveFired(context: context, pingInterval: pingInterval, pongTimeout: pongTimeout)
        }
    }

    private func keepaliveFired(context: ChannelHandlerContext, pingInterval: Duration, pongTimeout: Duration) {
        guard machine.state == .open else { return }
        if awaitingPong {
            guard heardFromPeer else {
                perform(machine.fail(.policyViolation, "keepalive timeout"), context: context)
                return
            }
            awaitingPong = false
            let rest = pingInterval - pongTimeout
            scheduleKeepalive(context: context, after: rest > .zero ? rest : pingInterval)
        } else {
            awaitingPong = true
            heardFromPeer = false
            let ping = WebSocketFrameEncoding.frame(opcode: WebSocketFrameEncoding.opcodePing, payload: ByteBuffer(),
                                                    allocator: context.channel.allocator)
            context.writeAndFlush(wrapOutboundOut(ping), promise: nil)
            scheduleKeepalive(context: context, after: pongTimeout)
        }
    }
}
