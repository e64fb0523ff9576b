package import NIOCore
package import NIOWebSocket

/// The protocol side of one server connection, as a plain value: frames in,
/// actions out. No I/O happens here, so every RFC 6455 rule is testable
/// without a socket (the handler performs the actions).
package struct WebSocketStateMachine {
    package enum State: Equatable {
        /// Messages flow both ways.
        case open
        /// We sent a close frame and wait for the peer's.
        case closeSent
        /// Done: nothing more is read or written.
        case closed
    }

    /// What the handler must do after a frame.
    package enum Action: Equatable {
        case none
        /// Hand a whole message to the application.
        case deliver(WebSocketMessage)
        /// Answer a ping with a pong carrying the same payload.
        case pong(ByteBuffer)
        /// The peer is alive (a pong arrived).
        case pongReceived
        /// Send a close frame with this code; close TCP after it if `thenCloseTCP`.
        case sendClose(WebSocketCloseCode, reason: String, thenCloseTCP: Bool)
        /// The close handshake is complete: close TCP.
        case closeTCP
    }

    package private(set) var state: State = .open
    private let maxMessageSize: Int
    private var fragments: ByteBuffer?
    private var fragmentKind: WebSocketMessage.Kind?
    private var utf8 = UTF8Validator()
    /// The code the peer closed with (or that we failed the connection with).
    package private(set) var closeCode: WebSocketCloseCode?

    package init(maxMessageSize: Int) {
        self.maxMessageSize = maxMessageSize
    }

    package mutating func receive(_ frame: WebSocketFrame) -> Action {
        guard state != .closed else { return .none }
        guard let maskKey = frame.maskKey else { return fail(.protocolError, "unmasked client frame") }
        guard !frame.rsv1, !frame.rsv2, !frame.rsv3 else { return fail(.protocolError, "reserved bits set") }
        switch frame.opcode {
        case .ping:
            guard frame.fin else { return fail(.protocolError, "fragmented control frame") }
            return state == .open ? .pong(unmask(frame.data, maskKey)) : .none
        case .pong:
            return .pongReceived
        case .connectionClose:
            guard frame.fin else { return fail(.protocolError, "fragmented control frame") }
            return receiveClose(unmask(frame.data, maskKey))
        case .text, .binary:
            guard state == .open else { return .none }
            guard fragmentKind == nil else { return fail(.protocolError, "new message before the last one ended") }
            let kind: WebSocketMessage.Kind = frame.opcode == .text ? .text : .binary
            return receiveData(kind: kind, frame: frame, maskKey: maskKey, first: true)
        case .continuation:
            guard state == .open else { return .none }
            guard let kind = fragmentKind else { return fail(.protocolError, "continuation without a message") }
            return receiveData(kind: kind, frame: frame, maskKey: maskKey, first: false)
        default:
            return fail(.protocolError, "reserved opcode")
        }
    }

    private mutating func receiveData(
        kind: WebSocketMessage.Kind, frame: WebSocketFrame, maskKey: WebSocketMaskingKey, first: Bool
    ) -> Action {
        let soFar = fragments?.readableBytes ?? 0
        guard soFar + frame.length <= maxMessageSize else { return fail(.messageTooBig, "message too big") }
        let data = unmask(frame.data, maskKey)
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
        closeCode = code
        switch state {
        case .open:
            state = .closed
            // Echo the peer's code (1000 when it sent none), then close TCP: the server closes first (§7.1.1).
            let reply = code == .noStatusReceived ? WebSocketCloseCode.normalClosure : code
            return .sendClose(reply, reason: "", thenCloseTCP: true)
        case .closeSent:
            state = .closed
            return .closeTCP
        case .closed:
            return .none
        }
    }

    /// The application (or the server) starts the close handshake. Returns
    /// `false` if a close frame was already sent.
    mutating func startClose(_ code: WebSocketCloseCode) -> Bool {
        guard state == .open else { return false }
        state = .closeSent
        closeCode = code
        return true
    }

    /// Fail the connection (§7.1.7): send a close frame with `code`, then close TCP.
    package mutating func fail(_ code: WebSocketCloseCode, _ reason: String) -> Action {
        guard state != .closed else { return .none }
        let alreadySent = state == .closeSent
        state = .closed
        closeCode = code
        return alreadySent ? .closeTCP : .sendClose(code, reason: reason, thenCloseTCP: true)
    }

    /// The TCP connection is gone.
    mutating func closed() {
        if closeCode == nil { closeCode = .abnormalClosure }
        state = .closed
    }

    private func unmask(_ data: ByteBuffer, _ key: WebSocketMaskingKey) -> ByteBuffer {
        var data = data
        data.webSocketUnmask(key)
        return data
    }
}
