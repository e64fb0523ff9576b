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
/// - Bad arguments throw at once (``ClusterError``: a uid or room that breaks
///   the naming rules, too many exclusions), before anything is sent.
/// - Delivery failures are not thrown: while Redis is unreachable the remote part is
///   dropped at once (no waiting for a reconnect), counted as
///   `clusterws_drops_total{reason="post_failed"}` and logged. Local
///   connections still get the message.
/// - Queue driver: the routing script is called by its SHA-1 (the node loads
///   it on every connect); if Redis's script cache is flushed while connected
///   (NOSCRIPT), the message is re-posted with the script's source, and only
///   then may it arrive after later ones.
extension Sender {
    /// Posts to every connection of `uid`, on every node.
    /// - Throws: ``ClusterError/invalidName(_:)`` for a bad uid (nothing is sent).
    public func post(uid: String, _ message: WebSocketMessage) async throws(ClusterError) {
        try node.check(uid: uid)
        node.metrics.messagesOut["user"]?.increment()
        try node.post(.user(uid), message, local: node.registry.sockets(user: uid), channel: node.keys.userChannel(uid))
    }

    /// Posts `text` to `uid` with the configured default opcode.
    public func post(uid: String, _ text: String) async throws(ClusterError) {
        try await post(uid: uid, node.defaultMessage(text))
    }

    /// Posts to every member of `room`, on every node.
    /// - Throws: ``ClusterError/invalidName(_:)`` for a bad room name (nothing is sent).
    public func post(room: String, _ message: WebSocketMessage) async throws(ClusterError) {
        try node.check(room: room)
        node.metrics.messagesOut["room"]?.increment()
        try node.post(.room(room), message, local: node.registry.sockets(room: room), channel: node.keys.roomChannel(room))
    }

    /// Posts to one connection, wherever it is.
    /// - Throws: ``ClusterError/invalidName(_:)`` for an address whose node id breaks the rules.
    public func post(to fd: DistributedFD, _ message: WebSocketMessage) async throws(ClusterError) {
        try node.check(fd: fd)
        node.metrics.messagesOut["fd"]?.increment()
        if fd.node == node.id {
            guard fd.epoch == node.epoch else { return }
            let local = node.registry.sockets(fds: [fd.fd])
            node.metrics.deliveredLocal.increment(by: local.count)
            node.server.send(message, to: local)
            return
        }
        try node.postRemote(.fds(epoch: fd.epoch, [fd.fd]), message, toNode: fd.node, channel: node.keys.nodeChannel(fd.node))
    }

    /// Posts to every connection of every node, except `except`.
    /// - Throws: ``ClusterError/tooManyTargets(count:limit:)`` for an `except`
    ///   list past `limits.maxTargetsPerCall` (nothing is sent).
    public func postAll(_ message: WebSocketMessage, except: [DistributedFD] = []) async throws(ClusterError) {
        try node.check(except: except)
        node.metrics.messagesOut["all"]?.increment()
        node.broadcastLocally(message, except: except)
        try node.postRemote(.all(except: except), message, channel: node.keys.allChannel)
    }

    /// Posts `text` to everyone with the configured default opcode.
    public func postAll(_ text: String) async throws(ClusterError) {
        try await postAll(node.defaultMessage(text))
    }
}

extension ClusterNode {
    /// Local delivery, then the remote part queued on the Redis connection.
    func post(_ target: Envelope.Target, _ message: WebSocketMessage, local: [WebSocket], channel: String) throws(ClusterError) {
        // Encoded before anything is delivered, so a message that cannot travel goes nowhere.
        let command = try remoteCommand(target, message, channel: channel)
        metrics.deliveredLocal.increment(by: local.count)
        server.send(message, to: local)
        postRemote(command, target, message)
    }

    /// Every local connection except `except` (other nodes' fds are ignored),
    /// through the transport's per-loop queue, which targeted local deliveries
    /// share: order holds between them, and back-to-back broadcasts merge into
    /// one write and one flush per connection.
    func broadcastLocally(_ message: WebSocketMessage, except: [DistributedFD]) {
        let mine = localIDs(in: except)
        metrics.deliveredLocal.increment(by: max(server.connectionCount - mine.count, 0))
        server.broadcast(message, except: mine)
    }

    /// Queues the PUBLISH (pub/sub) or routing-script call (queue) without waiting for it.
    func postRemote(_ target: Envelope.Target, _ message: WebSocketMessage, toNode: String = "", channel: String) throws(ClusterError) {
        postRemote(try remoteCommand(target, message, toNode: toNode, channel: channel), target, message, toNode: toNode)
    }

    /// The command a post writes: `PUBLISH`, or the queue's routing script by SHA
    /// (`nil` on a Redis Cluster with the queue driver, where routing needs reads first).
    private func remoteCommand(_ target: Envelope.Target, _ message: WebSocketMessage, toNode: String = "",
                               channel: String) throws(ClusterError) -> RedisCommand? {
        guard configuration.driver == .queue else { return try publishCommand(target, message, channel: channel) }
        if redisConfiguration.isCluster {
            _ = try encode(target, message)  // checked here; encoded again by the chained send
            return nil
        }
        return try enqueueCommand(target, message, toNode: toNode)
    }

    private func postRemote(_ command: RedisCommand?, _ target: Envelope.Target, _ message: WebSocketMessage,
                            toNode: String = "") {
        let failed: @Sendable (RedisError) -> Void = { [self] error in postFailed(error) }
        guard let command else { return postAcrossSlots(target, message, toNode: toNode) }
        guard configuration.driver == .queue else { return redis.post(command, onFailure: failed) }
        // EVAL with the source also puts the script in Redis's cache, so the SHA works after it.
        redis.post(command) { [self] error in
            guard LuaScript.isMissing(error), let bySource = try? enqueueCommand(target, message, toNode: toNode, bySource: true)
            else { return postFailed(error) }
            redis.post(bySource, onFailure: failed)
        }
    }

    /// The local connection numbers among `fds` (this node, this epoch; others' are ignored).
    func localIDs(in fds: [DistributedFD]) -> Set<Int> {
        Set(fds.compactMap { $0.node == id && $0.epoch == epoch ? Int(exactly: $0.fd) : nil })
    }

    func postFailed(_ error: RedisError) {
        counters.drop(.postFailed, metadata: ["error": "\(error)"])
    }
}
