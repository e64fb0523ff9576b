import NIOCore
import Synchronization

/// A Swift `TaskExecutor` that runs jobs on one NIO event loop.
///
/// A connection's `onOpen` handler runs with its connection's event loop as
/// executor preference: reading its messages, calling the `WebSocket` actor
/// (which lives on that loop) and writing replies then happen on the thread
/// that does the connection's I/O, instead of bouncing between Swift's
/// cooperative pool and the loop for every message. Handlers must not block
/// (as on the cooperative pool): a blocked handler would also stall the I/O of
/// the loop's other connections.
final class EventLoopTaskExecutor: TaskExecutor, @unchecked Sendable {
    let eventLoop: any EventLoop

    private init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }

    private static let executors = Mutex<[ObjectIdentifier: EventLoopTaskExecutor]>([:])

    /// The one executor of `eventLoop` (created on first use, kept for the process's life).
    static func of(_ eventLoop: any EventLoop) -> EventLoopTaskExecutor {
        executors.withLock { executors in
            if let executor = executors[ObjectIdentifier(eventLoop)] { return executor }
            let executor = EventLoopTaskExecutor(eventLoop)
            executors[ObjectIdentifier(eventLoop)] = executor
            return executor
        }
    }
}
