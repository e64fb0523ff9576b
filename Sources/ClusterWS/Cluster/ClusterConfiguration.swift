public import CoreMetrics

/// Everything a ``ClusterNode`` needs, mirroring the reference package's
/// config keys (`user_relate_fd_key`, `fd_relate_user_key`, `ttl`,
/// `default_opcode`, `driver`, `queue_config`, `server_id`).
///
/// ```swift
/// var configuration = ClusterConfiguration(redisURL: "redis://127.0.0.1:6379")
/// configuration.webSocket.port = 9502
/// let node = ClusterNode(configuration: configuration)
/// ```
public struct ClusterConfiguration: Sendable {
    /// This node's id (``fromEnvironment(_:)`` reads `DISTRIBUTE_SERVER_ID`); a random one by default.
    /// Every node of a cluster needs its own; `#` is not allowed.
    public var serverID: String
    /// Prefix of every Redis key and channel, so two clusters can share one Redis.
    public var namespace: String
    /// Key of a user's set of connections (`%s` = uid). Seed: `user_relate_fd_key`.
    public var userRelateFDKey: String
    /// Key of a connection's user (`%s` = distributed fd). Seed: `fd_relate_user_key`.
    public var fdRelateUserKey: String
    /// Expiry of relation keys; a live node refreshes them every `ttl / 3`. Seed: `ttl`.
    public var ttl: Duration
    /// Opcode for sends that do not name one. Seed: `default_opcode` (binary).
    public var defaultOpcode: WebSocketMessage.Kind
    /// How messages travel between nodes. Seed: `driver`.
    public var driver: Driver
    /// Queue driver settings.
    public var queue: Queue
    /// Live connections one uid may hold across the cluster; past it, upgrades
    /// get HTTP 429.
    public var maxConnectionsPerUser: Int
    /// How often a node announces it is alive.
    public var heartbeatInterval: Duration
    /// A node silent for this long is dead: its relations are removed.
    public var livenessWindow: Duration
    /// The Redis server.
    public var redis: RedisURL
    /// The WebSocket listener of this node.
    public var webSocket: WebSocketServerConfiguration
    /// Where the node's metrics go; `nil` uses the process-wide
    /// `MetricsSystem` (bootstrap swift-prometheus, for example).
    public var metricsFactory: (any MetricsFactory)?
    /// Byte and count budgets of the cluster layer: what one application
    /// call, one connection or one Redis peer can make the node hold.
    public var limits: Limits
    /// How sends behave while a Redis Cluster shard has no reachable master.
    public var failover = Failover()
    /// Message history and recovery for reconnecting clients (off by default).
    public var history = History()
    /// Room presence: members and join/leave events (off by default).
    public var presence = Presence()
    /// How long an idempotency key of ``Sender/publish(_:to:idempotencyKey:)``
    /// is remembered: a second publish with it within this time delivers nothing.
    public var idempotencyWindow: Duration = .seconds(300)

    /// What a send meets while the Redis Cluster master of its shard is
    /// unreachable (killed, cut off) and before its replica is promoted
    /// (`cluster-node-timeout` plus about a second). Other shards are never
    /// affected. On one Redis server these settings do nothing.
    ///
    /// - **Fail fast** (the default, `wait` well under the promotion time):
    ///   every `send` for that shard throws ``ClusterError/shardUnavailable(slot:)``
    ///   after at most `wait`; nothing was sent, the caller may retry.
    /// - **Deliver late** (`wait` longer than the promotion time): sends wait
    ///   for the promoted replica and are delivered then, as long as the bytes
    ///   waiting for that shard stay under `maxWaitingBytesPerShard`; past it
    ///   they throw at once.
    ///
    /// `post` never waits: a post for a shard without a reachable master is
    /// dropped at once and counted (`clusterws_drops_total{reason="shard_unavailable"}`).
    ///
    /// Receiving (pub/sub driver): with `standbySubscriptions` (the default) a
    /// node subscribes each sharded channel on the shard's master *and* on one
    /// of its replicas; Redis passes a shard's messages to every node of the
    /// shard, so when a replica is promoted (a `CLUSTER FAILOVER`, or after a
    /// master died) the node is already subscribed there and nothing
    /// published to the new master is missed. Every message then arrives
    /// twice; the second copy is dropped by its id (the last
    /// `deduplicationWindow` ids are remembered).
    public struct Failover: Sendable {
        /// Longest a send waits for its shard to have a reachable master.
        public var wait: Duration
        /// Most bytes of commands waiting for one shard; past it, sends for
        /// that shard fail at once.
        public var maxWaitingBytesPerShard: Int
        /// Subscribe sharded channels on a replica of their master too.
        public var standbySubscriptions: Bool
        /// Message ids remembered to drop second copies (with standby subscriptions).
        public var deduplicationWindow: Int

