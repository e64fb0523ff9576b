import CoreMetrics
import Logging
import NIOCore
import ServiceLifecycle

/// The connection state shared by ``RedisConnection`` and ``RedisSubscriber``:
/// which channel is live, how many times it has (re)connected, and the tasks
/// waiting for the next connection.
struct RedisLink {
    enum Phase {
        case idle
        case connecting
        /// Connected; setup commands (a subscriber's re-subscribe) are running.
        case preparing(any Channel)
        /// Connected and set up; health checks are answered.
        case ready(any Channel)
        case disconnected
        case shutdown
    }

    var phase: Phase = .idle
    /// Bumped on every successful (re)connect, once the connection is ready.
    var generation = 0
    /// Why the last connect attempt failed, reported to commands that give up waiting.
    var lastError: RedisError?
    var shuttingDown = false
    /// Counts reconnects (every connect after the first), if set.
    var reconnects: Counter?
    private var waiters: [Int: (after: Int, continuation: CheckedContinuation<Void, any Error>)] = [:]
    private var nextWaiterID = 0

    var channel: (any Channel)? {
        switch phase {
        case .preparing(let channel), .ready(let channel): channel
        default: nil
        }
    }

    /// Set up, and its last health check (if any) was answered in time.
    var isReady: Bool {
        if case .ready(let channel) = phase { return channel.isActive }
        return false
    }

    mutating func addWaiter(after generation: Int, _ continuation: CheckedContinuation<Void, any Error>) -> Int {
        nextWaiterID += 1
        waiters[nextWaiterID] = (generation, continuation)
        return nextWaiterID
    }

    /// Fails one waiter (its deadline passed); a no-op if it was already resumed.
    mutating func failWaiter(_ id: Int, with error: RedisError) {
        waiters.removeValue(forKey: id)?.continuation.resume(throwing: error)
    }

    /// The connection is ready: resume everyone waiting for a generation below this one.
    mutating func markReady() {
        generation += 1
        if generation > 1 { reconnects?.increment() }
        lastError = nil
        for (id, waiter) in waiters where waiter.after < generation {
            waiters.removeValue(forKey: id)
            waiter.continuation.resume()
        }
    }

    mutating func failAllWaiters(with error: RedisError) {
        let all = waiters
        waiters.removeAll()
        for waiter in all.values { waiter.continuation.resume(throwing: error) }
    }
}

/// An actor that keeps one Redis connection alive on its own event loop:
/// connect, hand over, wait for the close, back off, reconnect.
protocol RedisReconnecting: Actor {
    var configuration: RedisConfiguration { get }
    nonisolated var eventLoop: any EventLoop { get }
    var logger: Logger { get }
    var link: RedisLink { get set }
    /// Opens and authenticates a channel with this client's handlers.
    func openChannel() async throws -> any Channel
    /// Runs once a channel is open, before waiters are told (re-subscribe here).
    func prepare(_ channel: any Channel) async throws
}

extension RedisReconnecting {
    /// Connects and reconnects until the task is cancelled or a graceful
    /// shutdown is triggered. On a graceful shutdown the live connection is
    /// drained with `QUIT` (Redis answers every pipelined command first).
    ///
    /// - Parameter followGracefulShutdown: `false` when an owner shuts the
    ///   client down itself, after it has used it to clean up (a cluster node
    ///   removes its relations after its own graceful shutdown began).
    func runConnectionLoop(followGracefulShutdown: Bool = true) async {
        guard followGracefulShutdown else { return await connectionLoop() }
        await withGracefulShutdownHandler {
            await self.connectionLoop()
        } onGracefulShutdown: {
            self.eventLoop.execute {
                self.assumeIsolated { client in client.beginShutdown() }
            }
        }
    }

