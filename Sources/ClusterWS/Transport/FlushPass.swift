import NIOCore
import Synchronization

/// Flushes one event loop's connections after a broadcast, a slice at a time.
///
/// A broadcast's frames are written to every connection of the loop at once
/// (that only appends to each channel's outbound queue, in order); the
/// flushes, one `writev` per connection, are what cost. They run in slices of
/// ``sliceTime`` (100 µs): between two slices the loop polls for I/O (see
/// ``LoopWakeup``), so a Redis reply (an awaited `sendAll`'s PUBLISH, a
/// `send`'s script) or an inbound frame waits one slice, not the whole fan-out.
/// Broadcasts written while a pass runs are flushed by the pass after it, so
/// they share one `writev` per connection: awaited broadcasts coalesce the
/// way back-to-back ones do.
///
/// Only touched on its event loop (hence `@unchecked Sendable`: the closures
/// that resume it are scheduled on that loop).
final class FlushPass: @unchecked Sendable {
    /// How long one slice of flushes may run before the loop handles its I/O.
    static let sliceTime = TimeAmount.microseconds(100)

    private let wakeup: LoopWakeup
    private var sockets: [WebSocket] = []
    private var index = 0
    private var running = false
    /// Whether a pass is flushing now (it yields between slices).
    var isRunning: Bool { running }
    /// Payload bytes and waiting callers of the broadcasts this pass flushes.
    private var bytes = 0
    private var promises: [EventLoopPromise<Void>] = []
    /// Broadcasts written since the running pass started (flushed by the next).
    private var nextBytes = 0
    private var nextPromises: [EventLoopPromise<Void>] = []
    private var again = false

    init(eventLoop: any EventLoop) {
        wakeup = LoopWakeup(eventLoop: eventLoop)
    }

    /// A broadcast of `bytes` was written to every connection of `share`;
    /// `promises` are succeeded once every connection was flushed after it.
    func written(bytes: Int, promises: [EventLoopPromise<Void>], share: ConnectionTable.LoopConnections) {
        nextBytes += bytes
        nextPromises += promises
        if running {
            again = true
            return
        }
        start(share)
    }

    private func start(_ share: ConnectionTable.LoopConnections) {
        running = true
        again = false
        sockets = Array(share.sockets.values)
        index = 0
        bytes = nextBytes
        promises = nextPromises
        nextBytes = 0
        nextPromises = []
        resume(share)
    }

    private func resume(_ share: ConnectionTable.LoopConnections) {
        let start = NIODeadline.now()
        while index < sockets.count {
            sockets[index].channel.flush()
            index += 1
            if index & 7 == 0, index < sockets.count, NIODeadline.now() - start > Self.sliceTime {
                wakeup.afterIO { self.resume(share) }
                return
            }
        }
        finish(share)
    }

    private func finish(_ share: ConnectionTable.LoopConnections) {
        sockets = []
        let (done, waiting) = (bytes, promises)
        bytes = 0
        promises = []
        running = false
        share.outbox.withLock { $0.unflushed -= done }
        for promise in waiting { promise.succeed() }
        if again { start(share) }
    }
}