        /// Creates failover settings; the default fails fast (500 ms, 4 MiB)
        /// and keeps standby subscriptions (65,536 ids remembered).
        public init(wait: Duration = .milliseconds(500), maxWaitingBytesPerShard: Int = 4 << 20,
                    standbySubscriptions: Bool = true, deduplicationWindow: Int = 65_536) {
            self.wait = wait
            self.maxWaitingBytesPerShard = maxWaitingBytesPerShard
            self.standbySubscriptions = standbySubscriptions
            self.deduplicationWindow = deduplicationWindow
        }
    }

    /// Budgets of the cluster layer. Each has a default that suits a
    /// production node; each refusal is a typed error, each drop is counted
    /// in `clusterws_drops_total`.
    public struct Limits: Sendable {
        /// Longest uid or room name, in UTF-8 bytes. Longer names are refused
        /// with ``NameError`` (as are empty ones and control characters).
        public var maxNameBytes: Int
        /// Most targets one call may name: uids of `sendMulti`, connections in
        /// an `except:` list. More is refused with ``ClusterError/tooManyTargets(count:limit:)``.
        public var maxTargetsPerCall: Int
        /// Rooms one connection may be in; `join` past it throws
        /// ``ClusterError/tooManyRooms(limit:)`` (each room is a subscription and keys in Redis).
        public var maxRoomsPerConnection: Int
        /// Messages from Redis waiting for the router, at most this many…
        public var subscriberBufferMessages: Int
        /// …and at most this many payload bytes; past either, newer ones are
        /// dropped and counted (`reason="subscriber_overflow"`).
        public var subscriberBufferBytes: Int
        /// Largest reply a Redis connection accepts while it is being parsed;
        /// a peer that sends more (a bogus length prefix) gets its connection
        /// closed and re-opened.
        public var maxRedisReplyBytes: Int
        /// Bytes of posts awaiting Redis's answers on one Redis connection past
        /// which `sender.post…` waits for room before posting (back-pressure
        /// instead of drops while Redis falls behind). One Redis server only.
        public var postPacingBytes: Int = 8 << 20
        /// Bytes of posts awaiting Redis's answers on one Redis connection past
        /// which a post is dropped at once and counted (`reason="redis_backlog"`):
        /// the hard bound behind the pacing, reached only by many posters at once.
        public var maxPostBytesInFlight: Int = 32 << 20

        /// Creates limits; the defaults suit a production node.
        public init(maxNameBytes: Int = 256, maxTargetsPerCall: Int = 1_000, maxRoomsPerConnection: Int = 256,
                    subscriberBufferMessages: Int = 100_000, subscriberBufferBytes: Int = 128 << 20,
                    maxRedisReplyBytes: Int = 256 << 20) {
            self.maxNameBytes = maxNameBytes
            self.maxTargetsPerCall = maxTargetsPerCall
            self.maxRoomsPerConnection = maxRoomsPerConnection
            self.subscriberBufferMessages = subscriberBufferMessages
            self.subscriberBufferBytes = subscriberBufferBytes
            self.maxRedisReplyBytes = maxRedisReplyBytes
        }
    }