    private func connectionLoop() async {
        var attempt = 0
        while !Task.isCancelled && !link.shuttingDown {
            link.phase = .connecting
            do {
                let channel = try await openChannel()
                link.phase = .preparing(channel)
                do {
                    try await prepare(channel)
                    link.phase = .ready(channel)
                    link.markReady()
                    attempt = 0
                    logger.debug("redis connected", metadata: ["redis.generation": "\(link.generation)"])
                } catch {
                    channel.close(promise: nil)
                    throw error
                }
                await waitForClose(channel)
                if Task.isCancelled || link.shuttingDown {
                    logger.debug("redis connection closed")
                } else {
                    logger.warning("redis connection lost; reconnecting")
                }
            } catch {
                let redisError = error as? RedisError ?? .connectionRefused("\(error)")
                link.lastError = redisError
                logger.log(level: attempt == 0 ? .warning : .debug, "redis connect failed",
                           metadata: ["error": "\(redisError)", "attempt": "\(attempt)"])
            }
            link.phase = .disconnected
            if Task.isCancelled || link.shuttingDown { break }
            let delay = configuration.reconnectBackoff.delay(attempt: attempt)
            attempt += 1
            do { try await Task.sleep(for: delay) } catch { break }
        }
        link.shuttingDown = true
        link.channel?.close(promise: nil)
        link.phase = .shutdown
        link.failAllWaiters(with: .shutdown)
    }

    /// Waits until `channel` closes, checking meanwhile that Redis still
    /// answers: a peer that vanished without a FIN or RST (a dead host, a NAT
    /// that forgot the flow) is only noticed by a `PING` that gets no reply.
    private func waitForClose(_ channel: any Channel) async {
        let interval = configuration.healthCheckInterval
        let timeout = configuration.healthCheckTimeout
        let logger = self.logger
        await withTaskCancellationHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { try? await channel.closeFuture.get() }
                if let interval {
                    group.addTask { await Self.checkHealth(of: channel, every: interval, timeout: timeout, logger: logger) }
                }
                await group.next()
                group.cancelAll()
            }
        } onCancel: {
            channel.close(promise: nil)
        }
    }

    /// Pings `channel` every `interval` until it closes; one `PING` without a
    /// reply within `timeout` closes it (the reconnect loop takes over).
    private static func checkHealth(of channel: any Channel, every interval: Duration, timeout: Duration,
                                    logger: Logger) async {
        while channel.isActive {
            do { try await Task.sleep(for: interval) } catch { return }
            guard channel.isActive else { return }
            do {
                _ = try await RedisConnector.execute([RedisCommand("PING")], on: channel, timeout: timeout)[0].get()
            } catch RedisError.timeout {
                logger.warning("redis did not answer a health check in time; reconnecting",
                               metadata: ["timeout": "\(timeout)"])
                channel.close(promise: nil)
                return
            } catch {
                return  // the channel is closing anyway
            }
        }
    }

    /// Stops accepting commands, lets Redis answer everything already written
    /// (`QUIT` is queued behind it), then closes; ``run()`` returns after that.
    func beginShutdown() {
        guard !link.shuttingDown else { return }
        link.shuttingDown = true
        link.failAllWaiters(with: .shutdown)
        guard let channel = link.channel else { return }
        // QUIT is answered after every command already written, then Redis
        // closes the socket, which ends waitForClose. Close anyway if Redis is slow.
        _ = RedisConnector.execute([RedisCommand("QUIT")], on: channel, timeout: .seconds(1))
        let closer = channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in closer.cancel() }
    }

    /// The live channel, or waits for the next connection up to
    /// `disconnectedCommandWait`.
    func readyChannel() async throws -> any Channel {
        if link.shuttingDown { throw RedisError.shutdown }
        if let channel = link.channel, channel.isActive, link.generation > 0 { return channel }
        try await waitForConnection(after: link.generation, timeout: configuration.disconnectedCommandWait)
        guard let channel = link.channel else { throw link.lastError ?? .notConnected }
        return channel
    }

    /// Returns once the current connection (if any) has closed.
    func waitUntilDisconnected() async {
        try? await link.channel?.closeFuture.get()
    }

    /// Waits until the client has connected more than `generation` times.
    func waitForConnection(after generation: Int, timeout: Duration) async throws {
        if link.generation > generation, link.channel != nil { return }
        if link.shuttingDown { throw RedisError.shutdown }
        guard timeout > .zero else { throw link.lastError ?? .notConnected }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let id = link.addWaiter(after: generation, continuation)
            eventLoop.scheduleTask(in: timeout.timeAmount) {
                self.assumeIsolated { client in
                    client.link.failWaiter(id, with: client.link.lastError ?? .notConnected)
                }
            }
        }
    }
}
