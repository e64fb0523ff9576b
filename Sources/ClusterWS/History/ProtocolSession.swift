import Logging
import NIOCore
import Synchronization

/// A connection that speaks `clusterws.v1`: where it is in each of its
/// streams, and the recoveries in progress.
///
/// Per stream, a connection is either **recovering** — its history is being
/// read; live messages that arrive meanwhile are held (up to
/// `history.maxRecoveryBufferBytes`) — or **live** (a ``LiveStream``):
/// messages go out in offset order, each once. A gap in the offsets (a
/// message still on its way, or lost by pub/sub while the subscriber was
/// reconnecting) is given `history.gapRepairDelay` to fill by itself; then
/// the missing messages are read from history, or — when history no longer
/// has them — the client is told (`recovered: false`, `trimmed`) and goes
/// on. So the client sees every message once, in offset order, with no gap
/// it is not told about.
final class ProtocolSession: Sendable {
    let socket: WebSocket
    /// What the client said it last saw, per stream (from the upgrade request).
    let requested: [HistoryStream: StreamPosition]
    /// Where the client starts on a stream it sent no position for, when
    /// read before the connection became visible (its user, at the handshake).
    let baselines: [HistoryStream: StreamPosition]
    private let server: WebSocketServer
    private let reader: HistoryReader
    private let maxHeldBytes: Int

    private enum Phase {
        case recovering(held: [(StreamPosition, WebSocketMessage)], bytes: Int)
        /// `repairing`: a task is filling (or waiting to fill) the stream's gap.
        case live(LiveStream, repairing: Bool)
    }

    private let streams = Mutex<[HistoryStream: Phase]>([:])

    init(socket: WebSocket, requested: [HistoryStream: StreamPosition], baselines: [HistoryStream: StreamPosition] = [:],
         server: WebSocketServer, reader: HistoryReader) {
        self.socket = socket
        self.requested = requested
        self.baselines = baselines
        self.server = server
        self.reader = reader
        self.maxHeldBytes = reader.history.maxRecoveryBufferBytes
    }

    /// Starts holding `stream`'s live messages (before its history is read;
    /// messages that arrived since the subscription are already held).
    func beginRecovery(of stream: HistoryStream) {
        streams.withLock { streams in
            if streams[stream] == nil { streams[stream] = .recovering(held: [], bytes: 0) }
        }
    }

    /// A live message of `stream` at `position`.
    func deliver(_ message: WebSocketMessage, stream: HistoryStream, at position: StreamPosition) {
        enum Action { case none, repair, overflow }
        let action = streams.withLock { streams -> Action in
            switch streams[stream] {
            case .recovering(var held, let bytes):
                let size = message.data.readableBytes
                guard bytes + size <= maxHeldBytes else { return .overflow }
                held.append((position, message))
                streams[stream] = .recovering(held: held, bytes: bytes + size)
                return .none
            case .live(var live, let repairing):
                send(live.accept(message, at: position), of: stream)
                guard live.heldBytes <= maxHeldBytes else { return .overflow }
                let repair = !repairing && live.gap != nil
                streams[stream] = .live(live, repairing: repairing || repair)
                return repair ? .repair : .none
            case nil:
                // Not bound to this stream (yet): the binding's recovery will cover it.
                streams[stream] = .recovering(held: [(position, message)], bytes: message.data.readableBytes)
                return .none
            }
        }
        switch action {
        case .none: break
        case .repair: Task { await self.repairGap(of: stream) }
        case .overflow: overflowed()
        }
    }

