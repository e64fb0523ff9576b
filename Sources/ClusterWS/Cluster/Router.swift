import CoreMetrics
import Logging

/// Brings what other nodes sent to this node's connections: the messages of
/// every subscribed channel (pub/sub) and the entries of this node's stream
/// (queue driver) are envelopes; each is resolved against the local registry
/// and queued on each event loop's ordered queue (the transport's), so a
/// burst of broadcasts merges into one write per socket and nothing overtakes
/// anything. Garbage is dropped and counted; routing goes on.
struct Router: Sendable {
    let id: String
    let epoch: UInt64
    let registry: LocalRegistry
    let server: WebSocketServer
    let counters: NodeCounters
    let statistics: ClusterStatistics
    let metrics: ClusterMetrics
    /// How many recent message ids to remember to drop second copies (0: the
    /// subscriber never receives a message twice; nothing is remembered).
    var deduplicationWindow = 0
    /// Room presence events (on their own channels), when presence is on.
    var presenceHub: PresenceHub?

    /// Takes the subscriber's messages a burst at a time (one wake-up per
    /// burst) until the subscriber stops.
    func run(_ messages: PubSubMessages) async {
        var recent = deduplicationWindow > 0 ? RecentMessageIDs(capacity: deduplicationWindow) : nil
        while true {
            let batch = await messages.nextBatch()
            if batch.isEmpty { return }
            for message in batch {
                if let presenceHub, presenceHub.handle(channel: message.channel, payload: message.payload, counters: counters) {
                    continue
                }
                do {
                    let envelope = try Envelope(decoding: message.payload)
                    if let id = envelope.id, recent?.insert(id) == false {
                        statistics.countDuplicate()
                        continue
                    }
                    route(envelope)
                } catch {
                    counters.drop(.garbage, metadata: ["channel": "\(message.channel)", "error": "\(error)"])
                }
            }
        }
    }

    /// Delivers one envelope to the local connections it is for.
    func route(_ envelope: Envelope) {
        let message = WebSocketMessage(kind: envelope.kind, data: envelope.payload)
        // A message with its history position: every local connection of the stream gets it
        // from here (this node's too: the sender did not write them directly), client-protocol
        // connections with its position, in offset order.
        if let position = envelope.history {
            let stream: HistoryStream
            switch envelope.target {
            case .user(let uid): stream = .user(uid)
            case .room(let room): stream = .room(room)
            default:
                counters.drop(.garbage, metadata: ["error": "a history position on a message that is not to a user or room"])
                return
            }
            let (raw, sessions) = registry.targets(of: stream)
            statistics.countRouted()
            metrics.deliveredRouted.increment(by: raw.count + sessions.count)
            server.send(message, to: raw)
            for session in sessions { session.deliver(message, stream: stream, at: position) }
            return
        }
        let fromHere = envelope.originNode == id && envelope.originEpoch == epoch
        let targets: [WebSocket]
        switch envelope.target {
        case .fds(let targetEpoch, let fds):
            guard targetEpoch == epoch else {
                counters.drop(.stale)
                return
            }
            targets = registry.sockets(fds: fds)
        case .user(let uid):
            guard !fromHere else { return }  // delivered locally when sent
            targets = registry.sockets(user: uid)
        case .users(let uids):
            guard !fromHere else { return }
            targets = registry.sockets(users: uids)
        case .room(let room):
            guard !fromHere else { return }
            targets = registry.sockets(room: room)
        case .all(let except):
            guard !fromHere else { return }
            let mine = Set(except.compactMap { $0.node == id && $0.epoch == epoch ? $0.fd : nil })
            statistics.countRouted()
            metrics.deliveredRouted.increment(by: max(server.connectionCount - mine.count, 0))
            server.broadcast(message, except: mine)
            return
        }
        statistics.countRouted()
        metrics.deliveredRouted.increment(by: targets.count)
        server.send(message, to: targets)
    }
}
