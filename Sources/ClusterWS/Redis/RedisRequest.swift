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