    /// Ends a recovery and goes live after `last`: sends `lead` (the outcome
    /// frame, unless the replay already told it), then what arrived live
    /// meanwhile after `last`, in offset order. With `fresh` (a client that
    /// sent no position for the stream, whose baseline could not be read),
    /// `lead` is the `position` frame, moved back to just before the first
    /// held message: what arrived since the subscription is the client's to have.
    func goLive(_ stream: HistoryStream, after last: StreamPosition, lead: WebSocketMessage?, fresh: Bool = false) {
        var last = last
        // Under the lock, so a live message cannot slip in between.
        let repair = streams.withLock { streams -> Bool in
            let held: [(StreamPosition, WebSocketMessage)]
            if case .recovering(let pending, _) = streams[stream] { held = pending } else { held = [] }
            if fresh, let first = held.filter({ $0.0.epoch == last.epoch }).map(\.0.offset).min(), first <= last.offset {
                last = StreamPosition(offset: first - 1, epoch: last.epoch)
            }
            if fresh {
                server.send(ClusterProtocol.position(stream, last), to: [socket], framed: true)
            } else if let lead {
                server.send(lead, to: [socket], framed: true)
            }
            var live = LiveStream(after: last)
            for (position, message) in held { send(live.accept(message, at: position), of: stream) }
            streams[stream] = .live(live, repairing: live.gap != nil)
            return live.gap != nil
        }
        if repair { Task { await self.repairGap(of: stream) } }
    }

    /// The streams that are live (not recovering).
    func liveStreams() -> [HistoryStream] {
        streams.withLock { streams in
            streams.compactMap { stream, phase -> HistoryStream? in
                if case .live = phase { stream } else { nil }
            }
        }
    }

    /// `stream` is known to be at `position` (read after this node's
    /// subscriber reconnected: what was published while it was away never
    /// arrived). Anything past what the client has is a gap, repaired from
    /// history like any other — the client need not wait for the stream's
    /// next message to get it.
    func learn(_ position: StreamPosition, of stream: HistoryStream) {
        let repair = streams.withLock { streams -> Bool in
            guard case .live(var live, let repairing) = streams[stream] else { return false }
            live.learn(position)
            let repair = !repairing && live.gap != nil
            streams[stream] = .live(live, repairing: repairing || repair)
            return repair
        }
        if repair { Task { await self.repairGap(of: stream) } }
    }

    /// Forgets `stream` (the connection left the room or was bound to another uid).
    func end(_ stream: HistoryStream) {
        _ = streams.withLock { $0.removeValue(forKey: stream) }
    }

    /// Waits `history.gapRepairDelay` for `stream`'s gap to fill by itself,
    /// then reads what is still missing from history, a page at a time; what
    /// history no longer has is skipped, and the client told.
    private func repairGap(of stream: HistoryStream) async {
        try? await Task.sleep(for: reader.history.gapRepairDelay)
        while await socket.closeCode == nil {
            let missing = streams.withLock { streams -> (ClosedRange<UInt64>, String)? in
                guard case .live(let live, _) = streams[stream] else { return nil }  // ended meanwhile
                guard let gap = live.gap else {
                    streams[stream] = .live(live, repairing: false)
                    return nil
                }
                return (gap, live.last.epoch)
            }
            guard let (gap, epoch) = missing else { return }
            let page = try? await reader.page(stream, from: gap.lowerBound, to: gap.upperBound)
            streams.withLock { streams in
                guard case .live(var live, let repairing) = streams[stream], live.last.epoch == epoch else { return }
                if let page {
                    send(live.fill(page), of: stream)
                } else {
                    socket.counters.drop(.historyGap, count: gap.count, metadata: ["stream": "\(stream)"])
                    let skipped = StreamPosition(offset: gap.upperBound, epoch: epoch)
                    server.send(ClusterProtocol.recovered(stream, replayed: 0, reason: .trimmed, at: skipped), to: [socket], framed: true)
                    send(live.skipGap(), of: stream)
                }
                streams[stream] = .live(live, repairing: repairing)
            }
        }
    }

    /// Writes `frames` of `stream` (call under the lock: frames leave in the order they were decided).
    private func send(_ frames: LiveStream.Frames, of stream: HistoryStream) {
        for (position, message) in frames {
            server.send(ClusterProtocol.message(message, stream: stream, at: position), to: [socket], framed: true)
        }
    }

    /// More held than `history.maxRecoveryBufferBytes`: the client is closed and recovers on its next connection.
    private func overflowed() {
        socket.counters.hit(.recoveryBuffer)
        Task { await socket.close(code: .tryAgainLater, reason: "recovery buffer full") }
    }
}
