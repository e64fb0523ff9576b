#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOPosix

/// Lets a long job on an event loop step aside for the loop's I/O and carry
/// on right after, without sleeping.
///
/// NIO runs queued tasks until none is left before it polls for I/O again, so
/// a job that re-queues itself never lets a socket read through. Here the job
/// writes a byte into a pipe the loop watches and returns: the loop's next
/// poll returns at once with the pipe (and whatever else is ready: a Redis
/// reply, a client's frame), and reading the byte resumes the job. It costs a
/// `write` and a `read` (microseconds), where a timer would sleep at least the
/// kernel's timer slack (50 µs) whenever nothing else is ready. Until the pipe
/// is registered (and if it cannot be made) a 20 µs timer stands in.
///
/// Only touched on its event loop.
final class LoopWakeup: @unchecked Sendable {
    private let eventLoop: any EventLoop
    private var channel: (any Channel)?
    private var starting = false
    private var pending: (() -> Void)?
    private static let byte = ByteBuffer(integer: UInt8(1))

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Runs `next` on this loop once it has polled for I/O.
    func afterIO(_ next: @escaping () -> Void) {
        pending = next
        if let channel, channel.isActive {
            channel.writeAndFlush(Self.byte, promise: nil)
            return
        }
        // A loop shutting down cancels the timer: go on anyway, so the job finishes.
        eventLoop.scheduleTask(in: .microseconds(20)) { self.fire() }.futureResult.whenFailure { _ in self.fire() }
        start()
    }

    private func fire() {
        guard let next = pending else { return }
        pending = nil
        next()
    }

    private func start() {
        guard !starting else { return }
        starting = true
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { return }  // no descriptor left: the timer keeps standing in
        NIOPipeBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Reader(self)) }
            }
            .takingOwnershipOfDescriptors(input: ends[0], output: ends[1])
            .whenComplete { result in
                switch result {
                case .success(let channel): self.channel = channel
                case .failure:
                    close(ends[0])
                    close(ends[1])
                }
            }
    }

    private final class Reader: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        private let wakeup: LoopWakeup
        init(_ wakeup: LoopWakeup) { self.wakeup = wakeup }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { wakeup.fire() }

        func channelInactive(context: ChannelHandlerContext) {
            wakeup.channel = nil
            wakeup.fire()  // the loop is closing: let the waiting job finish
        }
    }
}
