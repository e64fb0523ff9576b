public import NIOCore
import CoreMetrics
import Logging
import Synchronization

/// Sending without waiting for Redis.
///
/// `send` awaits Redis's answer (so it can return how many nodes were
/// reached); a relay that forwards every incoming message then waits one
/// Redis round trip per message per connection. `post` hands the message to
/// the local connections and queues its Redis command on the node's
/// connection at once, then returns: a connection's `for await` loop goes on
/// to its next message while the previous ones are on their way, and
/// back-to-back `postAll` calls share flushes on every node.
///
/// - Order: a caller's posts (and sends) leave in the order they were made.
/// - Failures are not thrown: while Redis is unreachable the remote part is
///   dropped at once (no waiting for a reconnect), counted as
///   `clusterws_drops_total{reason="post_failed"}` and logged. Local
///   connections still get the message.
/// - Queue driver: the routing script is called by its SHA-1 (the node loads
///   it on every connect); if Redis's script cache is flushed while connected
///   (NOSCRIPT), the message is re-posted with the script's source, and only
///   then may it arrive after later ones.
extension Sender {
    /// Posts to every connection of `uid`, on every node.
    public func post(uid: String, _ message: WebSocketMessage) async {
        node.metrics.messagesOut["user"]?.increment()
        node.post(.user(uid), message, local: node.registry.sockets(user: uid), channel: node.keys.userChannel(uid))
    }

    /// Posts `text` to `uid` with the configured default opcode.
    public func post(uid: String, _ text: String) async {
        await post(uid: uid, node.defaultMessage(text))
    }

    /// Posts to every member of `room`, on every node.
    public func post(room: String, _ message: WebSocketMessage) async {
        node.metrics.messagesOut["room"]?.increment()
        node.post(.room(room), message, local: node.registry.sockets(room: room), channel: node.keys.roomChannel(room))
    }

    /// Posts to one connection, wherever it is.
    public func post(to fd: DistributedFD, _ message: WebSocketMessage) async {
        node.metrics.messagesOut["fd"]?.increment()
        if fd.node == node.id {
            guard fd.epoch == node.epoch else { return }
            let local = node.registry.sockets(fds: [fd.fd])
            node.metrics.deliveredLocal.increment(by: local.count)
            node.server.send(message, to: local)
            return
        }
        node.postRemote(.fds(epoch: fd.epoch, [fd.fd]), message, toNode: fd.node, channel: node.keys.nodeChannel(fd.node))
    }

    /// Posts to every connection of every node, except `except`.
    public func postAll(_ message: WebSocketMessage, except: [DistributedFD] = []) async {
        node.metrics.messagesOut["all"]?.increment()
        node.broadcastLocally(message, except: except)
        node.postRemote(.all(except: except), message, channel: node.keys.allChannel)
    }

    /// Posts `text` to everyone with the configured default opcode.
    public func postAll(_ text: String) async {
        await postAll(node.defaultMessage(text))
    }
}

extension ClusterNode {
    /// Local delivery, then the remote part queued on the Redis connection.
    func post(_ target: Envelope.Target, _ message: WebSocketMessage, local: [WebSocket], channel: String) {
        metrics.deliveredLocal.increment(by: local.count)
        server.send(message, to: local)
        postRemote(target, message, channel: channel)
    }

    /// Every local connection except `except` (other nodes' fds are ignored),
    /// through the transport's per-loop queue, which targeted local deliveries
    /// share: order holds between them, and back-to-back broadcasts merge into
    /// one write and one flush per connection.
    func broadcastLocally(_ message: WebSocketMessage, except: [DistributedFD]) {
        let mine = Set(except.filter { $0.node == id && $0.epoch == epoch }.map { Int($0.fd) })
        metrics.deliveredLocal.increment(by: max(server.connectionCount - mine.count, 0))
        server.broadcast(message, except: mine)
    }

    /// Queues the PUBLISH (pub/sub) or routing-script call (queue) without waiting for it.
    func postRemote(_ target: Envelope.Target, _ message: WebSocketMessage, toNode: String = "", channel: String) {
        let failed: @Sendable (RedisError) -> Void = { [self] error in postFailed(error) }
        guard configuration.driver == .queue else {
            return redis.post(publishCommand(target, message, channel: channel), onFailure: failed)
        }
        if redisConfiguration.isCluster { return postAcrossSlots(target, message, toNode: toNode) }
        // EVAL with the source also puts the script in Redis's cache, so the SHA works after it.
        redis.post(enqueueCommand(target, message, toNode: toNode, script: .sha(QueueScript.sha1))) { [self] error in
            guard case .reply(let text) = error, text.hasPrefix("NOSCRIPT") else { return postFailed(error) }
            redis.post(enqueueCommand(target, message, toNode: toNode, script: .source), onFailure: failed)
        }
    }

    func postFailed(_ error: RedisError) {
        statistics.add("post_failed")
        metrics.drops["post_failed"]?.increment()
        logger.warning("a posted message did not reach Redis; other nodes miss it", metadata: ["error": "\(error)"])
    }
}
