internal import CHiredis
import NIOCore

/// Builds replies straight from hiredis's reader callbacks
/// (`redisReplyObjectFunctions`), instead of letting hiredis allocate a
/// `redisReply` per element and copying those into Swift values afterwards.
///
/// hiredis still does all the parsing; it hands each element to these
/// callbacks as it completes. A `message`/`smessage` push on a subscriber
/// connection becomes a ``RedisPubSubMessage`` directly (its channel and
/// payload, no intermediate array or buffers): that is every message a node
/// receives from other nodes, so it is the hot path of a relay.
///
/// Everything is bounded by what hiredis has buffered (the decoder's
/// `maxReplyBytes`): an array's declared length reserves at most
/// ``maxReservedElements`` up front, and a length hiredis would not accept is
/// an error (the callback returns `nil`, hiredis reports it, the connection is
/// closed).
final class ReplyBuilder {
    /// What one completed reply became.
    enum Output {
        case value(RedisValue)
        case push(RedisPubSubMessage)
    }

    private struct Frame {
        var elements: [RedisValue] = []
        var expected: Int
        /// A root `message`/`smessage` push being read into `channel`/`payload`.
        var isPush = false
        var channel: String?
        var payload: ByteBuffer?
        var seen = 0
    }

    /// The most array slots reserved before their elements arrive.
    static let maxReservedElements = 1_024

    private var stack: [Frame] = []
    private let allocator: ByteBufferAllocator
    /// Whether `message`/`smessage` pushes become ``Output/push(_:)``.
    private let decodesPushes: Bool
    /// The reply completed by the last `redisReaderGetReply`.
    private(set) var output: Output?

    init(allocator: ByteBufferAllocator, decodesPushes: Bool) {
        self.allocator = allocator
        self.decodesPushes = decodesPushes
    }

    /// Takes the completed reply.
    func take() -> Output? {
        defer { output = nil }
        return output
    }

    /// Drops a partly built reply (hiredis frees its reply on an error).
    func reset() {
        stack.removeAll(keepingCapacity: true)
        output = nil
    }

    fileprivate func string(_ task: UnsafePointer<redisReadTask>, _ bytes: UnsafeRawBufferPointer) -> Bool {
        let type = task.pointee.type
        // A direct child of a root array of three: is the array a message push (its first
        // element says so), and if it is, this is its channel or its payload.
        if decodesPushes, task.pointee.parent != nil, stack.count == 1,
           stack[0].isPush || (stack[0].seen == 0 && stack[0].expected == 3 && type == REDIS_REPLY_STRING
                               && Self.isMessageKind(bytes)) {
            guard type == REDIS_REPLY_STRING else { return false }
            stack[0].isPush = true
            switch stack[0].seen {
            case 0: break
            case 1: stack[0].channel = String(decoding: bytes, as: UTF8.self)
            default: stack[0].payload = buffer(bytes)
            }
            stack[0].seen += 1
            completeFrames()
            return true
        }
        switch type {
        case REDIS_REPLY_STATUS: add(.simpleString(String(decoding: bytes, as: UTF8.self)))
        case REDIS_REPLY_ERROR: add(.error(String(decoding: bytes, as: UTF8.self)))
        default: add(.bulkString(buffer(bytes)))
        }
        return true
    }

    fileprivate func array(_ task: UnsafePointer<redisReadTask>, _ count: Int32) -> Bool {
        guard count >= 0 else { return false }
        if count == 0 {
            add(.array([]))
            return true
        }
        if let top = stack.last, top.isPush { return false }  // a push's parts are never arrays
        stack.append(Frame(expected: Int(count)))  // elements reserved with the first one (a push never needs them)
        return true
    }

    fileprivate func integer(_ value: Int64) -> Bool {
        if let top = stack.last, top.isPush { return false }
        add(.integer(value))
        return true
    }

    fileprivate func null() -> Bool {
        if let top = stack.last, top.isPush { return false }
        add(.null)
        return true
    }

    private func buffer(_ bytes: UnsafeRawBufferPointer) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        return buffer
    }

    private static func isMessageKind(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.elementsEqual("message".utf8) || bytes.elementsEqual("smessage".utf8)
    }

    private func add(_ value: RedisValue) {
        guard !stack.isEmpty else {
            output = .value(value)
            return
        }
        let top = stack.count - 1
        if stack[top].elements.isEmpty {
            stack[top].elements.reserveCapacity(min(stack[top].expected, Self.maxReservedElements))
        }
        stack[top].elements.append(value)
        stack[top].seen += 1
        completeFrames()
    }

    /// Closes every frame that has all its elements.
    private func completeFrames() {
        while let top = stack.last, top.seen == top.expected {
            stack.removeLast()
            let value: RedisValue
            if top.isPush {
                if stack.isEmpty, let channel = top.channel, let payload = top.payload {
                    output = .push(RedisPubSubMessage(channel: channel, payload: payload))
                    return
                }
                value = .null  // cannot happen: a push frame is always a root of three strings
            } else {
                value = .array(top.elements)
            }
            guard !stack.isEmpty else {
                output = .value(value)
                return
            }
            stack[stack.count - 1].elements.append(value)
            stack[stack.count - 1].seen += 1
        }
    }
}

// MARK: - hiredis callbacks

/// Every callback returns this (any non-NULL pointer: hiredis only checks for NULL).
private var replyToken: UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: 0x1) }

private func builder(of task: UnsafePointer<redisReadTask>?) -> ReplyBuilder? {
    guard let privdata = task?.pointee.privdata else { return nil }
    return Unmanaged<ReplyBuilder>.fromOpaque(privdata).takeUnretainedValue()
}

/// The reader functions that feed a ``ReplyBuilder`` (set as the reader's privdata).
nonisolated(unsafe) let replyBuilderFunctions: UnsafeMutablePointer<redisReplyObjectFunctions> = {
    let functions = UnsafeMutablePointer<redisReplyObjectFunctions>.allocate(capacity: 1)
    functions.initialize(to: redisReplyObjectFunctions(
        createString: { task, bytes, length in
            guard let builder = builder(of: task), let task else { return nil }
            let raw = UnsafeRawBufferPointer(start: bytes.map(UnsafeRawPointer.init), count: bytes == nil ? 0 : length)
            return builder.string(task, raw) ? replyToken : nil
        },
        createArray: { task, count in
            guard let builder = builder(of: task), let task else { return nil }
            return builder.array(task, count) ? replyToken : nil
        },
        createInteger: { task, value in
            guard let builder = builder(of: task) else { return nil }
            return builder.integer(Int64(value)) ? replyToken : nil
        },
        createNil: { task in
            guard let builder = builder(of: task) else { return nil }
            return builder.null() ? replyToken : nil
        },
        freeObject: { _ in
            // Called with a partly built reply when hiredis gives up on it (a protocol
            // error, or the reader freed mid-reply): the decoder resets the builder then.
        }
    ))
    return functions
}()
