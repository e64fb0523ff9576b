package import Logging
package import CoreMetrics
package import NIOCore
import NIOPosix
import ServiceLifecycle

/// A pipelined, self-healing connection to one Redis server.
///
/// Commands are written as RESP straight into a `ByteBuffer` and replies are
/// parsed by hiredis's reader inside a SwiftNIO channel handler, so no call
/// ever blocks Swift's cooperative pool. Any number of commands may be in
/// flight at once; replies are matched to them in order. Writes made in the
/// same event-loop tick share one flush.
///
/// The actor runs on its channel's event loop, so a command goes from the
/// caller to the socket with a single hop.
///
/// Run it as a `Service` (it reconnects with capped exponential backoff until
/// cancelled or shut down gracefully):
///
/// ```swift
/// let redis = RedisConnection(configuration: try .init(url: "redis://127.0.0.1:6379"))
/// try await withThrowingTaskGroup(of: Void.self) { group in
///     group.addTask { try await redis.run() }
///     let pong = try await redis.send(RedisCommand("PING"))
///     group.cancelAll()
/// }
/// ```
///
/// **While disconnected**: a command waits for the next connection for up to
/// ``RedisConfiguration/disconnectedCommandWait`` and is then sent; if no
/// connection comes in time it fails with the last connect error (for example
/// ``RedisError/connectionRefused(_:)``) or ``RedisError/notConnected``. With a
/// wait of `.zero` it fails at once. Commands already written when the
/// connection drops fail with ``RedisError/connectionLost``: they are never
/// replayed, since Redis may have executed them.
package actor RedisConnection: Service, RedisReconnecting {
    package let configuration: RedisConfiguration
    nonisolated let eventLoop: any EventLoop
    let logger: Logger
    // The link and the write path's state are touched only on the connection's event
    // loop (the actor's executor). nonisolated(unsafe) lets a handler on that loop post
    // or send without `assumeIsolated`, whose closure costs two allocations per call.
    nonisolated(unsafe) var link = RedisLinkState<CheckedContinuation<Void, any Error>>()
    nonisolated(unsafe) private var flushScheduled = false
    /// The current channel's command handler, to hand it requests directly (see ``RedisCommandHandler/submit(_:)``).
    nonisolated(unsafe) private var handler: (channel: ObjectIdentifier, handler: RedisCommandHandler)?
    private let commandDuration: Timer?
    /// Sent on every new connection before any other command (for example `SCRIPT LOAD`).
    private let setupCommands: [RedisCommand]
    /// Posts made while the first connection is being opened (a Redis Cluster
    /// client opens a master's connection when it first reads the map, and a
    /// post may come right then): written, in order, when it is ready; failed
    /// if it fails. Bounded by ``maxHeldPostBytes``; later posts fail at once.
    nonisolated(unsafe) private var heldPosts: [(command: RedisCommand, onFailure: @Sendable (RedisError) -> Void)] = []
    nonisolated(unsafe) private var heldPostBytes = 0
    /// Bytes of posts written and not answered yet (bounded by ``RedisConfiguration/maxPostBytesInFlight``).
    package nonisolated let postLedger = PostLedger()
    /// Most bytes of posts held while the first connection opens.
    static let maxHeldPostBytes = 1 << 20

    package nonisolated var unownedExecutor: UnownedSerialExecutor {
        eventLoop.executor.asUnownedSerialExecutor()
    }

    /// Creates a connection; nothing happens until ``run()``.
    /// - Parameters:
    ///   - configuration: where Redis is and how to behave when it goes away.
    ///   - eventLoop: the loop that owns the socket and runs this actor.
    ///   - logger: receives connect, disconnect and reconnect events.
    package init(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next(),
        logger: Logger = Logger(label: "clusterws.redis"),
        commandDuration: Timer? = nil,
        reconnects: Counter? = nil,
        setupCommands: [RedisCommand] = []
    ) {
        self.setupCommands = setupCommands
        self.commandDuration = commandDuration
        self.link.reconnects = reconnects
        self.configuration = configuration
        self.eventLoop = eventLoop
        var logger = logger
        logger[metadataKey: "redis.address"] = "\(configuration.address)"
        self.logger = logger
    }

    /// Connects, and reconnects whenever the connection drops, until the task
    /// is cancelled or a graceful shutdown drains it. Returning means stopped.
    package func run() async throws {
        await runConnectionLoop()
    }

    /// Like ``run()``, but a graceful shutdown of the surrounding service group
    /// does not stop it: only ``shutdown()`` or cancellation does.
    package func runUntilShutdown() async {
        await runConnectionLoop(followGracefulShutdown: false)
    }

    /// Shuts down gracefully: new commands fail with ``RedisError/shutdown``,
    /// commands already written still get their replies, then the socket
    /// closes and ``run()`` returns. A graceful shutdown of the service group
    /// does the same.
    package func shutdown() {
        beginShutdown()
    }

    /// Sends one command and returns its reply.
    /// - Parameter timeout: overrides ``RedisConfiguration/commandTimeout``
    ///   (for blocking commands such as `XREADGROUP ... BLOCK`).
    /// - Throws: ``RedisError/reply(_:)`` for an error reply; see the type's
    ///   documentation for what happens while disconnected.
    ///
    /// On the connection's own event loop with the link up (a connection
    /// handler's task on its loop), the command is written and its reply
    /// awaited without a hop to the actor and back.
    package nonisolated func send(_ command: RedisCommand, timeout: Duration? = nil) async throws -> RedisValue {
        if eventLoop.inEventLoop, let reply = submitIfReady(command, timeout: timeout) {
            guard let commandDuration else { return try await reply.get() }
            let start = NIODeadline.now()
            defer { commandDuration.recordNanoseconds((NIODeadline.now() - start).nanoseconds) }
            return try await reply.get()
        }
        return try await sendWaitingForLink(command, timeout: timeout)
    }

    /// Writes `command` if the link is up; its reply's future, or `nil` to take the waiting path.
    /// On the connection's loop only.
    private nonisolated func submitIfReady(_ command: RedisCommand, timeout: Duration?) -> EventLoopFuture<RedisValue>? {
        eventLoop.assertInEventLoop()
        guard case .send(let channel) = link.readiness else { return nil }
        let promise = eventLoop.makePromise(of: RedisValue.self)
        let deadline = NIODeadline.now() + (timeout ?? configuration.commandTimeout).timeAmount
        submit(on: channel, RedisRequest(command: command, promise: promise, deadline: deadline))
        scheduleFlush(channel)
        return promise.futureResult
    }

    private func sendWaitingForLink(_ command: RedisCommand, timeout: Duration?) async throws -> RedisValue {
        let channel = try await readyChannel()
        let promise = eventLoop.makePromise(of: RedisValue.self)
        let deadline = NIODeadline.now() + (timeout ?? configuration.commandTimeout).timeAmount
        submit(on: channel, RedisRequest(command: command, promise: promise, deadline: deadline))
        scheduleFlush(channel)
        guard let commandDuration else { return try await promise.futureResult.get() }
        let start = NIODeadline.now()
        defer { commandDuration.recordNanoseconds((NIODeadline.now() - start).nanoseconds) }
        return try await promise.futureResult.get()
    }

    /// Whether more than ``RedisConfiguration/postPacingBytes`` of posts
    /// await their answers here (a pacing caller then awaits ``waitForPostRoom()``).
    package nonisolated var isPostBacklogged: Bool { postLedger.bytes > configuration.postPacingBytes }

    /// Returns once at most ``RedisConfiguration/postPacingBytes`` of posts
    /// await their answers on this connection: `sender.post` waits here
    /// while Redis falls behind, so its caller slows down (and its socket's
    /// reads with it) instead of its posts failing at ``RedisConfiguration/maxPostBytesInFlight``.
    package nonisolated func waitForPostRoom() async {
        await postLedger.waitUntil(atMost: configuration.postPacingBytes)
    }

    /// Writes `command` without waiting for its reply, in call order with the
    /// caller's other commands on this connection (the write is queued on the
    /// connection's event loop at once).
    ///
    /// Nothing waits for a reconnection: while disconnected or shutting down the
    /// command is not sent and `onFailure` gets the reason. An error reply, a
    /// timeout or a dropped connection also go to `onFailure` (on the event loop).
    ///
    /// On the connection's own event loop (a connection handler's task runs on
    /// its loop) the command is queued at once, without a hop; a caller stays on
    /// one executor, so its posts keep their order.
    ///
    /// Its bytes count as in flight from this call on (see ``isPostBacklogged``),
    /// so a caller that paces sees its own posts at once, from any thread. Past
    /// ``RedisConfiguration/maxPostBytesInFlight`` it fails at once with
    /// ``RedisError/backlogFull``, on the caller's thread.
    package nonisolated func post(_ command: RedisCommand, onFailure: @escaping @Sendable (RedisError) -> Void) {
        guard postLedger.take(command.bytes.readableBytes, limit: configuration.maxPostBytesInFlight) else {
            return onFailure(.backlogFull)
        }
        if eventLoop.inEventLoop { return postNow(command, onFailure: onFailure) }
        eventLoop.execute { self.postNow(command, onFailure: onFailure) }
    }

    /// On the connection's loop only.
    private nonisolated func postNow(_ command: RedisCommand, onFailure: @escaping @Sendable (RedisError) -> Void) {
        let channel: any Channel
        let bytes = command.bytes.readableBytes
        switch link.readiness {
        case .send(let ready): channel = ready
        case .fail(let error):
            postLedger.release(bytes)
            return onFailure(error)
        case .wait:
            guard link.generation == 0, link.lastError == nil, !link.isShuttingDown,
                  heldPostBytes + bytes <= Self.maxHeldPostBytes else {
                postLedger.release(bytes)
                return onFailure(link.lastError ?? .notConnected)
            }
            heldPosts.append((command, onFailure))
            heldPostBytes += bytes
            return
        }
        write(command, on: channel, onFailure: onFailure)
    }

    /// Writes a post whose bytes ``post(_:onFailure:)`` counted in; its answer gives them back.
    private nonisolated func write(_ command: RedisCommand, on channel: any Channel,
                                   onFailure: @escaping @Sendable (RedisError) -> Void) {
        submit(on: channel, RedisRequest(post: command, ledger: postLedger, onFailure: onFailure,
                                    deadline: NIODeadline.now() + configuration.commandTimeout.timeAmount))
        scheduleFlush(channel)
    }

    /// Sends many commands with one flush and returns each one's outcome, in order.
    ///
    /// One failing command (an error reply) does not fail the others. The
    /// batch is written as one buffer and completes with one promise; if the
    /// connection drops or the batch times out, every entry carries that error.
    package func send(batch commands: [RedisCommand]) async throws -> [Result<RedisValue, RedisError>] {
        guard !commands.isEmpty else { return [] }
        let channel = try await readyChannel()
        let promise = eventLoop.makePromise(of: [RedisValue].self)
        let deadline = NIODeadline.now() + configuration.commandTimeout.timeAmount
        submit(on: channel, RedisRequest(batch: commands, promise: promise, deadline: deadline))
        scheduleFlush(channel)
        let replies: [RedisValue]
        do {
            replies = try await promise.futureResult.get()
        } catch {
            let failure = error as? RedisError ?? .connectionLost
            return Array(repeating: .failure(failure), count: commands.count)
        }
        return Self.results(replies, for: commands)
    }

    /// Regroups a batch's replies per command: a command answered with several
    /// replies (SUBSCRIBE) gets its last one; an error reply becomes a failure.
    private static func results(_ replies: [RedisValue], for commands: [RedisCommand]) -> [Result<RedisValue, RedisError>] {
        var results: [Result<RedisValue, RedisError>] = []
        results.reserveCapacity(commands.count)
        var index = 0
        for command in commands {
            index += command.replyCount
            // A push-only command (no reply of its own) gets `.null`.
            guard command.replyCount > 0, index > 0, index <= replies.count else {
                results.append(command.replyCount == 0 ? .success(.null) : .failure(.protocolError("missing reply")))
                continue
            }
            switch replies[index - 1] {
            case .error(let message): results.append(.failure(.reply(message)))
            case let value: results.append(.success(value))
            }
        }
        return results
    }

    /// Waits until the connection is up and has connected more than
    /// `generation` times (see ``connectionCount``).
    package func waitUntilConnected(after generation: Int = 0, timeout: Duration) async throws {
        try await waitForConnection(after: generation, timeout: timeout)
    }

    /// How many times this client has connected (1 after the first connect).
    package var connectionCount: Int { link.generation }

    /// Writes made while this job runs are flushed together once it and the
    /// jobs queued behind it have run.
    private nonisolated func scheduleFlush(_ channel: any Channel) {
        guard !flushScheduled else { return }
        flushScheduled = true
        eventLoop.execute {
            self.flushScheduled = false
            channel.flush()
        }
    }

    /// Writes `request` (no flush): straight to the channel's command handler on
    /// this loop, else through the channel.
    private nonisolated func submit(on channel: any Channel, _ request: RedisRequest) {
        if eventLoop.inEventLoop, channel.isActive, let handler, handler.channel == ObjectIdentifier(channel),
           handler.handler.submit(request) {
            return
        }
        channel.submit(request)
    }

    func openChannel() async throws -> any Channel {
        try await RedisConnector.connect(configuration: configuration, eventLoop: eventLoop)
    }

    func prepare(_ channel: any Channel) async throws {
        handler = (try? channel.pipeline.syncOperations.handler(type: RedisCommandHandler.self))
            .map { (ObjectIdentifier(channel), $0) }
        for future in RedisConnector.execute(setupCommands, on: channel, timeout: configuration.commandTimeout) {
            _ = try await future.get()
        }
        // Posts held during the first connect go first, with no suspension before the
        // link is marked ready (a post made meanwhile is held too, behind them).
        let held = heldPosts
        heldPosts = []
        heldPostBytes = 0
        for (command, onFailure) in held { write(command, on: channel, onFailure: onFailure) }
    }

    func connectFailed(_ error: RedisError) {
        let held = heldPosts
        heldPosts = []
        heldPostBytes = 0
        for (command, onFailure) in held {
            postLedger.release(command.bytes.readableBytes)
            onFailure(error)
        }
    }
}
