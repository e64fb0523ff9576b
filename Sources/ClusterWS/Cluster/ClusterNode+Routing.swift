import CoreMetrics
import Logging

extension ClusterNode {
    /// The router: every message on a subscribed channel → envelope → local
    /// connections. It takes the subscriber's messages a burst at a time
    /// (one wake-up per burst) and queues them on each event loop's ordered
    /// queue (targeted and broadcast alike). Garbage is logged, counted and dropped; the loop goes on.
    func routeMessages() async {
        while true {
            let batch = await subscriber.messages.nextBatch()
            if batch.isEmpty { return }
            for message in batch {
                let envelope: Envelope
                do {
                    envelope = try Envelope(decoding: message.payload)
                } catch {
                    counters.drop(.garbage, metadata: ["channel": "\(message.channel)", "error": "\(error)"])
                    continue
                }
                // Into each loop's ordered queue (the transport's): a burst of broadcasts
                // merges into one buffer per socket, and nothing overtakes anything.
                if case .all(let except) = envelope.target {
                    guard envelope.originNode != id || envelope.originEpoch != epoch else { continue }
                    let mine = localIDs(in: except)
                    statistics.countRouted()
                    metrics.deliveredRouted.increment(by: max(server.connectionCount - mine.count, 0))
                    server.broadcast(WebSocketMessage(kind: envelope.kind, data: envelope.payload), except: mine)
                    continue
                }
                guard let (message, targets) = resolve(envelope) else { continue }
                server.send(message, to: targets)
            }
        }
    }

    /// Delivers one envelope (the queue driver's consumers).
    func route(_ envelope: Envelope) async {
        guard let (message, targets) = resolve(envelope) else { return }
        server.send(message, to: targets)
    }

    /// The message and local connections an envelope is for; `nil` when there
    /// is nothing to write here.
    private func resolve(_ envelope: Envelope) -> (WebSocketMessage, [WebSocket])? {
        let message = WebSocketMessage(kind: envelope.kind, data: envelope.payload)
        let fromHere = envelope.originNode == id && envelope.originEpoch == epoch
        let targets: [WebSocket]
        switch envelope.target {
        case .fds(let targetEpoch, let fds):
            guard targetEpoch == epoch else {
                counters.drop(.stale)
                logger.debug("dropped a message for a connection of an earlier run")
                return nil
            }
            targets = registry.sockets(fds: fds)
        case .user(let uid):
            guard !fromHere else { return nil }  // delivered locally when sent
            targets = registry.sockets(user: uid)
        case .room(let room):
            guard !fromHere else { return nil }
            targets = registry.sockets(room: room)
        case .users(let uids):
            guard !fromHere else { return nil }
            targets = registry.sockets(users: uids)
        case .all(let except):
            guard !fromHere else { return nil }
            // Through the same per-burst jobs as targeted messages, so a broadcast
            // never overtakes (or falls behind) a message routed before it.
            let mine = Set(except.filter { $0.node == id && $0.epoch == epoch }.map(\.fd))
            targets = registry.allSockets(except: mine)
        }
        statistics.countRouted()
        metrics.deliveredRouted.increment(by: targets.count)
        return targets.isEmpty ? nil : (message, targets)
    }
}
