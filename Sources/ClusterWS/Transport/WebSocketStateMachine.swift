package import NIOCore
package import NIOWebSocket

/// One server connection's protocol state as a plain value: frames and timer
/// ticks in, actions out. Everything the connection decides is here — RFC 6455
/// framing rules, the message and byte rate buckets, keepalive — with time
/// passed in, so every rule is testable without a socket or a clock (the
/// handler performs the actions and schedules the timers).
package struct WebSocketStateMachine {
    package enum State: Equatable {
        /// Messages flow both ways.
        case open
        /// We sent a close frame and wait for the peer's.
        case closeSent
        /// Done: nothing more is read or written.
        case closed
    }

    /// What the handler must do after an input.
    package enum Action: Equatable {
        case none
        /// Hand a whole message to the application.
        case deliver(WebSocketMessage)
        /// A whole permessage-deflate message (its compressed bytes): inflate
        /// it within `maxMessageSize` and pass the result to ``inflated(_:kind:now:)``.
        case inflate(WebSocketMessage.Kind, ByteBuffer)
        /// Answer a ping with a pong carrying the same payload.
        case pong(ByteBuffer)
        /// Send a close frame with this code; close TCP after it if `thenCloseTCP`.
        case sendClose(WebSocketCloseCode, reason: String, thenCloseTCP: Bool)
        /// The close handshake is complete: close TCP.
        case closeTCP
    }

    /// What a keepalive tick asks for.
    package enum KeepaliveAction: Equatable {
        /// Send a ping; tick again after `next`.
        case ping(next: Duration)
        /// The peer was heard from; tick again after `next`.
        case wait(next: Duration)
        /// No answer: fail the connection with this action.
        case fail(Action)
        /// The connection is closing or closed: no more ticks.
        case stop
    }

    /// The limits the machine enforces.
    package struct Limits: Sendable {
        var maxMessageSize: Int
        var maxMessagesPerSecond: Int?
        var maxBytesPerSecond: Int?
        var keepalive: (pingInterval: Duration, pongTimeout: Duration)?

        package init(maxMessageSize: Int, maxMessagesPerSecond: Int? = nil, maxBytesPerSecond: Int? = nil,
                     keepalive: (pingInterval: Duration, pongTimeout: Duration)? = nil) {
            self.maxMessageSize = maxMessageSize
            self.maxMessagesPerSecond = maxMessagesPerSecond
            self.maxBytesPerSecond = maxBytesPerSecond
            self.keepalive = keepalive
        }

        /// A server configuration's limits.
        package init(_ configuration: WebSocketServerConfiguration) {
            let keepalive: (Duration, Duration)? = if case .enabled(let interval, let timeout) = configuration.keepalive.mode {
                (interval, timeout)
            } else {
                nil
            }
            self.init(maxMessageSize: configuration.maxMessageSize, maxMessagesPerSecond: configuration.maxMessagesPerSecond,
                      maxBytesPerSecond: configuration.maxBytesPerSecond, keepalive: keepalive)
        }
    }

    package private(set) var state: State = .open
    /// The code the peer closed with (or that we failed the connection with).
    package private(set) var closeCode: WebSocketCloseCode?
    /// Why the connection closed (or is closing).
    package private(set) var closeCause: WebSocketCloseCause?
    /// The rejection path a failure took, where it is counted apart
    /// (deflate bombs, corrupt compressed data, reserved bits).
    package private(set) var closeLimit: LimitKind?
    private let limits: Limits
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    private let deflate: Bool
    private var fragmentsCompressed = false
    private var fragments: ByteBuffer?
    private var fragmentKind: WebSocketMessage.Kind?
    private var utf8 = UTF8Validator()
    private var messageBucket: TokenBucket?
    private var byteBucket: TokenBucket?
    private var awaitingPong = false
    private var heardFromPeer = false

    /// A machine for a connection opened at `now`.
    package init(limits: Limits, now: NIODeadline, deflate: Bool = false) {
        self.limits = limits
        self.deflate = deflate
        self.messageBucket = limits.maxMessagesPerSecond.map { TokenBucket(perSecond: $0, now: now) }
        self.byteBucket = limits.maxBytesPerSecond.map { TokenBucket(perSecond: $0, now: now) }
    }

    /// A machine with only a message size limit (framing rules alone).
    package init(maxMessageSize: Int, deflate: Bool = false) {
        self.init(limits: Limits(maxMessageSize: maxMessageSize), now: .now(), deflate: deflate)
    }

    /// When the first keepalive tick is due (`nil`: keepalive is off).
    package var firstKeepaliveTick: Duration? { limits.keepalive?.pingInterval }

    // MARK: Inputs

    /// A frame from the peer, at `now`.
    package mutating func receive(_ frame: WebSocketFrame, now: NIODeadline = .now()) -> Action {
        guard state != .closed else { return .none }
        heardFromPeer = true
        if state == .open, byteBucket?.take(frame.length, now: now) == false {
            return fail(.policyViolation, "byte rate limit", cause: .byteRateLimited)
        }
        guard let maskKey = frame.maskKey else { return fail(.protocolError, "unmasked client frame") }
        guard !frame.rsv2, !frame.rsv3 else { return fail(.protocolError, "reserved bits set", limit: .reservedBits) }
        // RSV1 is permessage-deflate's, on the first frame of a data message only (RFC 7692 §6).
        if frame.rsv1, !deflate || (frame.opcode != .text && frame.opcode != .binary) {
            return fail(.protocolError, deflate ? "RSV1 on a control or continuation frame" : "RSV1 without permessage-deflate",
                        limit: .reservedBits)
        }
        switch frame.opcode {
        case .ping:
            guard frame.fin else { return fail(.protocolError, "fragmented control frame") }
            guard state == .open else { return .none }
            guard withinMessageRate(now) else { return fail(.policyViolation, "rate limit", cause: .rateLimited) }
            return .pong(unmask(frame.data, maskKey))
        case .pong:
            guard state == .open, !withinMessageRate(now) else { return .none }  // unsolicited pongs count too
            return fail(.policyViolation, "rate limit", cause: .rateLimited)
        case .connectionClose:
            guard frame.fin else { return fail(.protocolError, "fragmented control frame") }
            return receiveClose(unmask(frame.data, maskKey))
        case .text, .binary:
            guard state == .open else { return .none }
            guard fragmentKind == nil else { return fail(.protocolError, "new message before the last one ended") }
            let kind: WebSocketMessage.Kind = frame.opcode == .text ? .text : .binary
            fragmentsCompressed = frame.rsv1
            return receiveData(kind: kind, frame: frame, maskKey: maskKey, first: true, now: now)
        case .continuation:
            guard state == .open else { return .none }
            guard let kind = fragmentKind else { return fail(.protocolError, "continuation without a message") }
            return receiveData(kind: kind, frame: frame, maskKey: maskKey, first: false, now: now)
        default:
            return fail(.protocolError, "reserved opcode")
        }
    }

    /// A frame-level error of NIO's frame decoder.
    package mutating func decoderFailed(_ error: NIOWebSocketError?) -> Action {
        switch error {
        case .invalidFrameLength?: fail(.messageTooBig, "frame too big")
        case .fragmentedControlFrame?, .multiByteControlFrameLength?: fail(.protocolError, "bad control frame")
        default: .closeTCP
        }
    }

    /// The keepalive timer fired. Every ping interval the server pings; if the
    /// peer sends nothing at all (no pong, no data) within the pong timeout,
    /// the connection is failed with 1008.
    package mutating func keepaliveTick() -> KeepaliveAction {
        guard state == .open, let (interval, timeout) = limits.keepalive else { return .stop }
        if awaitingPong {
            guard heardFromPeer else {
                return .fail(fail(.policyViolation, "keepalive timeout", cause: .keepaliveTimeout))
            }
            awaitingPong = false
            let rest = interval - timeout
            return .wait(next: rest > .zero ? rest : interval)
        }
        awaitingPong = true
        heardFromPeer = false
        return .ping(next: timeout)
    }

    /// The application (or the server) starts the close handshake. Returns
    /// `false` if a close frame was already sent.
    package mutating func startClose(_ code: WebSocketCloseCode) -> Bool {
        guard state == .open else { return false }
        state = .closeSent
        closeCode = code
        closeCause = .closedByServer
        return true
    }

    /// The inflated payload of the message an ``Action/inflate(_:_:)`` asked for.
    package mutating func inflated(_ result: Result<ByteBuffer, MessageInflater.Failure>, kind: WebSocketMessage.Kind) -> Action {
        guard state == .open else { return .none }
        switch result {
        case .failure(.tooBig):
            return fail(.messageTooBig, "message too big", limit: .inflatedSize)
        case .failure(.corrupt):
            return fail(.invalidPayload, "invalid compressed data", limit: .corruptCompression)
        case .failure(.unavailable):
            return fail(.internalError, "compression unavailable")
        case .success(let data):
            if kind == .text {
                guard data.withUnsafeReadableBytes({ UTF8Validator.isValid($0) }) else {
                    return fail(.invalidPayload, "invalid UTF-8")
                }
            }
            return .deliver(WebSocketMessage(kind: kind, data: data))
        }
    }

    /// Fail the connection (§7.1.7): send a close frame with `code`, then close TCP.
    package mutating func fail(_ code: WebSocketCloseCode, _ reason: String,
                               cause: WebSocketCloseCause? = nil, limit: LimitKind? = nil) -> Action {
        guard state != .closed else { return .none }
        let alreadySent = state == .closeSent
        state = .closed
        closeCode = code
        closeLimit = limit
        closeCause = cause ?? Self.cause(of: code)
        return alreadySent ? .closeTCP : .sendClose(code, reason: reason, thenCloseTCP: true)
    }

    /// The TCP connection is gone.
    package mutating func closed() {
        if closeCode == nil { closeCode = .abnormalClosure }
        if closeCause == nil { closeCause = .connectionLost }
        state = .closed
    }

    // MARK: Internals

    private mutating func withinMessageRate(_ now: NIODeadline) -> Bool {
        messageBucket?.take(1, now: now) ?? true
    }

    private static func cause(of code: WebSocketCloseCode) -> WebSocketCloseCause {
        switch code {
        case .protocolError: .protocolError
        case .invalidPayload: .invalidPayload
        case .messageTooBig: .messageTooBig
        default: .closedByServer
        }
    }

    private mutating func receiveData(
        kind: WebSocketMessage.Kind, frame: WebSocketFrame, maskKey: WebSocketMaskingKey, first: Bool, now: NIODeadline
    ) -> Action {
        let soFar = fragments?.readableBytes ?? 0
        guard soFar + frame.length <= limits.maxMessageSize else { return fail(.messageTooBig, "message too big") }
        let data = unmask(frame.data, maskKey)
        if fragmentsCompressed {
            return receiveCompressed(kind: kind, data: data, fin: frame.fin, now: now)
        }
        if kind == .text {
            let valid = data.withUnsafeReadableBytes { utf8.feed($0) }
            guard valid, !frame.fin || utf8.isComplete else { return fail(.invalidPayload, "invalid UTF-8") }
        }
        if frame.fin {
            let whole: ByteBuffer
            if var collected = fragments {
                var data = data
                collected.writeBuffer(&data)
                whole = collected
            } else {
                whole = data
            }
            fragments = nil
            fragmentKind = nil
            utf8 = UTF8Validator()
            guard withinMessageRate(now) else { return fail(.policyViolation, "rate limit", cause: .rateLimited) }
            return .deliver(WebSocketMessage(kind: kind, data: whole))
        }
        if first || fragments == nil {
            fragments = data
            fragmentKind = kind
        } else {
            var data = data
            fragments?.writeBuffer(&data)
        }
        return .none
    }

    /// A frame of a compressed message: its bytes are collected (within
    /// `maxMessageSize`, checked by the caller) and inflated whole at the end,
    /// where the UTF-8 of a text message is checked.
    private mutating func receiveCompressed(kind: WebSocketMessage.Kind, data: ByteBuffer, fin: Bool, now: NIODeadline) -> Action {
        var collected = data
        if var earlier = fragments.take() {  // taken, so appending does not copy it
            earlier.writeImmutableBuffer(data)
            collected = earlier
        }
        guard fin else {
            fragments = collected
            fragmentKind = kind
            return .none
        }
        fragments = nil
        fragmentKind = nil
        fragmentsCompressed = false
        guard withinMessageRate(now) else { return fail(.policyViolation, "rate limit", cause: .rateLimited) }
        return .inflate(kind, collected)
    }

    private mutating func receiveClose(_ payload: ByteBuffer) -> Action {
        var payload = payload
        var code = WebSocketCloseCode.noStatusReceived
        if payload.readableBytes == 1 {
            return fail(.protocolError, "close frame with a 1-byte payload")
        }
        if let raw = payload.readInteger(as: UInt16.self) {
            code = WebSocketCloseCode(rawValue: raw)
            guard code.isValidOnTheWire else { return fail(.protocolError, "invalid close code \(raw)") }
            let validReason = payload.withUnsafeReadableBytes { UTF8Validator.isValid($0) }
            guard validReason else { return fail(.invalidPayload, "close reason is not UTF-8") }
        }
        switch state {
        case .open:
            state = .closed
            closeCode = code
            closeCause = .peerClosed
            // Echo the peer's code (1000 when it sent none), then close TCP: the server closes first (§7.1.1).
            let reply = code == .noStatusReceived ? WebSocketCloseCode.normalClosure : code
            return .sendClose(reply, reason: "", thenCloseTCP: true)
        case .closeSent:
            state = .closed
            closeCode = code
            return .closeTCP
        case .closed:
            return .none
        }
    }

    private func unmask(_ data: ByteBuffer, _ key: WebSocketMaskingKey) -> ByteBuffer {
        var data = data
        data.webSocketUnmask(key)
        return data
    }
}
