import CoreMetrics
import Logging
import NIOCore
import ServiceLifecycle

/// An actor that keeps one Redis connection alive on its own event loop:
/// connect, hand over, wait for the close, back off, reconnect.
protocol RedisReconnecting: Actor {
    var configuration: RedisConfiguration { get }
    nonisolated var eventLoop: any EventLoop { get }
    var logger: Logger { get }
    var link: RedisLinkState<CheckedContinuation<Void, any Error>> { get set }
    /// Opens and authenticates a channel with this client's handlers.
    func openChannel() async throws -> any Channel
    /// Runs once a channel is open, before waiters are told (re-subscribe here).
    func prepare(_ channel: any Channel) async throws
    /// A connect attempt failed (also when ``prepare(_:)`` threw), or the
    /// client stopped (`.shutdown`).
    func connectFailed(_ error: RedisError)
}

extension RedisReconnecting {
    func connectFailed(_ error: RedisError) {}

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
        while !Task.isCancelled, link.connectStarted() {
            let attempt: Int
            do {
                let channel = try await openChannel()
                // A shutdown that came while connecting found no channel to drain: close this one.
                guard !link.isShuttingDown else {
                    channel.close(promise: nil)
                    break
                }
                link.connected(channel)
                do {
                    try await prepare(channel)
                    for waiter in link.prepared() { waiter.resume() }
                    configuration.hooks.linkChanged?(true)
                    logger.debug("redis connected", metadata: ["redis.generation": "\(link.generation)"])
                } catch {
                    channel.close(promise: nil)
                    throw error
                }
                await waitForClose(channel)
                configuration.hooks.linkChanged?(false)
                if Task.isCancelled || link.isShuttingDown {
                    logger.debug("redis connection closed")
                } else {
                    logger.warning("redis connection lost; reconnecting")
                }
                attempt = link.closed()
            } catch {
                let redisError = error as? RedisError ?? .connectionRefused("\(error)")
                attempt = link.failed(redisError)
                connectFailed(redisError)
                logger.log(level: attempt == 0 ? .warning : .debug, "redis connect failed",
                           metadata: ["error": "\(redisError)", "attempt": "\(attempt)"])
            }
            if Task.isCancelled || link.isShuttingDown { break }
            do { try await Task.sleep(for: configuration.reconnectBackoff.delay(attempt: attempt)) } catch { break }
        }
        let (channel, waiters) = link.stopped()
        channel?.close(promise: nil)
        for waiter in waiters { waiter.resume(throwing: RedisError.shutdown) }
        connectFailed(.shutdown)
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
        guard !link.isShuttingDown else { return }
        let (drain, waiters) = link.shutdownRequested()
        for waiter in waiters { waiter.resume(throwing: RedisError.shutdown) }
        guard let channel = drain else { return }
        // QUIT is answered after every command already written, then Redis
        // closes the socket, which ends waitForClose. Close anyway if Redis is slow.
        _ = RedisConnector.execute([RedisCommand("QUIT")], on: channel, timeout: .seconds(1))
        let closer = channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in closer.cancel() }
    }

    /// The live channel, or waits for the next connection up to
    /// `disconnectedCommandWait`.
    func readyChannel() async throws -> any Channel {
        switch link.readiness {
        case .send(let channel): return channel
        case .fail(let error): throw error
        case .wait: break
        }
        try await waitForConnection(after: link.generation, timeout: configuration.disconnectedCommandWait)
        guard case .send(let channel) = link.readiness else { throw link.lastError ?? .notConnected }
        return channel
    }

    /// Returns once the current connection (if any) has closed.
    func waitUntilDisconnected() async {
        try? await link.channel?.closeFuture.get()
    }

    /// Waits until the client has connected more than `generation` times.
    func waitForConnection(after generation: Int, timeout: Duration) async throws {
        if link.generation > generation, link.channel != nil { return }
        if link.isShuttingDown { throw RedisError.shutdown }
        guard timeout > .zero else { throw link.lastError ?? .notConnected }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let id = link.addWaiter(after: generation, continuation)
            eventLoop.scheduleTask(in: timeout.timeAmount) {
                self.assumeIsolated { client in
                    client.link.removeWaiter(id)?.resume(throwing: client.link.lastError ?? .notConnected)
                }
            }
        }
    }
}
