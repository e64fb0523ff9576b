internal import CHiredis
package import NIOCore

/// Turns bytes from a Redis socket into ``RedisValue``s with hiredis's reader.
///
/// hiredis is used only as a RESP parser (`redisReaderFeed` /
/// `redisReaderGetReply`); the socket belongs to SwiftNIO, so nothing here
/// blocks. A protocol error is fired down the pipeline as
/// ``RedisError/protocolError(_:)`` and the channel is closed: after a parse
/// error the reply stream cannot be trusted. So is a reply that grows past
/// `maxReplyBytes` before it completes: hiredis would buffer it without bound.
package final class HiredisReplyDecoder: ChannelInboundHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = RedisValue

    private let reader: UnsafeMutablePointer<redisReader>
    private let maxReplyBytes: Int
    private let onReplyTooLarge: (@Sendable () -> Void)?
    /// Bytes fed since the last complete reply.
    private var pendingBytes = 0
    private var failed = false

    /// `nil` if hiredis cannot allocate a reader (out of memory).
    package init?(maxReplyBytes: Int = 256 << 20, onReplyTooLarge: (@Sendable () -> Void)? = nil) {
        guard let reader = redisReaderCreate() else { return nil }
        self.reader = reader
        self.maxReplyBytes = maxReplyBytes
        self.onReplyTooLarge = onReplyTooLarge
    }

    deinit {
        redisReaderFree(reader)
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let buffer = unwrapInboundIn(data)
        let fed = buffer.withUnsafeReadableBytes { bytes in
            redisReaderFeed(reader, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        guard fed == REDIS_OK else { return fail(context: context) }
        pendingBytes += buffer.readableBytes
        while true {
            var object: UnsafeMutableRawPointer?
            guard redisReaderGetReply(reader, &object) == REDIS_OK else { return fail(context: context) }
            guard let object else { break }
            pendingBytes = 0
            let reply = object.assumingMemoryBound(to: redisReply.self)
            let value = RedisValue(reply: reply, allocator: context.channel.allocator)
            freeReplyObject(object)
            context.fireChannelRead(wrapInboundOut(value))
        }
        // What is left in hiredis's buffer belongs to a reply not complete yet.
        if pendingBytes > maxReplyBytes {
            onReplyTooLarge?()
            fail(context: context, "a reply grew past \(maxReplyBytes) bytes before it was complete")
        }
    }

    private func fail(context: ChannelHandlerContext, _ why: String? = nil) {
        failed = true
        let parserMessage = withUnsafeBytes(of: &reader.pointee.errstr) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        let message = why ?? parserMessage
        context.fireErrorCaught(RedisError.protocolError(message.isEmpty ? "unparseable reply" : message))
        context.close(promise: nil)
    }
}

extension RedisValue {
    /// Copies a hiredis reply tree into Swift values.
    init(reply: UnsafePointer<redisReply>, allocator: ByteBufferAllocator) {
        let node = reply.pointee
        switch node.type {
        case REDIS_REPLY_INTEGER:
            self = .integer(Int64(node.integer))
        case REDIS_REPLY_STRING:
            var buffer = allocator.buffer(capacity: node.len)
            if node.len > 0, let bytes = node.str {
                buffer.writeBytes(UnsafeRawBufferPointer(start: bytes, count: node.len))
            }
            self = .bulkString(buffer)
        case REDIS_REPLY_STATUS:
            self = .simpleString(Self.text(node))
        case REDIS_REPLY_ERROR:
            self = .error(Self.text(node))
        case REDIS_REPLY_ARRAY:
            var elements: [RedisValue] = []
            elements.reserveCapacity(node.elements)
            for index in 0..<node.elements {
                if let child = node.element[index] {
                    elements.append(RedisValue(reply: child, allocator: allocator))
                } else {
                    elements.append(.null)
                }
            }
            self = .array(elements)
        default:  // REDIS_REPLY_NIL
            self = .null
        }
    }

    private static func text(_ node: redisReply) -> String {
        guard node.len > 0, let bytes = node.str else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: bytes, count: node.len), as: UTF8.self)
    }
}
