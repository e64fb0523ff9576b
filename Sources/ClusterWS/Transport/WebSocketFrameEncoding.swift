package import NIOCore

/// Server-to-client frames (RFC 6455 §5.2): never masked, so one encoded
/// frame is byte-for-byte valid for every connection and can be shared by a
/// fan-out.
package enum WebSocketFrameEncoding {
    static let opcodeClose: UInt8 = 0x8
    static let opcodePing: UInt8 = 0x9
    static let opcodePong: UInt8 = 0xA

    /// Header length for a payload of `length` bytes.
    static func headerLength(payload length: Int) -> Int {
        length < 126 ? 2 : (length <= 0xFFFF ? 4 : 10)
    }

    /// Writes a final (FIN) unmasked frame header; `compressed` sets RSV1 (permessage-deflate).
    static func writeHeader(opcode: UInt8, payloadLength length: Int, compressed: Bool = false, into buffer: inout ByteBuffer) {
        buffer.writeInteger(0x80 | (compressed ? 0x40 : 0) | opcode)
        if length < 126 {
            buffer.writeInteger(UInt8(length))
        } else if length <= 0xFFFF {
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(length))
        } else {
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(length))
        }
    }

    /// One complete frame (header and payload) in a single buffer.
    static func frame(opcode: UInt8, payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: headerLength(payload: payload.readableBytes) + payload.readableBytes)
        writeHeader(opcode: opcode, payloadLength: payload.readableBytes, into: &buffer)
        buffer.writeImmutableBuffer(payload)
        return buffer
    }

    /// A data frame for `message`.
    package static func frame(_ message: WebSocketMessage, allocator: ByteBufferAllocator) -> ByteBuffer {
        frame(opcode: message.kind.rawValue, payload: message.data, allocator: allocator)
    }

    /// A close frame: the code, then the reason (truncated to fit 125 bytes).
    static func closeFrame(code: WebSocketCloseCode, reason: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        var payload = allocator.buffer(capacity: 2 + reason.utf8.count)
        payload.writeInteger(code.rawValue)
        var reasonBytes = Array(reason.utf8.prefix(123))
        while !reasonBytes.isEmpty, !reasonBytes.withUnsafeBytes({ UTF8Validator.isValid($0) }) {
            reasonBytes.removeLast()  // never cut a code point in half
        }
        payload.writeBytes(reasonBytes)
        return frame(opcode: opcodeClose, payload: payload, allocator: allocator)
    }

    static let sharedAllocator = ByteBufferAllocator()

    /// All `messages` as consecutive frames in one buffer: what a fan-out
    /// writes to every connection of a loop (server frames are unmasked, so
    /// the bytes are the same for every client).
    package static func burst(_ messages: some Collection<WebSocketMessage>) -> ByteBuffer {
        if messages.count == 1, let only = messages.first { return frame(only, allocator: sharedAllocator) }
        let size = messages.reduce(0) { $0 + headerLength(payload: $1.data.readableBytes) + $1.data.readableBytes }
        var buffer = sharedAllocator.buffer(capacity: size)
        for message in messages {
            writeHeader(opcode: message.kind.rawValue, payloadLength: message.data.readableBytes, into: &buffer)
            buffer.writeImmutableBuffer(message.data)
        }
        return buffer
    }

    /// `messages` as consecutive frames for a connection that negotiated
    /// permessage-deflate: each payload of at least the minimum size
    /// compressed (RSV1 set), the others as they are.
    static func burst(_ messages: some Collection<WebSocketMessage>, compression: ConnectionCompression) -> ByteBuffer {
        var buffer = sharedAllocator.buffer(capacity: 0)
        for message in messages {
            if compression.compresses(message.data),
               let compressed = compression.deflate(message.data, allocator: sharedAllocator) {
                buffer.reserveCapacity(minimumWritableBytes: headerLength(payload: compressed.readableBytes) + compressed.readableBytes)
                writeHeader(opcode: message.kind.rawValue, payloadLength: compressed.readableBytes, compressed: true, into: &buffer)
                buffer.writeImmutableBuffer(compressed)
            } else {
                buffer.reserveCapacity(minimumWritableBytes: headerLength(payload: message.data.readableBytes) + message.data.readableBytes)
                writeHeader(opcode: message.kind.rawValue, payloadLength: message.data.readableBytes, into: &buffer)
                buffer.writeImmutableBuffer(message.data)
            }
        }
        return buffer
    }
}
