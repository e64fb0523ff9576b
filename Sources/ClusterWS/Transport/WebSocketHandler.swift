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
    private let onClose: (WebSocket, WebSocketCloseCode) -> Void
    private var keepaliveTimer: Scheduled<Void>?
    private var closeTimer: Scheduled<Void>?

    package init(socket: WebSocket, configuration: WebSocketServerConfiguration,
                 onClose: @escaping (WebSocket, WebSocketCloseCode) -> Void) {
        self.socket = socket
        self.closeTimeout = configuration.closeTimeout
        self.onClose = onClose
        self.machine = WebSocketStateMachine(limits: .init(configuration), now: .now())
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
        perform(machine.receive(unwrapInboundIn(data), now: .now()), context: context)
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Frame-level errors from NIO's WebSocketFrameDecoder.
        perform(machine.decoderFailed(error as? NIOWebSocketError), context: context)
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
