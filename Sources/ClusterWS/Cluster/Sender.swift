import CoreMetrics
public import NIOCore

/// Sends to users, rooms, single connections or everyone, on any node.
/// Every call is one `await`; none waits for a client to read.
///
/// Local targets are written directly (they skip Redis); remote ones get one
/// `PUBLISH` on the user's, room's, node's or the broadcast channel, which
/// Redis routes only to the nodes subscribed to it. Delivery over pub/sub is
/// at-most-once.
///
/// Arguments are checked before anything is sent: a uid or room that breaks
/// the naming rules, or more targets than `limits.maxTargetsPerCall`, throws
/// ``ClusterError`` — so a name that came from a client can be passed on as
/// it is and the error reported back to it.
///
/// The returned counts say how many **nodes** had a target: 0 means nobody
/// was connected (for example, a user who just disconnected).
public struct Sender: Sendable {
    let node: ClusterNode

    /// Sends to every connection (every device) of `uid`. Seed: `send`.
    /// - Returns: the number of nodes where `uid` had a connection.
    /// - Throws: ``ClusterError`` for a bad uid; an error of the Redis layer
    ///   when Redis cannot be reached.
    @discardableResult
    public func send(uid: String, _ message: WebSocketMessage) async throws -> Int {
        try node.check(uid: uid)
        node.metrics.messagesOut["user"]?.increment()
        return try await node.publish(.user(uid), message, local: node.registry.sockets(user: uid), channel: node.keys.userChannel(uid))
    }

    /// Sends `text` to `uid` with the configured default opcode.
    @discardableResult
    public func send(uid: String, _ text: String) async throws -> Int {
        try await send(uid: uid, node.defaultMessage(text))
    }

    /// Sends to several users. Seed: `sendMulti`.
    ///
    /// The message is encoded once and travels once to each node that has any
    /// of the users (one script run on one Redis; one read and one write per
    /// node on a Redis Cluster): memory and Redis traffic grow with the
    /// payload plus the number of users, not with their product.
    /// - Returns: per uid, the number of nodes that had it.
    /// - Throws: ``ClusterError/tooManyTargets(count:limit:)`` past
    ///   `limits.maxTargetsPerCall`, ``ClusterError/invalidName(_:)`` for a bad uid.
    @discardableResult
    public func sendMulti(uids: [String], _ message: WebSocketMessage) async throws -> [String: Int] {
        try node.check(uids: uids)
        node.metrics.messagesOut["users"]?.increment()
        var seen = Set<String>()
        let distinct = uids.filter { seen.insert($0).inserted }
        var results: [String: Int] = [:]
        for uid in distinct {
            let local = node.registry.sockets(user: uid)
            node.metrics.deliveredLocal.increment(by: local.count)
            node.server.send(message, to: local)
            results[uid] = local.isEmpty ? 0 : 1
        }
        guard !distinct.isEmpty else { return results }
        let remote = try await node.sendRemote(users: distinct, message)
        for (uid, count) in zip(distinct, remote) { results[uid, default: 0] += count }
        return results
    }

    /// Sends to one connection, wherever it is. Seed: `DistributeFd::send`.
    /// - Returns: `false` if it is certainly gone (closed here, or its node is
    ///   not listening); `true` if it was handed over (a remote connection may
    ///   still have closed meanwhile).
    @discardableResult
    public func send(to fd: DistributedFD, _ message: WebSocketMessage) async throws -> Bool {
        try node.check(fd: fd)
        node.metrics.messagesOut["fd"]?.increment()
        if fd.node == node.id {
            guard fd.epoch == node.epoch else { return false }
            let local = node.registry.sockets(fds: [fd.fd])
            node.metrics.deliveredLocal.increment(by: local.count)
            node.server.send(message, to: local)
            return !local.isEmpty
        }
        if node.configuration.driver == .queue {
            return try await node.enqueue(.fds(epoch: fd.epoch, [fd.fd]), message, toNode: fd.node) > 0
        }
        let command = try node.publishCommand(.fds(epoch: fd.epoch, [fd.fd]), message, channel: node.keys.nodeChannel(fd.node))
        return try await node.redis.send(command).int ?? 0 > 0
    }

    /// Sends to every member of `room`, on every node.
    @discardableResult
    public func send(room: String, _ message: WebSocketMessage) async throws -> Int {
        try node.check(room: room)
        node.metrics.messagesOut["room"]?.increment()
        return try await node.publish(.room(room), message, local: node.registry.sockets(room: room), channel: node.keys.roomChannel(room))
    }

    /// Sends to every connection of every node, except `except`. Seed: `sendAll`.
    /// - Returns: the number of nodes reached.
    @discardableResult
    public func sendAll(_ message: WebSocketMessage, except: [DistributedFD] = []) async throws -> Int {
        try node.check(except: except)
        node.metrics.messagesOut["all"]?.increment()
        node.broadcastLocally(message, except: except)
        return try await node.publish(.all(except: except), message, local: [], channel: node.keys.allChannel, alwaysLocal: true)
    }

    /// Sends `text` to everyone with the configured default opcode.
    @discardableResult
    public func sendAll(_ text: String) async throws -> Int {
        try await sendAll(node.defaultMessage(text))
    }
}

extension ClusterNode {
    func defaultMessage(_ text: String) -> WebSocketMessage {
        WebSocketMessage(kind: configuration.defaultOpcode, data: ByteBuffer(string: text))
    }

    /// The envelope of `message` for `target`, from this node, encoded.
    func encode(_ target: Envelope.Target, _ message: WebSocketMessage) throws(ClusterError) -> ByteBuffer {
        let envelope = Envelope(target: target, kind: message.kind, originNode: id, originEpoch: epoch, payload: message.data)
        do {
            return try envelope.encoded()
        } catch {
            throw .unencodable("\(error)")
        }
    }

    func publishCommand(_ target: Envelope.Target, _ message: WebSocketMessage, channel: String) throws(ClusterError) -> RedisCommand {
        // On a Redis Cluster, user, room and node channels are sharded (to their slot's master only);
        // the broadcast channel stays classic (the cluster bus carries it to every node).
        let verb = redisConfiguration.isCluster && channel != keys.allChannel ? "SPUBLISH" : "PUBLISH"
        return RedisCommand(verb, .string(channel), .bytes(try encode(target, message)))
    }

    /// Local delivery first, then one PUBLISH (pub/sub driver) or one
    /// routing-script run (queue driver) for the other nodes. With pub/sub,
    /// this node's own copy is dropped by the router (it is the origin); the
    /// queue script skips this node.
    func publish(_ target: Envelope.Target, _ message: WebSocketMessage, local: [WebSocket], channel: String,
                 alwaysLocal: Bool = false) async throws -> Int {
        metrics.deliveredLocal.increment(by: local.count)
        server.send(message, to: local)
        let reachedHere = (alwaysLocal || !local.isEmpty) ? 1 : 0
        if configuration.driver == .queue {
            return try await enqueue(target, message) + reachedHere
        }
        let subscribers = try await redis.send(publishCommand(target, message, channel: channel)).int ?? 0
        // This node is subscribed to user/room channels exactly while it has local members.
        return max(subscribers - reachedHere, 0) + reachedHere
    }
}
