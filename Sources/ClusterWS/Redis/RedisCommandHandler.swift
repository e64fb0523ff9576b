package import NIOCore

/// One or more commands on their way to Redis, with what their replies complete.
package struct RedisRequest: Sendable {
    /// Who is waiting for the replies.
    enum Completion: Sendable {
        /// One promise for the command's (last) reply; an error reply fails it.
        case one(EventLoopPromise<RedisValue>)
        /// One promise for all `replyCount` replies of a pipelined batch, in
        /// order; error replies stay in the array as ``RedisValue/error(_:)``.
        case many(EventLoopPromise<[RedisValue]>)
    }

    var bytes: ByteBuffer
    var replyCount: Int
    var completion: Completion
    var deadline: NIODeadline

    init(command: RedisCommand, promise: EventLoopPromise<RedisValue>, deadline: NIODeadline) {
        self.bytes = command.bytes
        self.replyCount = command.replyCount
        self.completion = .one(promise)
        self.deadline = deadline
    }

    init(batch commands: [RedisCommand], promise: EventLoopPromise<[RedisValue]>, deadline: NIODeadline) {
        var bytes = ByteBuffer()
        bytes.reserveCapacity(commands.reduce(0) { $0 + $1.bytes.readableBytes })
        var replies = 0
        for command in commands {
            bytes.writeImmutableBuffer(command.bytes)
            replies += command.replyCount
        }
        self.bytes = bytes
        self.replyCount = replies
        self.completion = .many(promise)
        self.deadline = deadline
    }
}

extension RedisRequest {
    func fail(_ error: RedisError) {
        switch completion {
        case .one(let promise): promise.fail(error)
        case .many(let promise): promise.fail(error)
        }
    }
}

extension Channel {
    /// Writes a request (no flush), on the channel's event loop. A closed
    /// channel fails it at once: once a channel is inactive its handlers may
    /// be gone, and a request written past them would never be answered.
    func submit(_ request: RedisRequest) {
        guard eventLoop.inEventLoop else {
            return eventLoop.execute { self.submit(request) }
        }
        guard isActive else { return request.fail(.connectionLost) }
        write(request, promise: nil)
    }
}

