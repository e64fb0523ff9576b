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
    func start(_ session: ProtocolSession, _ stream: HistoryStream) async {
        guard keepsHistory(stream) else { return }
        session.beginRecovery(of: stream)
        let requested = session.requested[stream]
        let outcome: HistoryReader.Outcome
        do {
            if let requested {
                outcome = try await reader.recover(stream, after: requested)
            } else {
                outcome = .recovered([], try await reader.current(stream))
            }
        } catch {
            outcome = .failed(.unavailable, StreamPosition(offset: 0, epoch: ""))
        }
        session.finishRecovery(of: stream, outcome, fresh: requested == nil)
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