    /// The delivery driver.
    public enum Driver: String, Sendable, CaseIterable {
        /// Redis pub/sub: lowest latency, at-most-once (the seed's `SubscribeDriver`).
        case pubSub
        /// A durable Redis Stream per node read through a consumer group:
        /// at-least-once, survives Redis reconnects and node restarts (the
        /// seed's `QueueDriver`). Settings in ``ClusterConfiguration/queue``.
        case queue
    }

    /// Settings of the queue driver (the seed's `queue_config`).
    public struct Queue: Sendable {
        /// Consumers reading this node's stream, each on its own Redis
        /// connection. Seed: `process_num` (`LOCAL_PUSH_PROCESS_NUM`).
        public var consumers: Int
        /// Entries a consumer has in flight (read, not yet acknowledged).
        /// Seed: `process_concurrent_limit` (`LOCAL_PUSH_PROCESS_CONCURRENT_LIMIT`).
        public var concurrency: Int
        /// Approximate cap of a node's stream (`XADD MAXLEN ~`): if a node is
        /// away long enough for this many entries to pile up, the oldest go.
        public var maxLength: Int
        /// Entries pending this long for another consumer (one that died) are claimed.
        public var claimAfter: Duration
        /// How long one `XREADGROUP` blocks waiting for entries.
        public var block: Duration
        /// On a Redis Cluster: replicas that must have each entry (`WAIT`)
        /// before a send returns, so a master's crash right after it loses
        /// nothing it acknowledged. 0 (the default) does not wait: faster, but
        /// Redis's asynchronous replication may lose the last entries written
        /// before a master dies (see the README's failover table for how many).
        public var replicaAcks: Int = 0
        /// How long a send waits for those replicas.
        public var replicaAckTimeout: Duration = .milliseconds(500)

        /// Creates queue settings; defaults follow the seed (1 consumer, 10 in flight).
        public init(consumers: Int = 1, concurrency: Int = 10, maxLength: Int = 100_000,
                    claimAfter: Duration = .seconds(30), block: Duration = .seconds(1)) {
            self.consumers = max(consumers, 1)
            self.concurrency = max(concurrency, 1)
            self.maxLength = maxLength
            self.claimAfter = claimAfter
            self.block = block
        }
    }

    /// A Redis URL, checked when the node starts: one server
    /// (`redis://[user:password@]host:port[/db]`) or a Redis Cluster
    /// (`redis+cluster://[user:password@]host:port,host:port,…`).
    public struct RedisURL: Sendable, ExpressibleByStringLiteral {
        /// The URL text.
        public var url: String
        /// Wraps a URL text.
        public init(_ url: String) { self.url = url }
        /// Wraps a URL literal.
        public init(stringLiteral value: String) { self.url = value }
    }

    /// Creates a configuration with defaults that work on one machine. It
    /// reads no environment variables: see ``fromEnvironment(_:)`` for the
    /// seed's (`DISTRIBUTE_SERVER_ID`, `LOCAL_PUSH_PROCESS_NUM`, …).
    public init(
        redisURL: RedisURL = "redis://127.0.0.1:6379",
        serverID: String? = nil,
        namespace: String = "clusterws",
        webSocket: WebSocketServerConfiguration = .init()
    ) {
        self.serverID = serverID ?? "node-" + String(UInt32.random(in: .min ... .max), radix: 16)
        self.namespace = namespace
        self.userRelateFDKey = "user:relate:fd:%s"
        self.fdRelateUserKey = "fd:relate:user:%s"
        self.ttl = .seconds(7200)
        self.defaultOpcode = .binary
        self.driver = .pubSub
        self.maxConnectionsPerUser = 64
        self.queue = Queue()
        self.heartbeatInterval = .seconds(2)
        self.livenessWindow = .seconds(6)
        self.redis = redisURL
        self.webSocket = webSocket
        self.limits = Limits()
    }

