import NIOCore
import Synchronization

/// A connection that speaks `clusterws.v1`: where it is in each of its
/// streams, and the recoveries in progress.
///
/// Per stream, a connection is either **recovering** — its history is being
/// read; live messages that arrive meanwhile are held (up to
/// `history.maxRecoveryBufferBytes`) — or **live**: messages go out at once,
/// and one at or below the last offset sent (a replayed message arriving
/// live too) is dropped. So after a recovery the client sees every message
/// once, in offset order, with no gap between history and live.
final class ProtocolSession: Sendable {
    let socket: WebSocket
    /// What the client said it last saw, per stream (from the upgrade request).
    let requested: [HistoryStream: StreamPosition]
    private let server: WebSocketServer
    private let maxHeldBytes: Int

    private enum Phase {
        case recovering(held: [(StreamPosition, WebSocketMessage)], bytes: Int)
        case live(StreamPosition)
    }

    private let streams = Mutex<[HistoryStream: Phase]>([:])

    init(socket: WebSocket, requested: [HistoryStream: StreamPosition], server: WebSocketServer, maxHeldBytes: Int) {
        self.socket = socket
        self.requested = requested
        self.server = server
        self.maxHeldBytes = maxHeldBytes
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
        enum Action { case send, drop, overflow }
        let action = streams.withLock { streams -> Action in
            switch streams[stream] {
            case .recovering(var held, let bytes):
                let size = message.data.readableBytes
                guard bytes + size <= maxHeldBytes else { return .overflow }
                held.append((position, message))
                streams[stream] = .recovering(held: held, bytes: bytes + size)
                return .drop
            case .live(let last):
                if last.epoch == position.epoch, position.offset <= last.offset { return .drop }
                streams[stream] = .live(position)
                return .send
            case nil:
                // Not bound to this stream (yet): the binding's recovery will cover it.
                streams[stream] = .recovering(held: [(position, message)], bytes: message.data.readableBytes)
                return .drop
            }
        }
        switch action {
        case .send: server.send(ClusterProtocol.message(message, stream: stream, at: position), to: [socket], framed: true)
        case .drop: break
        case .overflow:
            socket.counters.hit(.recoveryBuffer)
            Task { await socket.close(code: .tryAgainLater, reason: "recovery buffer full") }
        }
    }

    /// Ends a recovery and goes live after `last`: sends `lead` (the outcome
    /// frame, unless the replay already told it), then what arrived live
    /// meanwhile after `last`. With `fresh` (a client that sent no position
    /// for the stream), `lead` is the `position` frame, moved back to just
    /// before the first held message: what arrived since the subscription is
    /// the client's to have.
    func goLive(_ stream: HistoryStream, after last: StreamPosition, lead: WebSocketMessage?, fresh: Bool = false) {
        var last = last
        var frames: [WebSocketMessage] = []
        // Under the lock, so a live message cannot slip in between.
        streams.withLock { streams in
            let held: [(StreamPosition, WebSocketMessage)]
            if case .recovering(let pending, _) = streams[stream] { held = pending } else { held = [] }
            if fresh, let first = held.first, first.0.epoch == last.epoch, first.0.offset <= last.offset {
                last = StreamPosition(offset: first.0.offset - 1, epoch: last.epoch)
            }
            if fresh { frames.append(ClusterProtocol.position(stream, last)) } else if let lead { frames.append(lead) }
            for (position, message) in held where position.epoch != last.epoch || position.offset > last.offset {
                frames.append(ClusterProtocol.message(message, stream: stream, at: position))
                last = position
            }
            streams[stream] = .live(last)
            for frame in frames { server.send(frame, to: [socket], framed: true) }
        }
    }

    /// Forgets `stream` (the connection left the room or was bound to another uid).
    func end(_ stream: HistoryStream) {
        _ = streams.withLock { $0.removeValue(forKey: stream) }
    }
}
