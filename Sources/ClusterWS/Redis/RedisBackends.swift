/// What the cluster runtime needs for commands: one Redis server
/// (``RedisConnection``) or a Redis Cluster (``RedisClusterClient``).
package protocol RedisCommands: Sendable {
    /// Sends one command and returns its reply (see ``RedisConnection/send(_:timeout:)``).
    func send(_ command: RedisCommand, timeout: Duration?) async throws -> RedisValue
    /// Sends several commands pipelined; each one's outcome, in order.
    func send(batch commands: [RedisCommand]) async throws -> [Result<RedisValue, RedisError>]
    /// Writes a command without waiting for its reply, in call order.
    func post(_ command: RedisCommand, onFailure: @escaping @Sendable (RedisError) -> Void)
    /// Connects and reconnects until ``shutdown()``.
    func runUntilShutdown() async
    /// Stops; ``runUntilShutdown()`` returns after.
    func shutdown() async
    /// Returns once commands can be sent (or throws after `timeout`).
    func waitUntilReady(timeout: Duration) async throws
    /// Whether a pacing poster should wait before its next post.
    var isPostBacklogged: Bool { get }
    /// Returns once a pacing poster may post again.
    func waitForPostRoom() async
}

extension RedisCommands {
    /// Whether a pacing poster should wait (see ``RedisConnection/isPostBacklogged``);
    /// `false` where posts are not paced (a Redis Cluster: each shard's bound applies).
    package var isPostBacklogged: Bool { false }

    /// Waits until a post may go (see ``RedisConnection/waitForPostRoom()``).
    package func waitForPostRoom() async {}

    /// Sends one command with the configured timeout.
    package func send(_ command: RedisCommand) async throws -> RedisValue {
        try await send(command, timeout: nil)
    }
}

/// What the cluster runtime needs for pub/sub: classic channels on one Redis
/// server (``RedisSubscriber``), or sharded channels on a Redis Cluster
/// (``ClusterPubSub``).
package protocol RedisPubSub: Sendable {
    /// Every message of every subscribed channel.
    var messages: PubSubMessages { get }
    /// Messages dropped because the consumer fell too far behind.
    var droppedMessages: Int { get }
    /// Subscribes; returns once Redis confirmed (when connected).
    func subscribe(_ names: [String]) async throws
    /// Unsubscribes.
    func unsubscribe(_ names: [String]) async throws
    /// Connects and keeps the subscriptions until ``shutdown()``.
    func runUntilShutdown() async
    /// Stops; ``runUntilShutdown()`` returns after and ``messages`` ends.
    func shutdown() async
    /// Returns once subscribing is possible (or throws after `timeout`).
    func waitUntilReady(timeout: Duration) async throws
    /// Whether every needed connection is up.
    func isConnected() async -> Bool
}

extension RedisConnection: RedisCommands {
    package func waitUntilReady(timeout: Duration) async throws {
        try await waitUntilConnected(after: 0, timeout: timeout)
    }
}

extension RedisSubscriber: RedisPubSub {
    package func waitUntilReady(timeout: Duration) async throws {
        try await waitUntilConnected(after: 0, timeout: timeout)
    }

    /// Connected, subscribed, and answering health checks.
    package func isConnected() -> Bool { link.isReady }
}

extension RedisClusterClient: RedisCommands {
    package func waitUntilReady(timeout: Duration) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            do {
                _ = try await send(RedisCommand("PING"), timeout: .seconds(1))
                return
            } catch {
                guard clock.now < deadline else { throw error }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }
}
