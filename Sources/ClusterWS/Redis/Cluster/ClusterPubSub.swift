/// Pub/sub on a Redis Cluster for a node: channels for which `isClassic` holds
/// (the cluster-wide broadcast channel) use `SUBSCRIBE`, every other one is
/// sharded (`SSUBSCRIBE` on its slot's master).
package struct ClusterPubSub: RedisPubSub {
    let sharded: RedisShardedSubscriber
    let isClassic: @Sendable (String) -> Bool

    package init(_ sharded: RedisShardedSubscriber, isClassic: @escaping @Sendable (String) -> Bool) {
        self.sharded = sharded
        self.isClassic = isClassic
    }

    package var messages: PubSubMessages { sharded.messages }
    package var droppedMessages: Int { sharded.droppedMessages }

    package func subscribe(_ names: [String]) async throws {
        let classic = names.filter(isClassic)
        if !classic.isEmpty { try await sharded.subscribe(classic: classic) }
        let shard = names.filter { !isClassic($0) }
        if !shard.isEmpty { try await sharded.subscribe(sharded: shard) }
    }

    package func unsubscribe(_ names: [String]) async throws {
        try await sharded.unsubscribe(sharded: names.filter { !isClassic($0) })
    }

    package func runUntilShutdown() async { await sharded.runUntilShutdown() }
    package func shutdown() async { await sharded.shutdown() }

    package func waitUntilReady(timeout: Duration) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while await !sharded.isConnected() {
            guard clock.now < deadline else { throw RedisError.notConnected }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    package func isConnected() async -> Bool { await sharded.isConnected() }
}
