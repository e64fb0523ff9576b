public import NIOCore

/// Sends to users, rooms, single connections or everyone, on any node.
///
/// Local targets are written directly (they skip Redis); the other nodes are
/// reached through the configured driver (one `PUBLISH` on the user's, room's,
/// node's or broadcast channel with pub/sub; the node streams with the queue
/// driver). Delivery over pub/sub is at-most-once.
///
/// **`send` or `post`.** Both take the same path (``DeliveryPipeline``): the
/// arguments are checked, local connections are written at once, and the
/// message is handed to Redis for the other nodes. `send…` then waits for
/// Redis's answer, so it can return how many nodes had a target and throw
/// when Redis cannot be reached. `post…` does not wait for that answer: a
/// connection's `for await` loop goes on to its next message while the
/// previous ones are on their way, and back-to-back `postAll` calls share
/// flushes on every node. It waits only when Redis falls behind: while more
/// than `limits.postPacingBytes` of posts await Redis's answers on the
/// caller's connection, a post waits for room first (one Redis; on a Redis
/// Cluster a shard's own bound applies), so a relay slows down — and stops
/// reading its socket — instead of its posts being dropped.
///
/// - Arguments are checked before anything is sent: a uid or room that breaks
///   the naming rules, or more targets than `limits.maxTargetsPerCall`, throws
///   ``ClusterError`` from both families — so a name that came from a client
///   can be passed on as it is and the error reported back to it.
/// - Order: a caller's posts and sends leave in the order they were made.
/// - A post's delivery failures are not thrown: while Redis is unreachable the
///   remote part is dropped at once, counted as
///   `clusterws_drops_total{reason="post_failed"}` and logged. Local
///   connections still get the message.
///
/// The counts `send…` returns say how many **nodes** had a target: 0 means
/// nobody was connected (for example, a user who just disconnected).
public struct Sender: Sendable {
    let node: ClusterNode

    private var pipeline: DeliveryPipeline { node.pipeline }

    // MARK: Waiting for Redis

    /// Sends to every connection (every device) of `uid`. Seed: `send`.
    /// - Returns: the number of nodes where `uid` had a connection.
    /// - Throws: ``ClusterError`` for a bad uid; an error of the Redis layer
    ///   when Redis cannot be reached.
    @discardableResult
    public func send(uid: String, _ message: WebSocketMessage) async throws -> Int {
        try await pipeline.send(pipeline.plan(.user(uid), message))[0]
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
    /// payload plus the number of users, not with their product. With user
    /// history on, each user's history gets its own copy (a script per user).
    /// - Returns: per uid, the number of nodes that had it.
    /// - Throws: ``ClusterError/tooManyTargets(count:limit:)`` past
    ///   `limits.maxTargetsPerCall`, ``ClusterError/invalidName(_:)`` for a bad uid.
    @discardableResult
    public func sendMulti(uids: [String], _ message: WebSocketMessage) async throws -> [String: Int] {
        if let plans = try pipeline.perUserPlans(uids, message) {
            // User history on: one history write per user, side by side.
            let pipeline = self.pipeline
            return try await withThrowingTaskGroup(of: (String, Int).self) { group in
                for (uid, plan) in plans { group.addTask { (uid, try await pipeline.send(plan)[0]) } }
                var counts: [String: Int] = [:]
                for try await (uid, count) in group { counts[uid] = count }
                return counts
            }
        }
        let plan = try pipeline.plan(.users(uids), message)
        let counts = try await pipeline.send(plan)
        guard case .users(let distinct) = plan.remote?.destination ?? .users([]) else { return [:] }
        return Dictionary(uniqueKeysWithValues: zip(distinct, counts.array))
    }

    /// Sends to one connection, wherever it is. Seed: `DistributeFd::send`.
    /// - Returns: `false` if it is certainly gone (closed here, or its node is
    ///   not listening); `true` if it was handed over (a remote connection may
    ///   still have closed meanwhile).
    @discardableResult
    public func send(to fd: DistributedFD, _ message: WebSocketMessage) async throws -> Bool {
        try await pipeline.send(pipeline.plan(.connections(node: fd.node, epoch: fd.epoch, fds: [fd.fd]), message))[0] > 0
    }

    /// Sends to every member of `room`, on every node.
    /// - Returns: the number of nodes where the room had a member.
    @discardableResult
    public func send(room: String, _ message: WebSocketMessage) async throws -> Int {
        try await pipeline.send(pipeline.plan(.room(room), message))[0]
    }

    /// Sends to every connection of every node, except `except`. Seed: `sendAll`.
    /// - Returns: the number of nodes reached.
    @discardableResult
    public func sendAll(_ message: WebSocketMessage, except: [DistributedFD] = []) async throws -> Int {
        try await pipeline.send(pipeline.plan(.everyone(except: except), message))[0]
    }

    /// Sends `text` to everyone with the configured default opcode.
    @discardableResult
    public func sendAll(_ text: String) async throws -> Int {
        try await sendAll(node.defaultMessage(text))
    }

    // MARK: Not waiting

    /// Posts to every connection of `uid`, on every node.
    /// - Throws: ``ClusterError/invalidName(_:)`` for a bad uid (nothing is sent).
    public func post(uid: String, _ message: WebSocketMessage) async throws(ClusterError) {
        await pipeline.post(try pipeline.plan(.user(uid), message))
    }

    /// Posts `text` to `uid` with the configured default opcode.
    public func post(uid: String, _ text: String) async throws(ClusterError) {
        try await post(uid: uid, node.defaultMessage(text))
    }

    /// Posts to several users (see ``sendMulti(uids:_:)``).
    /// - Throws: ``ClusterError`` for a bad uid or too many of them (nothing is sent).
    public func postMulti(uids: [String], _ message: WebSocketMessage) async throws(ClusterError) {
        if let plans = try pipeline.perUserPlans(uids, message) {
            for (_, plan) in plans { await pipeline.post(plan) }
            return
        }
        await pipeline.post(try pipeline.plan(.users(uids), message))
    }

    /// Posts to every member of `room`, on every node.
    /// - Throws: ``ClusterError/invalidName(_:)`` for a bad room name (nothing is sent).
    public func post(room: String, _ message: WebSocketMessage) async throws(ClusterError) {
        await pipeline.post(try pipeline.plan(.room(room), message))
    }

    /// Posts to one connection, wherever it is.
    /// - Throws: ``ClusterError/invalidName(_:)`` for an address whose node id breaks the rules.
    public func post(to fd: DistributedFD, _ message: WebSocketMessage) async throws(ClusterError) {
        await pipeline.post(try pipeline.plan(.connections(node: fd.node, epoch: fd.epoch, fds: [fd.fd]), message))
    }

    /// Posts to every connection of every node, except `except`.
    /// - Throws: ``ClusterError/tooManyTargets(count:limit:)`` for an `except`
    ///   list past `limits.maxTargetsPerCall` (nothing is sent).
    public func postAll(_ message: WebSocketMessage, except: [DistributedFD] = []) async throws(ClusterError) {
        await pipeline.post(try pipeline.plan(.everyone(except: except), message))
    }

    /// Posts `text` to everyone with the configured default opcode.
    public func postAll(_ text: String) async throws(ClusterError) {
        try await postAll(node.defaultMessage(text))
    }
}

extension ClusterNode {
    func defaultMessage(_ text: String) -> WebSocketMessage {
        WebSocketMessage(kind: configuration.defaultOpcode, data: ByteBuffer(string: text))
    }
}
