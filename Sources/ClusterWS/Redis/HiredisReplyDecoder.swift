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
    private let builder: ReplyBuilder
    private let maxReplyBytes: Int
    private let onReplyTooLarge: (@Sendable () -> Void)?
    private let pushSink: (@Sendable (RedisPubSubMessage) -> Void)?
    /// Bytes fed since the last complete reply.
    private var pendingBytes = 0
    private var failed = false

    /// `nil` if hiredis cannot allocate a reader (out of memory).
    /// - Parameter pushSink: on a subscriber connection, receives every
    ///   `message`/`smessage` push directly (built from the reader's callbacks,
    ///   never as a ``RedisValue``); other replies go down the pipeline.
    package init?(maxReplyBytes: Int = 256 << 20, onReplyTooLarge: (@Sendable () -> Void)? = nil,
                  pushSink: (@Sendable (RedisPubSubMessage) -> Void)? = nil,
                  allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        guard let reader = redisReaderCreateWithFunctions(replyBuilderFunctions) else { return nil }
        self.reader = reader
        self.builder = ReplyBuilder(allocator: allocator, decodesPushes: pushSink != nil)
        reader.pointee.privdata = Unmanaged.passUnretained(builder).toOpaque()
        self.maxReplyBytes = maxReplyBytes
        self.onReplyTooLarge = onReplyTooLarge
        self.pushSink = pushSink
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
            guard object != nil, let output = builder.take() else { break }
            pendingBytes = 0
            switch output {
            case .push(let message):
                if let pushSink { pushSink(message) }
            case .value(let value):
                context.fireChannelRead(wrapInboundOut(value))
            }
        }
        // What is left in hiredis's buffer belongs to a reply not complete yet.
        if pendingBytes > maxReplyBytes {
            onReplyTooLarge?()
            fail(context: context, "a reply grew past \(maxReplyBytes) bytes before it was complete")
        }
    }

    private func fail(context: ChannelHandlerContext, _ why: String? = nil) {
        failed = true
        builder.reset()
        let parserMessage = withUnsafeBytes(of: &reader.pointee.errstr) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        let message = why ?? parserMessage
        context.fireErrorCaught(RedisError.protocolError(message.isEmpty ? "unparseable reply" : message))
        context.close(promise: nil)
    }
}
