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
        return ProtocolSession(socket: socket, requested: ClusterProtocol.positions(in: socket.request), server: server,
                               maxHeldBytes: history.maxRecoveryBufferBytes)
    }

    /// Recovers `stream` for `session`; call once the node is subscribed to the stream's channel.
    ///
    /// The replay is paced: pages of ``HistoryReader/pageSize`` messages,
    /// written straight to the socket, each after the previous one left the
    /// socket's buffer — memory stays at one page whatever the history
    /// holds, and a client that cannot keep up is closed as a slow consumer.
    func start(_ session: ProtocolSession, _ stream: HistoryStream) async {
        guard keepsHistory(stream) else { return }
        session.beginRecovery(of: stream)
        do {
            guard let requested = session.requested[stream] else {
                return session.goLive(stream, after: try await reader.current(stream), lead: nil, fresh: true)
            }
            switch try await reader.check(stream, after: requested) {
            case .failed(let reason, let now):
                session.goLive(stream, after: now, lead: ClusterProtocol.recovered(stream, replayed: 0, reason: reason, at: now))
            case .replay(let first, let now):
                let count = Int(now.offset - requested.offset)
                await session.socket.sendFramed([ClusterProtocol.recovered(stream, replayed: count, reason: nil, at: now)])
                var next = first
                while next <= now.offset {
                    guard let page = try await reader.page(stream, from: next, to: now.offset) else {
                        // Trimmed while it was being replayed: the client reconnects from where it got to.
                        await session.socket.close(code: .tryAgainLater, reason: "history changed during recovery")
                        return
                    }
                    await session.socket.waitUntilWritable()
                    if await session.socket.closeCode != nil { return }  // gone (or closed as a slow consumer)
                    await session.socket.sendFramed(page.map { offset, message in
                        ClusterProtocol.message(message, stream: stream, at: StreamPosition(offset: offset, epoch: now.epoch))
                    })
                    next += UInt64(page.count)
                }
                session.goLive(stream, after: now, lead: nil)
            }
        } catch {
            let unknown = StreamPosition(offset: 0, epoch: "")
            session.goLive(stream, after: unknown, lead: ClusterProtocol.recovered(stream, replayed: 0, reason: .unavailable, at: unknown))
        }
    }

    /// Accepts the client protocol on an upgrade that offers it: the answer
    /// names it (`Sec-WebSocket-Protocol`), and the connection is marked.
    func negotiate(_ decision: WebSocketUpgradeDecision, for request: WebSocketRequest) -> WebSocketUpgradeDecision {
        guard history.isEnabled, case .accept(var attributes, var headers) = decision.outcome else { return decision }
        let offered = request.headers[canonicalForm: "Sec-WebSocket-Protocol"].map { String($0).trimmingSpaces }
        guard offered.contains(where: { $0 == ClusterProtocol.subprotocol[...] }) else { return decision }
        attributes["protocol"] = ClusterProtocol.subprotocol
        headers.replaceOrAdd(name: "Sec-WebSocket-Protocol", value: ClusterProtocol.subprotocol)
        return .accept(attributes: attributes, headers: headers)
    }

    /// Wraps every message to a client-protocol connection that has no position.
    static let framing = OutboundFraming(subprotocol: ClusterProtocol.subprotocol) { ClusterProtocol.message($0) }
}
