import NIOHTTP1

/// Brings a client-protocol connection up to date on a stream it was just
/// bound to (its user, a room it joined): after the subscription is in
/// place, read the stream's history from the position the client sent (or
/// just the current position for a client that sent none), hand the outcome
/// to the session, and go live.
struct HistoryRecovery: Sendable {
    let reader: HistoryReader
    let server: WebSocketServer

    var history: ClusterConfiguration.History { reader.history }

    /// Whether messages to `stream` keep history.
    func keepsHistory(_ stream: HistoryStream) -> Bool {
        switch stream {
        case .user: history.users
        case .room: history.rooms
        }
    }

    /// A session for `socket` if it negotiated the client protocol.
    func session(for socket: WebSocket) -> ProtocolSession? {
        guard socket.attributes["protocol"] == ClusterProtocol.subprotocol else { return nil }
        let baseline = socket.attributes[Self.baselineAttribute].flatMap(ClusterProtocol.parsePosition)
        return ProtocolSession(socket: socket, requested: ClusterProtocol.positions(in: socket.request),
                               baselines: baseline.map { [$0.0: $0.1] } ?? [:], server: server, reader: reader)
    }

    /// The connection attribute that carries the baseline read at the handshake.
    static let baselineAttribute = "clusterws-baseline"

    /// Whether `request` offers the client protocol (and this node speaks it).
    func offersProtocol(_ request: WebSocketRequest) -> Bool {
        guard history.isEnabled else { return false }
        let offered = request.headers[canonicalForm: "Sec-WebSocket-Protocol"].map { String($0).trimmingSpaces }
        return offered.contains(where: { $0 == ClusterProtocol.subprotocol[...] })
    }

    /// The ``baseline(_:_:)`` of a handshake's user stream, read before the
    /// handshake is admitted — admission already makes the connection
    /// visible to senders (it is counted in the user's set).
    func baseline(for request: WebSocketRequest, uid: String) async -> StreamPosition? {
        guard offersProtocol(request), keepsHistory(.user(uid)),
              ClusterProtocol.positions(in: request)[.user(uid)] == nil else { return nil }
        return try? await reader.current(.user(uid))
    }

    /// Where a connection that sent no position for `stream` starts: the
    /// stream's position read *before* the connection is bound to it (call
    /// before the subscription and the relations). Everything published
    /// after it then reaches the client — from history, or live — even a
    /// message whose live copy reaches this node after the position was read.
    /// `nil` when there is nothing to read (no session, a position was sent,
    /// no history for the stream) or Redis did not answer.
    func baseline(_ session: ProtocolSession?, _ stream: HistoryStream) async -> StreamPosition? {
        guard let session, keepsHistory(stream), session.requested[stream] == nil else { return nil }
        if let early = session.baselines[stream] { return early }
        return try? await reader.current(stream)
    }

    /// Recovers `stream` for `session`; call once the node is subscribed to
    /// the stream's channel, with the ``baseline(_:_:)`` read before that.
    ///
    /// The replay is paced: pages of ``HistoryReader/pageSize`` messages,
    /// written straight to the socket, each after the previous one left the
    /// socket's buffer — memory stays at one page whatever the history
    /// holds, and a client that cannot keep up is closed as a slow consumer.
    func start(_ session: ProtocolSession, _ stream: HistoryStream, baseline: StreamPosition?) async {
        guard keepsHistory(stream) else { return }
        session.beginRecovery(of: stream)
        do {
            guard let requested = session.requested[stream] else {
                // A fresh client: its position is the baseline, and what was sent since is replayed.
                if let baseline, case .replay(let first, let now) = try await reader.check(stream, after: baseline) {
                    await session.socket.sendFramed([ClusterProtocol.position(stream, baseline)])
                    guard try await replay(session, stream, from: first, to: now) else { return }
                    return session.goLive(stream, after: now, lead: nil)
                }
                return session.goLive(stream, after: try await reader.current(stream), lead: nil, fresh: true)
            }
            switch try await reader.check(stream, after: requested) {
            case .failed(let reason, let now):
                session.goLive(stream, after: now, lead: ClusterProtocol.recovered(stream, replayed: 0, reason: reason, at: now))
            case .replay(let first, let now):
                let count = Int(now.offset - requested.offset)
                await session.socket.sendFramed([ClusterProtocol.recovered(stream, replayed: count, reason: nil, at: now)])
                guard try await replay(session, stream, from: first, to: now) else { return }
                session.goLive(stream, after: now, lead: nil)
            }
        } catch {
            let unknown = StreamPosition(offset: 0, epoch: "")
            session.goLive(stream, after: unknown, lead: ClusterProtocol.recovered(stream, replayed: 0, reason: .unavailable, at: unknown))
        }
    }

    /// After this node's subscriber reconnected: reads the position of every
    /// stream a client-protocol connection is live on (once per stream) and
    /// tells the sessions, which repair what they missed from history.
    func catchUp(_ sessions: [ProtocolSession]) async {
        var members: [HistoryStream: [ProtocolSession]] = [:]
        for session in sessions {
            for stream in session.liveStreams() { members[stream, default: []].append(session) }
        }
        for (stream, sessions) in members {
            guard let now = try? await reader.current(stream) else { continue }
            for session in sessions { session.learn(now, of: stream) }
        }
    }

    /// Writes `stream`'s messages `first…now.offset` to the session's socket,
    /// a page at a time; `false` when the socket closed (or was closed
    /// because the history was trimmed meanwhile: the client resumes from
    /// where it got to).
    private func replay(_ session: ProtocolSession, _ stream: HistoryStream, from first: UInt64, to now: StreamPosition)
        async throws -> Bool {
        var next = first
        while next <= now.offset {
            guard let page = try await reader.page(stream, from: next, to: now.offset) else {
                await session.socket.close(code: .tryAgainLater, reason: "history changed during recovery")
                return false
            }
            await session.socket.waitUntilWritable()
            if await session.socket.closeCode != nil { return false }  // gone (or closed as a slow consumer)
            await session.socket.sendFramed(page.map { offset, message in
                ClusterProtocol.message(message, stream: stream, at: StreamPosition(offset: offset, epoch: now.epoch))
            })
            next += UInt64(page.count)
        }
        return true
    }

    /// Accepts the client protocol on an upgrade that offers it: the answer
    /// names it (`Sec-WebSocket-Protocol`), and the connection is marked
    /// (with the `baseline` of its user's stream, read before admission).
    func negotiate(_ decision: WebSocketUpgradeDecision, for request: WebSocketRequest,
                   baseline: StreamPosition? = nil) -> WebSocketUpgradeDecision {
        guard offersProtocol(request), case .accept(var attributes, var headers) = decision.outcome else { return decision }
        attributes["protocol"] = ClusterProtocol.subprotocol
        if let baseline, let uid = attributes["uid"] {
            attributes[Self.baselineAttribute] = "\(baseline.offset).\(baseline.epoch).\(HistoryStream.user(uid))"
        }
        headers.replaceOrAdd(name: "Sec-WebSocket-Protocol", value: ClusterProtocol.subprotocol)
        return .accept(attributes: attributes, headers: headers)
    }

    /// Wraps every message to a client-protocol connection that has no position.
    static let framing = OutboundFraming(subprotocol: ClusterProtocol.subprotocol) { ClusterProtocol.message($0) }
}
