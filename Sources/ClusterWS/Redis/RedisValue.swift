package import NIOCore

/// One RESP2 reply from Redis, as parsed by hiredis's reader.
///
/// Bulk strings keep their bytes in a `ByteBuffer`, so values are binary-safe
/// (NUL bytes and non-UTF-8 payloads round-trip unchanged).
package enum RedisValue: Sendable, Hashable {
    /// A status reply such as `OK` or `PONG`.
    case simpleString(String)
    /// An error reply. ``RedisConnection`` turns it into ``RedisError/reply(_:)``;
    /// it appears as a value only inside arrays (for example `EXEC` results).
    case error(String)
    /// An integer reply.
    case integer(Int64)
    /// A bulk string reply, binary-safe.
    case bulkString(ByteBuffer)
    /// A nil bulk string or nil array.
    case null
    /// A multi-bulk reply.
    case array([RedisValue])
}

extension RedisValue {
    /// The value as text: status replies, and bulk strings decoded as UTF-8.
    package var string: String? {
        switch self {
        case .simpleString(let text): return text
        case .bulkString(let buffer): return String(buffer: buffer)
        case .integer(let value): return String(value)
        default: return nil
        }
    }

    /// The value as an integer: integer replies, and bulk strings holding a number.
    package var int: Int? {
        switch self {
        case .integer(let value): return Int(value)
        case .bulkString(let buffer): return Int(String(buffer: buffer))
        default: return nil
        }
    }

    /// The raw bytes of a bulk string.
    package var buffer: ByteBuffer? {
        if case .bulkString(let buffer) = self { return buffer }
        return nil
    }

    /// The elements of an array reply.
    package var array: [RedisValue]? {
        if case .array(let values) = self { return values }
        return nil
    }

    /// `true` for a nil reply.
    package var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}