    /// The defaults, with what the environment sets, as the seed reads it:
    ///
    /// | variable | setting |
    /// |---|---|
    /// | `REDIS_URL` | ``redis`` |
    /// | `DISTRIBUTE_SERVER_ID` | ``serverID`` (else a random id) |
    /// | `LOCAL_PUSH_PROCESS_NUM` | ``Queue/consumers`` |
    /// | `LOCAL_PUSH_PROCESS_CONCURRENT_LIMIT` | ``Queue/concurrency`` |
    ///
    /// - Parameter environment: the variables; `nil` reads the process's.
    public static func fromEnvironment(_ environment: [String: String]? = nil) -> ClusterConfiguration {
        let environment = environment ?? ProcessEnvironment.current()
        var configuration = ClusterConfiguration(
            redisURL: RedisURL(environment["REDIS_URL"].flatMap { $0.isEmpty ? nil : $0 } ?? "redis://127.0.0.1:6379"),
            serverID: environment["DISTRIBUTE_SERVER_ID"].flatMap { $0.isEmpty ? nil : $0 })
        configuration.queue = Queue(consumers: environment["LOCAL_PUSH_PROCESS_NUM"].flatMap { Int($0) } ?? 1,
                                    concurrency: environment["LOCAL_PUSH_PROCESS_CONCURRENT_LIMIT"].flatMap { Int($0) } ?? 10)
        return configuration
    }
}

extension ClusterConfiguration {
    /// Checks the values a node cannot work with; throws ``ClusterError/invalidConfiguration(_:)``.
    func validate() throws(ClusterError) {
        func require(_ condition: Bool, _ why: String) throws(ClusterError) {
            if !condition { throw .invalidConfiguration(why) }
        }
        try require(ttl >= .seconds(1), "ttl must be at least 1 s")
        try require(heartbeatInterval > .zero, "heartbeatInterval must be positive")
        try require(livenessWindow > heartbeatInterval, "livenessWindow must be longer than heartbeatInterval")
        try require(maxConnectionsPerUser >= 1, "maxConnectionsPerUser must be at least 1")
        try require(queue.maxLength >= 1, "queue.maxLength must be at least 1")
        try require(queue.replicaAcks >= 0, "queue.replicaAcks must not be negative")
        try history.validate()
        try presence.validate()
        try require(failover.wait >= .zero, "failover.wait must not be negative")
        try require(failover.maxWaitingBytesPerShard >= 0, "failover.maxWaitingBytesPerShard must not be negative")
        try require(failover.deduplicationWindow > 0 && failover.deduplicationWindow <= 16 << 20,
                    "failover.deduplicationWindow must be between 1 and 16,777,216")
        try require(limits.maxNameBytes >= 1 && limits.maxNameBytes <= 4_096, "limits.maxNameBytes must be in 1...4096")
        try require(limits.maxTargetsPerCall >= 1, "limits.maxTargetsPerCall must be at least 1")
        try require(limits.maxRoomsPerConnection >= 1, "limits.maxRoomsPerConnection must be at least 1")
        try require(limits.subscriberBufferMessages >= 1 && limits.subscriberBufferBytes >= 1,
                    "the subscriber buffer limits must be positive")
        try require(limits.maxRedisReplyBytes >= 1_024, "limits.maxRedisReplyBytes must be at least 1 KiB")
        try require(limits.postPacingBytes >= 0 && limits.postPacingBytes <= limits.maxPostBytesInFlight,
                    "limits.postPacingBytes must be between 0 and limits.maxPostBytesInFlight")
    }
}

extension ClusterConfiguration.Limits {
    /// The router buffer's budget.
    var subscriberBuffer: PubSubBuffer.Limits {
        PubSubBuffer.Limits(messages: subscriberBufferMessages, bytes: subscriberBufferBytes)
    }
}
