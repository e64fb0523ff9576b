import NIOCore

/// The frames of one fan-out, encoded once per kind of receiver: plain, per
/// subprotocol wrapping, per permessage-deflate parameter set. A broadcast to
/// 10,000 compressed connections deflates once; only connections that keep a
/// compression context of their own deflate for themselves (counted in
/// ``perConnectionDeflates``). Used on one event loop.
struct SharedFrames {
    private let messages: [WebSocketMessage]
    private let plain: ByteBuffer
    /// The messages are already wrapped for the receivers' subprotocol.
    private let framed: Bool
    private var variants: [Variant: ByteBuffer] = [:]
    /// Deflates done for connections with a context of their own.
    private(set) var perConnectionDeflates = 0

    private struct Variant: Hashable {
        var subprotocol: String?
        var windowBits: Int?
    }

    /// `plain` is `messages` encoded without wrapping or compression.
    init(_ messages: [WebSocketMessage], plain: ByteBuffer, framed: Bool = false) {
        self.messages = messages
        self.plain = plain
        self.framed = framed
    }

    /// The bytes to write to `socket`.
    mutating func bytes(for socket: WebSocket) -> ByteBuffer {
        let framing = framed ? nil : socket.framing
        guard framing != nil || socket.compression != nil else { return plain }
        if let compression = socket.compression, compression.shareKey == nil {
            perConnectionDeflates += 1
            return Self.encode(messages, framing: framing, compression: compression)
        }
        let variant = Variant(subprotocol: framing?.subprotocol, windowBits: socket.compression?.shareKey)
        if let bytes = variants[variant] { return bytes }
        let bytes = Self.encode(messages, framing: framing, compression: socket.compression)
        variants[variant] = bytes
        return bytes
    }

    /// `messages` wrapped by `framing` and compressed by `compression`, where given.
    static func encode(_ messages: [WebSocketMessage], framing: OutboundFraming?,
                       compression: ConnectionCompression?) -> ByteBuffer {
        let wrapped = framing.map { messages.map($0.frame) } ?? messages
        guard let compression else { return WebSocketFrameEncoding.burst(wrapped) }
        return WebSocketFrameEncoding.burst(wrapped, compression: compression)
    }
}
