import CoreMetrics
import Logging

extension ClusterNode {
    /// The router: every message on a subscribed channel → envelope → local
    /// connections. Garbage is logged, counted and dropped; the loop goes on.
    func routeMessages() async {
        for await message in subscriber.messages {
            let envelope: Envelope
            do {
                envelope = try Envelope(decoding: message.payload)
            } catch {
                statistics.add("garbage")
                metrics.drops["garbage"]?.increment()
                logger.warning("dropped a message that is not an envelope",
                               metadata: ["channel": "\(message.channel)", "error": "\(error)"])
                continue
            }
            await route(envelope)
        }
    }

    func route(_ envelope: Envelope) async {
        let message = WebSocketMessage(kind: envelope.kind, data: envelope.payload)
        let fromHere = envelope.originNode == id && envelope.originEpoch == epoch
        let targets: [WebSocket]
        switch envelope.target {
        case .fds(let targetEpoch, let fds):
            guard targetEpoch == epoch else {
                statistics.add("stale")
                metrics.drops["stale"]?.increment()
                logger.debug("dropped a message for a connection of an earlier run")
                return
            }
            targets = registry.sockets(fds: fds)
        case .user(let uid):
            guard !fromHere else { return }  // delivered locally when sent
            targets = registry.sockets(user: uid)
        case .room(let room):
            guard !fromHere else { return }
            targets = registry.sockets(room: room)
        case .all(let except):
            guard !fromHere else { return }
            // Through the transport's per-loop broadcast queue: a burst of
            // broadcasts from Redis shares one write and flush per connection.
            statistics.add("routed")
            let mine = Set(except.filter { $0.node == id && $0.epoch == epoch }.map { Int($0.fd) })
            metrics.deliveredRouted.increment(by: max(server.connectionCount - mine.count, 0))
            server.broadcast(message, except: mine)
            return
        }
        statistics.add("routed")
        metrics.deliveredRouted.increment(by: targets.count)
        FanOut.send(message, to: targets)
    }
}
