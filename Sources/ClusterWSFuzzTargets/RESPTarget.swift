import ClusterWS
import NIOCore
import NIOEmbedded

extension FuzzTarget {
    /// Bytes from a Redis peer into hiredis's reader and the command handler
    /// of a subscriber connection; every value is also read as a pub/sub
    /// push, a stream reply and a redirect. Property: a push's channel is what
    /// the bytes said, nothing in the reader grows past its budget.
    static func resp(_ bytes: UnsafeRawBufferPointer) {
        let channel = EmbeddedChannel()
        // Tears the pipeline down even after a close (else channel, pipeline and loop keep each other alive).
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        guard let decoder = HiredisReplyDecoder(maxReplyBytes: 4_096) else { return }
        do {
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
            try channel.pipeline.syncOperations.addHandler(decoder)
            try channel.writeInbound(ByteBuffer(bytes: bytes))
        } catch {
            return  // a protocol error: the link is closed and re-opened
        }
        while let value = try? channel.readInbound(as: RedisValue.self) {
            _ = QueueEntry.parse(streamReply: value)
            _ = QueueEntry.parse(value)
            if let push = RedisPubSubMessage(push: value), push.kind == .message,
               case .array(let parts) = value, parts.count >= 3, parts[parts.count - 2].string != push.channel {
                finding("a push's channel changed in parsing")
            }
            if case .error(let text) = value, let redirect = Redirect(.reply(text)) {
                switch redirect {
                case .moved(let slot, _), .ask(let slot, _):
                    if !(0..<16_384).contains(slot) { finding("a redirect to slot \(slot)") }
                }
            }
            if let map = RedisClusterClient.slotMap(from: value, answeredBy: .init(host: "seed", port: 1)),
               map.slots.count != 16_384 {
                finding("a slot map of the wrong size")
            }
            _ = value.string
            _ = value.int
        }
    }
}
