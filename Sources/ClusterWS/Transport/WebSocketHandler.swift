import CoreMetrics
package import NIOCore
package import NIOWebSocket

/// The channel handler of an upgraded connection: frames in, through the
/// protocol state machine, whole messages out to the connection's
/// ``WebSocket`` actor — on the same event loop, so without a hop or a task.
package final class WebSocketHandler: ChannelInboundHandler {
    package typealias InboundIn = WebSocketFrame
    package typealias OutboundOut = ByteBuffer

    private var machine: WebSocketStateMachine
    private let socket: WebSocket
    private let configuration: WebSocketServerConfiguration
    private let onClose: (WebSocket, WebSocketCloseCode) -> Void
    private var keepaliveTimer: Scheduled<Void>?
    private var closeTimer: Scheduled<Void>?
    private var awaitingPong = false
    private var heardFromPeer = false
    /// Inbound rate limits: messages (pings and pongs included) and bytes (every frame).
    private var messageBucket: TokenBucket?
    private var byteBucket: TokenBucket?

    package init(socket: WebSocket, configuration: WebSocketServerConfiguration,
                 onClose: @escaping (WebSocket, WebSocketCloseCode) -> Void) {
        self.socket = socket
        self.configuration = configuration
        self.onClose = onClose
        self.machine = WebSocketStateMachine(maxMessageSize: configuration.maxMessageSize)
        let now = NIODeadline.now()
        self.messageBucket = configuration.maxMessagesPerSecond.map { TokenBucket(perSecond: $0, now: now) }
        self.byteBucket = configuration.maxBytesPerSecond.map { TokenBucket(perSecond: $0, now: now) }
    }

    /// Takes a token for one inbound message or control frame; `false` when the client is too fast.
    private func withinMessageRate() -> Bool {
        messageBucket?.take(1, now: .now()) ?? true
    }

    package func handlerAdded(context: ChannelHandlerContext) {
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

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        heardFromPeer = true
        let frame = unwrapInboundIn(data)
        if byteBucket?.take(frame.length, now: .now()) == false, machine.state == .open {
            socket.counters.drop(.byteRateLimit)
            return perform(machine.fail(.policyViolation, "byte rate limit"), context: context)
        }
        perform(machine.receive(frame), context: context)
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Frame-level errors from NIO's WebSocketFrameDecoder.
        let action: WebSocketStateMachine.Action
        switch error as? NIOWebSocketError {
        case .invalidFrameLength?: action = machine.fail(.messageTooBig, "frame too big")
        case .fragmentedControlFrame?, .multiByteControlFrameLength?: action = machine.fail(.protocolError, "bad control frame")
        default: action = .closeTCP
        }
        perform(action, context: context)
    }

    package func channelWritabilityChanged(context: ChannelHandlerContext) {
        let writable = context.channel.isWritable
        socket.assumeIsolated { $0.writabilityChanged(isWritable: writable) }
        context.fireChannelWritabilityChanged()
    }

    package func channelInactive(context: ChannelHandlerContext) {
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
            guard withinMessageRate() else { return failRateLimited(context: context) }
            socket.assumeIsolated { $0.countInbound(message.kind) }
            if socket.inbound.append(message) {
                context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
            }
        case .pong(let payload):
            guard withinMessageRate() else { return failRateLimited(context: context) }
            // Through the connection's write path, so pongs for a client that pings and never
            // reads count against its outbound budget like any other frame.
            let frame = WebSocketFrameEncoding.frame(opcode: WebSocketFrameEncoding.opcodePong, payload: payload,
                                                     allocator: context.channel.allocator)
            socket.assumeIsolated { $0.write(frame) }
        case .pongReceived:
            // channelRead already noted that the peer is alive; unsolicited pongs count against the rate.
            guard withinMessageRate() else { return failRateLimited(context: context) }
        case .sendClose(let code, let reason, let thenCloseTCP):
            let frame = WebSocketFrameEncoding.closeFrame(code: code, reason: reason, allocator: context.channel.allocator)
            if thenCloseTCP {
                context.writeAndFlush(wrapOutboundOut(frame)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                // A peer that never reads never lets that write complete: close anyway.
                armCloseTimer(context: context)
            } else {
                context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
            }
        case .closeTCP:
            context.close(promise: nil)
        }
    }

    private func failRateLimited(context: ChannelHandlerContext) {
        socket.counters.drop(.rateLimit)
        perform(machine.fail(.policyViolation, "rate limit"), context: context)
    }

    /// Server-side close: send a close frame, then wait for the peer's close
    /// frame up to the close timeout.
    private func startClose(context: ChannelHandlerContext, code: WebSocketCloseCode, reason: String) {
        guard machine.startClose(code) else { return }
        perform(.sendClose(code, reason: reason, thenCloseTCP: false), context: context)
        armCloseTimer(context: context)
    }

    /// Every close ends: whatever started it, TCP is closed at the latest
    /// `closeTimeout` after our close frame was queued, even if the peer
    /// never reads it (so never lets it be written) and never answers.
    private func armCloseTimer(context: ChannelHandlerContext) {
        guard closeTimer == nil else { return }
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
                socket.counters.drop(.keepaliveTimeout)
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