/// Matches replies to commands in FIFO order, so any number of commands can
/// be in flight on one connection (pipelining).
///
/// - Every pending command fails with ``RedisError/connectionLost`` when the
///   channel goes inactive; a command written after that fails at once. None
///   hangs.
/// - A command whose reply has not come by its deadline fails with
///   ``RedisError/timeout``; its slot stays in the queue so the late reply is
///   matched and dropped, and later replies still meet the right commands.
/// - On a subscriber connection (`pushSink` set), `message`/`pmessage` pushes
///   go to the sink instead of the queue.
package final class RedisCommandHandler: ChannelDuplexHandler {
    package typealias InboundIn = RedisValue
    package typealias OutboundIn = RedisRequest
    package typealias OutboundOut = ByteBuffer

    private struct Pending {
        var completion: RedisRequest.Completion?  // nil once timed out
        var remainingReplies: Int
        var collected: [RedisValue] = []
        var deadline: NIODeadline

        func fail(_ error: RedisError) {
            switch completion {
            case .one(let promise): promise.fail(error)
            case .many(let promise): promise.fail(error)
            case nil: break
            }
        }
    }

    private var pending = CircularBuffer<Pending>(initialCapacity: 64)
    private var closedError: RedisError?
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    private let pushSink: (@Sendable (RedisPubSubMessage) -> Void)?

    package init(pushSink: (@Sendable (RedisPubSubMessage) -> Void)? = nil) {
        self.pushSink = pushSink
    }

    package func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        let entry = Pending(completion: request.completion, remainingReplies: request.replyCount,
                            deadline: request.deadline)
        if let closedError {
            entry.fail(closedError)
            promise?.fail(closedError)
            return
        }
        if request.replyCount == 0 {
            // Answered by pushes only (SUNSUBSCRIBE on a sharded subscriber): done once written.
            switch request.completion {
            case .one(let reply): reply.succeed(.null)
            case .many(let replies): replies.succeed([])
            }
            context.write(wrapOutboundOut(request.bytes), promise: promise)
            return
        }
        pending.append(entry)
        armTimer(for: request.deadline, context: context)
        context.write(wrapOutboundOut(request.bytes), promise: promise)
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        if let pushSink, let message = RedisPubSubMessage(push: value) {
            pushSink(message)
            return
        }
        guard var head = pending.first else {
            context.fireErrorCaught(RedisError.protocolError("reply with no command waiting for it"))
            context.close(promise: nil)
            return
        }
        head.remainingReplies -= 1
        if case .many = head.completion {
            if head.collected.isEmpty { head.collected.reserveCapacity(head.remainingReplies + 1) }
            head.collected.append(value)
        }
        if head.remainingReplies > 0 {
            pending[pending.startIndex] = head
            return
        }
        pending.removeFirst()
        switch head.completion {
        case .one(let promise):
            if case .error(let message) = value {
                promise.fail(RedisError.reply(message))
            } else {
                promise.succeed(value)
            }
        case .many(let promise):
            promise.succeed(head.collected)
        case nil:
            break  // timed out earlier: the late reply is dropped
        }
    }

    package func channelInactive(context: ChannelHandlerContext) {
        failAll(closedError ?? .connectionLost)
        context.fireChannelInactive()
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(error as? RedisError ?? .connectionLost)
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        failAll(.connectionLost)
    }

    private func failAll(_ error: RedisError) {
        if closedError == nil { closedError = error }
        timer?.cancel()
        timer = nil
        timerDeadline = nil
        while let entry = pending.popFirst() {
            entry.fail(error)
        }
    }

    // MARK: Timeouts: one timer, armed for the earliest deadline.

    private func armTimer(for deadline: NIODeadline, context: ChannelHandlerContext) {
        if let timerDeadline, timerDeadline <= deadline { return }
        timer?.cancel()
        timerDeadline = deadline
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = bound.value
            handler.expire(context: context)
        }
    }

    private func expire(context: ChannelHandlerContext) {
        timer = nil
        timerDeadline = nil
        let now = NIODeadline.now()
        var next: NIODeadline?
        for index in pending.indices where pending[index].completion != nil {
            if pending[index].deadline <= now {
                pending[index].fail(.timeout)
                pending[index].completion = nil
            } else if pending[index].deadline < (next ?? .distantFuture) {
                next = pending[index].deadline
            }
        }
        if let next { armTimer(for: next, context: context) }
    }
}

/// A message delivered to a subscriber: the channel it was published on and
/// its payload, byte for byte.
package struct RedisPubSubMessage: Sendable {
    /// The channel the message was published to.
    package var channel: String
    /// The matching pattern, for messages received through `PSUBSCRIBE`.
    package var pattern: String?
    /// The published payload, binary-safe.
    package var payload: ByteBuffer

    /// Creates a message.
    package init(channel: String, pattern: String? = nil, payload: ByteBuffer) {
        self.channel = channel
        self.pattern = pattern
        self.payload = payload
    }

    /// What a push announces.
    package enum Kind: Sendable, Hashable {
        /// A published message (`message`, `pmessage`, `smessage`).
        case message
        /// Redis dropped a sharded subscription (`sunsubscribe`: the channel's
        /// slot moved, or the subscriber asked); `payload` is empty.
        case shardUnsubscribed
    }

    /// What this push announces; everything but `.message` is for the subscriber itself.
    package var kind: Kind = .message

    /// Recognises a RESP2 `message`, `pmessage`, `smessage` or `sunsubscribe`
    /// push; `nil` for anything else.
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
        } else if parts.count == 4, kind.readableBytesView.elementsEqual("pmessage".utf8),
                  let pattern = parts[1].string, let channel = parts[2].string,
                  case .bulkString(let payload) = parts[3] {
            self.init(channel: channel, pattern: pattern, payload: payload)
        } else {
            return nil
        }
    }
}
