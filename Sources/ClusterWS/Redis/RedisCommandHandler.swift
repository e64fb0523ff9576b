package import NIOCore

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
            completion?.fail(error)
        }
    }

    private var pending = CircularBuffer<Pending>(initialCapacity: 64)
    private var closedError: RedisError?
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    private let pushSink: (@Sendable (RedisPubSubMessage) -> Void)?
    /// Set while the handler is in a pipeline: lets ``submit(_:)`` write without going through `NIOAny`.
    private var context: ChannelHandlerContext?

    package init(pushSink: (@Sendable (RedisPubSubMessage) -> Void)? = nil) {
        self.pushSink = pushSink
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    package func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        enqueue(unwrapOutboundIn(data), context: context, promise: promise)
    }

    /// What writing `request` down the pipeline does, called directly on the
    /// channel's event loop (a request in a `NIOAny` is boxed: an allocation per
    /// command). `false` once the handler has left its pipeline: write it to the
    /// channel then (it fails there as the channel is gone).
    func submit(_ request: RedisRequest) -> Bool {
        guard let context else { return false }
        enqueue(request, context: context, promise: nil)
        return true
    }

    private func enqueue(_ request: RedisRequest, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
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
            case .post(let ledger, let bytes, _): ledger.release(bytes)
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
        case .post(let ledger, let bytes, let onFailure):
            ledger.release(bytes)
            if case .error(let message) = value { onFailure(.reply(message)) }
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
        self.context = nil
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
        let now = context.eventLoop.now  // the loop's clock: the real one, or a test's
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
