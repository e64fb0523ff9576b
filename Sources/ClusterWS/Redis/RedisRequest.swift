package import NIOCore
import Synchronization

/// One or more commands on their way to Redis, with what their replies complete.
package struct RedisRequest: Sendable {
    /// Who is waiting for the replies.
    enum Completion: Sendable {
        /// One promise for the command's (last) reply; an error reply fails it.
        case one(EventLoopPromise<RedisValue>)
        /// One promise for all `replyCount` replies of a pipelined batch, in
        /// order; error replies stay in the array as ``RedisValue/error(_:)``.
        case many(EventLoopPromise<[RedisValue]>)
        /// A post: nobody waits for the reply. Its bytes go back to the
        /// connection's ledger when it is answered (or fails); `onFailure`
        /// hears of an error reply, a timeout or a lost connection. No promise,
        /// no callback registration: a post costs no allocation of its own here.
        case post(PostLedger, bytes: Int, onFailure: @Sendable (RedisError) -> Void)
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

    init(post command: RedisCommand, ledger: PostLedger, onFailure: @escaping @Sendable (RedisError) -> Void,
         deadline: NIODeadline) {
        self.bytes = command.bytes
        self.replyCount = command.replyCount
        self.completion = .post(ledger, bytes: command.bytes.readableBytes, onFailure: onFailure)
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

extension RedisRequest.Completion {
    func fail(_ error: RedisError) {
        switch self {
        case .one(let promise): promise.fail(error)
        case .many(let promise): promise.fail(error)
        case .post(let ledger, let bytes, let onFailure):
            ledger.release(bytes)
            onFailure(error)
        }
    }
}

extension RedisRequest {
    func fail(_ error: RedisError) { completion.fail(error) }
}

/// Bytes of posts written to one connection and not answered yet (bounded by
/// ``RedisConfiguration/maxPostBytesInFlight``).
package final class PostLedger: Sendable {
    private let inFlight = Atomic<Int>(0)
    /// Callers waiting for the bytes in flight to drop to their mark.
    private let waiters = Mutex<[(mark: Int, continuation: CheckedContinuation<Void, Never>)]>([])
    private let hasWaiters = Atomic<Bool>(false)

    package init() {}

    /// Bytes in flight now.
    package var bytes: Int { inFlight.load(ordering: .relaxed) }

    /// Returns once at most `mark` bytes are in flight (at once if so now).
    /// Answers, errors, timeouts and a dropped link all give bytes back, so
    /// the wait ends within the command timeout.
    func waitUntil(atMost mark: Int) async {
        guard inFlight.load(ordering: .sequentiallyConsistent) > mark else { return }
        await withCheckedContinuation { continuation in
            let ready = waiters.withLock { waiters -> Bool in
                hasWaiters.store(true, ordering: .sequentiallyConsistent)
                guard inFlight.load(ordering: .sequentiallyConsistent) > mark else { return true }
                waiters.append((mark, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// Counts `bytes` in, unless that would pass `limit`; `false` then.
    func take(_ bytes: Int, limit: Int) -> Bool {
        var current = inFlight.load(ordering: .relaxed)
        while current + bytes <= limit {
            let (exchanged, original) = inFlight.compareExchange(expected: current, desired: current + bytes,
                                                                 ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// Gives `bytes` back (answered, failed or timed out); wakes the waiters
    /// whose mark it reached.
    func release(_ bytes: Int) {
        let now = inFlight.subtract(bytes, ordering: .sequentiallyConsistent).newValue
        guard hasWaiters.load(ordering: .sequentiallyConsistent) else { return }
        let ready = waiters.withLock { waiters -> [CheckedContinuation<Void, Never>] in
            var ready: [CheckedContinuation<Void, Never>] = []
            waiters.removeAll { waiter in
                guard now <= waiter.mark else { return false }
                ready.append(waiter.continuation)
                return true
            }
            if waiters.isEmpty { hasWaiters.store(false, ordering: .sequentiallyConsistent) }
            return ready
        }
        for continuation in ready { continuation.resume() }
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
