package import Logging
package import CoreMetrics
package import NIOCore
import NIOPosix
import ServiceLifecycle

/// A dedicated Redis connection in subscribe mode, with its messages as an
/// async sequence.
///
/// Channels can be subscribed and unsubscribed at any time. The subscriber
/// remembers them: when Redis goes away and comes back it reconnects,
/// re-authenticates, re-selects the database and subscribes every channel
/// again by itself. ``messages`` ends only when the subscriber stops.
///
/// ```swift
/// let subscriber = RedisSubscriber(configuration: redis)
/// group.addTask { try await subscriber.run() }
/// try await subscriber.subscribe(["news"])
/// for await message in subscriber.messages { print(message.channel) }
/// ```
///
/// Pub/sub is at-most-once: messages published while the subscriber is
/// disconnected are not seen. If the consumer of ``messages`` falls behind by
/// more than the buffer's limits (messages or bytes), newer messages are
/// dropped and counted in ``droppedMessages`` rather than growing memory
/// without bound.
package actor RedisSubscriber: Service, RedisReconnecting {
    package let configuration: RedisConfiguration
    nonisolated let eventLoop: any EventLoop
    let logger: Logger
    var link = RedisLinkState<CheckedContinuation<Void, any Error>>()

    /// Every message published to a subscribed channel, in the order Redis sent them.
    package nonisolated let messages: PubSubMessages
    private let buffer: PubSubBuffer
    /// Whether ``messages`` ends with this subscriber (not when the buffer is shared).
    private let ownsBuffer: Bool
    /// Sharded pub/sub (`SSUBSCRIBE`, Redis Cluster): one shard's channels.
    package nonisolated let sharded: Bool
    private let onShardUnsubscribed: (@Sendable (String) -> Void)?
    private var channels: Set<String> = []

    package nonisolated var unownedExecutor: UnownedSerialExecutor {
        eventLoop.executor.asUnownedSerialExecutor()
    }

    /// Creates a subscriber; nothing connects until ``run()``.
    /// - Parameters:
    ///   - buffer: how many undelivered messages and bytes ``messages`` holds.
    ///   - onOverflow: told how many messages were dropped for lack of room.
    package init(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next(),
        buffer limits: PubSubBuffer.Limits = .init(),
        onOverflow: (@Sendable (Int) -> Void)? = nil,
        logger: Logger = Logger(label: "clusterws.redis.subscriber"),
        reconnects: Counter? = nil,
        sharded: Bool = false,
        sharing buffer: PubSubBuffer? = nil,
        onShardUnsubscribed: (@Sendable (String) -> Void)? = nil
    ) {
        self.sharded = sharded
        self.onShardUnsubscribed = onShardUnsubscribed
        self.link.reconnects = reconnects
        self.configuration = configuration
        self.eventLoop = eventLoop
        var logger = logger
        logger[metadataKey: "redis.address"] = "\(configuration.address)"
        self.logger = logger
        self.ownsBuffer = buffer == nil
        let buffer = buffer ?? PubSubBuffer(limits: limits, onOverflow: onOverflow)
        self.buffer = buffer
        messages = PubSubMessages(buffer: buffer)
    }

    /// Connects and keeps the subscriptions alive until cancelled or shut
    /// down; then ends ``messages``.
    package func run() async throws {
        await runConnectionLoop()
        if ownsBuffer { buffer.finish() }
    }

    /// Like ``run()``, but a graceful shutdown of the surrounding service group
    /// does not stop it: only ``shutdown()`` or cancellation does.
    package func runUntilShutdown() async {
        await runConnectionLoop(followGracefulShutdown: false)
        if ownsBuffer { buffer.finish() }
    }

    /// Unsubscribes from everything and stops: ``run()`` returns and ``messages`` ends.
    package func shutdown() {
        beginShutdown()
    }

    /// Subscribes to `channels`. When connected, returns once Redis has
    /// confirmed them, so anything published afterwards is received; when
    /// disconnected, returns at once and they are subscribed on reconnect.
    package func subscribe(_ names: [String]) async throws {
        let new = names.filter { !channels.contains($0) }
        guard !new.isEmpty else { return }
        channels.formUnion(new)
        try await sendToLiveChannel(sharded ? "SSUBSCRIBE" : "SUBSCRIBE", new)
    }

    /// Unsubscribes from `channels`; returns once Redis has confirmed it (when connected).
    package func unsubscribe(_ names: [String]) async throws {
        let gone = names.filter { channels.contains($0) }
        guard !gone.isEmpty else { return }
        channels.subtract(gone)
        try await sendToLiveChannel(sharded ? "SUNSUBSCRIBE" : "UNSUBSCRIBE", gone)
    }

    /// Stops wanting `names` without telling Redis (it already dropped them:
    /// a sharded channel whose slot moved).
    package func forget(_ names: [String]) {
        channels.subtract(names)
    }

    /// The channels currently wanted.
    package var subscribedChannels: Set<String> { channels }

    /// Messages dropped because ``messages`` was at its limits.
    package nonisolated var droppedMessages: Int { buffer.dropped }

    /// How many times this subscriber has connected and subscribed.
    package var connectionCount: Int { link.generation }

    /// Waits until the subscriber has (re)connected and re-subscribed more
    /// than `generation` times.
    package func waitUntilConnected(after generation: Int = 0, timeout: Duration) async throws {
        try await waitForConnection(after: generation, timeout: timeout)
    }

    private func sendToLiveChannel(_ verb: String, _ names: [String]) async throws {
        guard let channel = link.channel else { return }
        let futures = RedisConnector.execute(
            chunks(verb, names), on: channel, timeout: configuration.commandTimeout)
        for future in futures { _ = try await future.get() }
    }

    /// `SUBSCRIBE a b c ...` in commands of at most 1,000 channels; Redis
    /// confirms each channel with its own reply. Sharded: one command per slot
    /// (Redis requires it), and `SUNSUBSCRIBE` expects no reply (its
    /// confirmations arrive as pushes, like the ones Redis sends by itself).
    private func chunks(_ verb: String, _ names: [String]) -> [RedisCommand] {
        let groups = sharded ? Dictionary(grouping: names, by: { RedisClusterSlot.of($0) }).values.map { $0 } : [names]
        let replies = verb == "SUNSUBSCRIBE" ? 0 : nil
        return groups.flatMap { group in
            stride(from: 0, to: group.count, by: 1_000).map { start in
                let slice = group[start..<min(start + 1_000, group.count)]
                return RedisCommand(verb, arguments: slice.map { .string($0) }, replyCount: replies ?? slice.count)
            }
        }
    }

    func openChannel() async throws -> any Channel {
        let buffer = self.buffer
        let onShardUnsubscribed = self.onShardUnsubscribed
        return try await RedisConnector.connect(configuration: configuration, eventLoop: eventLoop) { message in
            if message.kind == .shardUnsubscribed {
                onShardUnsubscribed?(message.channel)
            } else {
                buffer.append(message)
            }
        }
    }

    /// Re-subscribes everything. The SUBSCRIBE is written before the first
    /// suspension, so a `subscribe` racing with it is sent after it.
    func prepare(_ channel: any Channel) async throws {
        guard !channels.isEmpty else { return }
        let futures = RedisConnector.execute(
            chunks(sharded ? "SSUBSCRIBE" : "SUBSCRIBE", Array(channels)), on: channel, timeout: configuration.commandTimeout)
        for future in futures { _ = try await future.get() }
        logger.debug("redis resubscribed", metadata: ["channels": "\(channels.count)"])
    }
}
