package import NIOCore

/// A message delivered to a subscriber: the channel it was published on and
/// its payload, byte for byte.
package struct RedisPubSubMessage: Sendable {
    /// The channel the message was published to.
    package var channel: String
    /// The published payload, binary-safe.
    package var payload: ByteBuffer

    /// Creates a message.
    package init(channel: String, payload: ByteBuffer) {
        self.channel = channel
        self.payload = payload
    }

    /// What a push announces.
    package enum Kind: Sendable, Hashable {
        /// A published message (`message`, `smessage`).
        case message
        /// Redis dropped a sharded subscription (`sunsubscribe`: the channel's
        /// slot moved, or the subscriber asked); `payload` is empty.
        case shardUnsubscribed
    }

    /// What this push announces; everything but `.message` is for the subscriber itself.
    package var kind: Kind = .message

    /// Recognises a RESP2 `message`, `smessage` or `sunsubscribe` push; `nil`
    /// for anything else (ClusterWS never pattern-subscribes).
    package init?(push value: RedisValue) {
        guard case .array(let parts) = value, parts.count >= 3, case .bulkString(let kind) = parts[0] else {
            return nil
        }
        if parts.count == 3, kind.readableBytesView.elementsEqual("message".utf8) || kind.readableBytesView.elementsEqual("smessage".utf8),
           let channel = parts[1].string, case .bulkString(let payload) = parts[2] {
            self.init(channel: channel, payload: payload)
        } else if parts.count == 3, kind.readableBytesView.elementsEqual("sunsubscribe".utf8), let channel = parts[1].string {
            self.init(channel: channel, payload: ByteBuffer())
            self.kind = .shardUnsubscribed
        } else {
            return nil
        }
    }
}
