package import NIOCore

/// One argument of a Redis command: text, raw bytes, or an integer.
package enum RedisArgument: Sendable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    case string(String)
    case bytes(ByteBuffer)
    case integer(Int)

    package init(stringLiteral value: String) { self = .string(value) }
    package init(integerLiteral value: Int) { self = .integer(value) }
}

/// A Redis command, encoded once as a RESP array of bulk strings.
///
/// The bytes are built when the command is made, so a command can be sent
/// (or re-sent after a reconnect) without encoding it again.
///
/// ```swift
/// let set = RedisCommand("SET", "greeting", .bytes(payload))
/// let publish = RedisCommand("PUBLISH", "news", "hello")
/// ```
package struct RedisCommand: Sendable {
    /// The encoded command, ready to write to the socket.
    package let bytes: ByteBuffer
    /// How many replies Redis sends for this command: one, except for
    /// `SUBSCRIBE`/`UNSUBSCRIBE`, which confirm once per channel.
    package let replyCount: Int
    /// The Redis Cluster hash slot of the command's key, or `nil` for a
    /// command without one (it may go to any node). See ``RedisClusterSlot``.
    package private(set) var slot: Int?

    private static let allocator = ByteBufferAllocator()

    /// Encodes `name` and `arguments` as a RESP array.
    package init(_ name: String, _ arguments: RedisArgument...) {
        self.init(name, arguments: arguments)
    }

    /// Encodes `name` and `arguments` as a RESP array; `replyCount` is the
    /// number of replies Redis answers it with.
    package init(_ name: String, arguments: [RedisArgument], replyCount: Int = 1) {
        var size = 16 + name.utf8.count
        for argument in arguments {
            switch argument {
            case .string(let text): size += text.utf8.count + 16
            case .bytes(let buffer): size += buffer.readableBytes + 16
            case .integer: size += 40
            }
        }
        var buffer = Self.allocator.buffer(capacity: size)
        buffer.writeRESPHeader(marker: UInt8(ascii: "*"), count: arguments.count + 1)
        buffer.writeRESPBulk(name)
        for argument in arguments {
            switch argument {
            case .string(let text): buffer.writeRESPBulk(text)
            case .bytes(let bytes): buffer.writeRESPBulk(bytes)
            case .integer(let value): buffer.writeRESPBulk(String(value))  // negative values too: "-1"
            }
        }
        self.bytes = buffer
        self.replyCount = replyCount
        self.slot = Self.routingKey(name, arguments).map { RedisClusterSlot.of($0) }
    }

    /// `PUBLISH`/`SPUBLISH` of an envelope on `channel`, the envelope written
    /// straight into the command's one buffer (it must have been
    /// ``Envelope/validate()``d).
    package init(publish verb: String, channel: String, envelope: Envelope) {
        let size = envelope.encodedSize
        var buffer = Self.allocator.buffer(capacity: 48 + verb.utf8.count + channel.utf8.count + size)
        buffer.writeRESPHeader(marker: UInt8(ascii: "*"), count: 3)
        buffer.writeRESPBulk(verb)
        buffer.writeRESPBulk(channel)
        buffer.writeRESPHeader(marker: UInt8(ascii: "$"), count: size)
        envelope.write(to: &buffer)
        buffer.writeInteger(UInt16(0x0D0A))  // CRLF
        self.bytes = buffer
        self.replyCount = 1
        self.slot = verb == "SPUBLISH" ? RedisClusterSlot.of(channel) : nil
    }

    /// The same command, sent to the master of `key`'s slot (for a keyless
    /// command that must reach a given node, such as `WAIT` after a write there).
    package func routed(withSlotOf key: String) -> RedisCommand {
        var command = self
        command.slot = RedisClusterSlot.of(key)
        return command
    }

    private static let keyless: Set<String> = [
        "PING", "INFO", "CLUSTER", "SCRIPT", "SUBSCRIBE", "UNSUBSCRIBE", "PSUBSCRIBE", "PUNSUBSCRIBE", "PUBLISH",
        "AUTH", "SELECT", "ASKING", "QUIT", "CLIENT", "ACL", "CONFIG", "FLUSHALL", "FLUSHDB", "SCAN", "KEYS",
        "DBSIZE", "TIME", "ECHO", "HELLO", "READONLY",
    ]

    /// The argument Redis Cluster routes `name` by: the first key (the channel for
    /// sharded pub/sub), or `nil`.
    private static func routingKey(_ name: String, _ arguments: [RedisArgument]) -> [UInt8]? {
        let verb = name.utf8.contains(where: { (97...122).contains($0) }) ? name.uppercased() : name
        if keyless.contains(verb) { return nil }
        switch verb {
        case "EVAL", "EVALSHA", "FCALL":
            guard arguments.count > 2, case .integer(let keys) = arguments[1], keys > 0 else { return nil }
            return bytes(arguments[2])
        case "XGROUP", "XINFO", "OBJECT", "MEMORY":  // subcommand first, then the key
            return arguments.count > 1 ? bytes(arguments[1]) : nil
        case "XREAD", "XREADGROUP":
            guard let streams = arguments.firstIndex(where: { if case .string(let word) = $0 { word.uppercased() == "STREAMS" } else { false } }),
                  streams + 1 < arguments.count else { return nil }
            return bytes(arguments[streams + 1])
        default:
            return arguments.first.map(bytes)
        }
    }

    private static func bytes(_ argument: RedisArgument) -> [UInt8] {
        switch argument {
        case .string(let text): Array(text.utf8)
        case .bytes(let buffer): Array(buffer.readableBytesView)
        case .integer(let value): Array(String(value).utf8)
        }
    }
}

extension ByteBuffer {
    /// Writes `<marker><count>\r\n` without going through `String`.
    mutating func writeRESPHeader(marker: UInt8, count: Int) {
        writeInteger(marker)
        writeDecimal(count)
        writeInteger(UInt16(0x0D0A))  // "\r\n", big-endian
    }

    /// Writes an integer in decimal ASCII (with a `-` when negative; `Int.min` included).
    mutating func writeDecimal(_ value: Int) {
        if value < 0 { writeInteger(UInt8(ascii: "-")) }
        var scratch: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: any Int's digits fit
        withUnsafeMutableBytes(of: &scratch) { digits in
            var index = digits.count
            var remaining = value.magnitude
            repeat {
                index -= 1
                digits[index] = UInt8(ascii: "0") &+ UInt8(remaining % 10)
                remaining /= 10
            } while remaining > 0
            writeBytes(UnsafeRawBufferPointer(rebasing: digits[index...]))
        }
    }

    mutating func writeRESPBulk(_ text: String) {
        writeRESPHeader(marker: UInt8(ascii: "$"), count: text.utf8.count)
        writeString(text)
        writeInteger(UInt16(0x0D0A))
    }

    mutating func writeRESPBulk(_ bytes: ByteBuffer) {
        writeRESPHeader(marker: UInt8(ascii: "$"), count: bytes.readableBytes)
        writeImmutableBuffer(bytes)
        writeInteger(UInt16(0x0D0A))
    }
}
