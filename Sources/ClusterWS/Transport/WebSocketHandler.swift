import CoreMetrics
import Logging
package import NIOCore
package import NIOWebSocket

/// How a close the application or the transport asks for proceeds.
enum CloseMode: Sendable {
    /// Send a close frame and wait for the peer's, up to the close timeout.
    case handshake
    /// Fail at once: the close frame best-effort, TCP closed without waiting
    /// (a slow consumer whose buffer is full).
    case abort(WebSocketCloseCause)
}

/// The channel handler of an upgraded connection: frames in, through the
/// protocol state machine, whole messages out to the connection's
/// ``WebSocket`` actor — on the same event loop, so without a hop or a task.
/// It performs the machine's actions and runs its timers; every decision
/// (framing, rates, keepalive, why a close happens) is the machine's.
package final class WebSocketHandler: ChannelInboundHandler {
    package typealias InboundIn = WebSocketFrame
    package typealias OutboundOut = ByteBuffer

    private var machine: WebSocketStateMachine
    private let socket: WebSocket
    private let closeTimeout: Duration
    private let maxMessageSize: Int
    private let onClose: (WebSocket, WebSocketCloseCode) -> Void
    private var keepaliveTimer: Scheduled<Void>?
    private var closeTimer: Scheduled<Void>?
    /// The close frame of a failure, held until the application has handled the messages before it.
    private var heldClose: (code: WebSocketCloseCode, reason: String)?
    /// How long a failure's close frame waits for the application (``heldClose``).
    static let failureGrace: Duration = .seconds(1)

    package init(socket: WebSocket, configuration: WebSocketServerConfiguration,
                 onClose: @escaping (WebSocket, WebSocketCloseCode) -> Void) {
        self.socket = socket
        self.closeTimeout = configuration.closeTimeout
        self.maxMessageSize = configuration.maxMessageSize
        self.onClose = onClose
        self.machine = WebSocketStateMachine(limits: .init(configuration), now: .now(), deflate: socket.compression != nil)
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        socket.assumeIsolated { socket in
            socket.attach { code, reason, mode in
                let (handler, context) = bound.value
                switch mode {
                case .handshake: handler.startClose(context: context, code: code, reason: reason)
                case .abort(let cause): handler.abort(context: context, code: code, reason: reason, cause: cause)
                }
            }
        }
        if let first = machine.firstKeepaliveTick { scheduleKeepalive(context: context, after: first) }
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        performAfterHandled(machine.receive(unwrapInboundIn(data), now: .now()), context: context)
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Frame-level errors from NIO's WebSocketFrameDecoder.
        performAfterHandled(machine.decoderFailed(error as? NIOWebSocketError), context: context)
    }

    /// Performs `action`, except that a failure caused by what the peer sent
    /// waits until the application has handled the messages received before
    /// it (their replies go out first, then the close frame; at most
    /// ``failureGrace``). Nothing more is read meanwhile.
    private func performAfterHandled(_ action: WebSocketStateMachine.Action, context: ChannelHandlerContext) {
        guard case .sendClose(let code, let reason, thenCloseTCP: true) = action else {
            return perform(action, context: context)
        }
        guard heldClose == nil else { return }
        heldClose = (code, reason)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let release: @Sendable () -> Void = {
            bound.eventLoop.execute {
                let (handler, context) = bound.value
                handler.releaseHeldClose(context: context)
            }
        }
        if socket.inbound.whenIdle(release) { return releaseHeldClose(context: context) }
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        closeTimer = context.eventLoop.scheduleTask(in: Self.failureGrace.timeAmount) { release() }
    }

    private func releaseHeldClose(context: ChannelHandlerContext) {
        guard let (code, reason) = heldClose else { return }
        heldClose = nil
        closeTimer?.cancel()
        closeTimer = nil
        perform(.sendClose(code, reason: reason, thenCloseTCP: true), context: context)
    }

    package func channelWritabilityChanged(context: ChannelHandlerContext) {
        let writable = context.channel.isWritable
        socket.assumeIsolated { $0.writabilityChanged(isWritable: writable) }
        context.fireChannelWritabilityChanged()
    }

    package func channelInactive(context: ChannelHandlerContext) {
        keepaliveTimer?.cancel()
        closeTimer?.cancel()
        heldClose = nil
        machine.closed()
        let code = machine.closeCode ?? .abnormalClosure
        let cause = machine.closeCause ?? .connectionLost
        socket.counters.logger.debug("connection closed", metadata: [
            "connection": "\(socket.id)", "code": "\(code)", "cause": "\(cause.rawValue)"])
        socket.assumeIsolated { $0.didClose(code: code, cause: cause) }
        onClose(socket, code)
        context.fireChannelInactive()
    }

    private func perform(_ action: WebSocketStateMachine.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break
        case .deliver(let message):
            socket.countInbound(message.kind)
            if socket.inbound.append(message) {
                context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
            }
        case .inflate(let kind, let compressed):
            // On the loop, at once: a loop's shared decompressor serves one message at a time.
            let result = socket.compression?.inflate(compressed, limit: maxMessageSize, allocator: context.channel.allocator)
                ?? .failure(.unavailable)
            perform(machine.inflated(result, kind: kind), context: context)
        case .pong(let payload):
            // Through the connection's write path, so pongs for a client that pings and never
            // reads count against its outbound budget like any other frame.
            let frame = WebSocketFrameEncoding.frame(opcode: WebSocketFrameEncoding.opcodePong, payload: payload,
                                                     allocator: context.channel.allocator)
            socket.assumeIsolated { $0.write(frame) }
        case .sendClose(let code, let reason, let thenCloseTCP):
            countDrop()
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

    /// A close that polices the client (rates, keepalive, slow reader) is a drop, counted once.
    private func countDrop() {
        if let reason = machine.closeCause?.dropReason { socket.counters.drop(reason) }
        if let limit = machine.closeLimit { socket.counters.hit(limit) }
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
        closeTimer = context.eventLoop.scheduleTask(in: closeTimeout.timeAmount) {
            bound.value.close(promise: nil)
        }
    }

    /// Fails the connection at once: the close frame is queued best-effort and
    /// TCP is closed without waiting.
    private func abort(context: ChannelHandlerContext, code: WebSocketCloseCode, reason: String, cause: WebSocketCloseCause) {
        guard machine.state != .closed else { return }
        _ = machine.fail(code, reason, cause: cause)
        countDrop()
        let frame = WebSocketFrameEncoding.closeFrame(code: code, reason: reason, allocator: context.channel.allocator)
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        context.close(promise: nil)
    }

    // MARK: Keepalive

    private func scheduleKeepalive(context: ChannelHandlerContext, after delay: Duration) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        keepaliveTimer = context.eventLoop.scheduleTask(in: delay.timeAmount) {
            let (handler, context) = bound.value
            handler.keepaliveTick(context: context)
        }
    }

    private func keepaliveTick(context: ChannelHandlerContext) {
        switch machine.keepaliveTick() {
        case .ping(let next):
            let ping = WebSocketFrameEncoding.frame(opcode: WebSocketFrameEncoding.opcodePing, payload: ByteBuffer(),
                                                    allocator: context.channel.allocator)
            context.writeAndFlush(wrapOutboundOut(ping), promise: nil)
            scheduleKeepalive(context: context, after: next)
        case .wait(let next):
            scheduleKeepalive(context: context, after: next)
        case .fail(let action):
            perform(action, context: context)
        case .stop:
            break
        }
    }
}
