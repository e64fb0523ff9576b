import NIOCore
import Synchronization

/// The open connections of a server, kept per event loop so a fan-out can
/// hand each loop its own share in one hop.
final class ConnectionTable: Sendable {
    /// One loop's connections (only touched on that loop) and its queue of
    /// broadcasts waiting to be written (touched from any thread, under a lock).
    final class LoopConnections: @unchecked Sendable {
        let eventLoop: any EventLoop
        var sockets: [UInt64: WebSocket] = [:]
        /// What waits for this loop's next drain, in order: broadcasts (to every
        /// connection but `except`) and targeted messages (to `targets`).
        struct Entry {
            var message: WebSocketMessage
            var except: Set<UInt64>
            var targets: [WebSocket]?
            /// Already wrapped for the targets' subprotocol: written as it is.
            var framed = false
        }
        /// What waits for the next drain.
        struct Outbox {
            /// Entries queued since the last drain, in order.
            var messages: [Entry] = []
            /// Promises of `broadcastAndWait` callers over the pacing budget,
            /// succeeded once their broadcast was flushed to every connection.
            var written: [EventLoopPromise<Void>] = []
            /// Whether a drain is scheduled.
            var scheduled = false
            /// Payload bytes of `messages` (bounded by `fanOutQueueBytes`).
            var bytes = 0
            /// Payload bytes of broadcasts queued or written and not yet flushed
            /// to every connection (compared with `fanOutPacingBytes`).
            var unflushed = 0
        }
        let outbox = Mutex(Outbox())
        /// Flushes after broadcasts, a slice at a time (only touched on the loop).
        let flushPass: FlushPass
        /// permessage-deflate streams shared by the loop's connections without context takeover.
        let codecs: LoopCodecs
        init(eventLoop: any EventLoop, compressionLevel: Int32) {
            self.eventLoop = eventLoop
            flushPass = FlushPass(eventLoop: eventLoop)
            codecs = LoopCodecs(level: compressionLevel)
        }
    }

    let loops: [LoopConnections]
    private let total = Atomic<Int>(0)

    init(group: any EventLoopGroup, compressionLevel: Int32 = 6) {
        loops = group.makeIterator().map { LoopConnections(eventLoop: $0, compressionLevel: compressionLevel) }
    }

    var count: Int { total.load(ordering: .relaxed) }

    /// The share of `eventLoop` (must be one of the group's loops).
    func loop(of eventLoop: any EventLoop) -> LoopConnections {
        loops.first { $0.eventLoop === eventLoop } ?? loops[0]
    }

    /// Adds a connection (on its event loop).
    func insert(_ socket: WebSocket) {
        let share = loop(of: socket.eventLoop)
        share.eventLoop.preconditionInEventLoop()
        share.sockets[socket.id] = socket
        total.add(1, ordering: .relaxed)
    }

    /// Removes a connection (on its event loop).
    func remove(_ socket: WebSocket) {
        let share = loop(of: socket.eventLoop)
        share.eventLoop.preconditionInEventLoop()
        if share.sockets.removeValue(forKey: socket.id) != nil {
            total.subtract(1, ordering: .relaxed)
        }
    }

    /// Every open connection, collected from each loop.
    func all() async -> [WebSocket] {
        var sockets: [WebSocket] = []
        for share in loops {
            let part = try? await share.eventLoop.submit { Array(share.sockets.values) }.get()
            sockets += part ?? []
        }
        return sockets
    }
}
