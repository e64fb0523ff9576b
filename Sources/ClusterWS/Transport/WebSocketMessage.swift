public import NIOCore

/// A whole WebSocket message: every fragment joined, unmasked, and (for text)
/// checked to be valid UTF-8.
public struct WebSocketMessage: Sendable, Hashable {
    /// Text or binary.
    public enum Kind: UInt8, Sendable, Hashable {
        /// Opcode 0x1: UTF-8 text.
        case text = 1
        /// Opcode 0x2: binary data.
        case binary = 2
    }

    /// Whether the message was sent as text or binary.
    public var kind: Kind
    /// The payload bytes.
    public var data: ByteBuffer

    /// Creates a message.
    public init(kind: Kind, data: ByteBuffer) {
        self.kind = kind
        self.data = data
    }

    /// A text message.
    public static func text(_ string: String) -> WebSocketMessage {
        WebSocketMessage(kind: .text, data: ByteBuffer(string: string))
    }

    /// A binary message.
    public static func binary(_ bytes: ByteBuffer) -> WebSocketMessage {
        WebSocketMessage(kind: .binary, data: bytes)
    }

    /// The payload as a string (text messages are valid UTF-8 by construction).
    public var text: String { String(buffer: data) }
}
