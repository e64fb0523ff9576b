import NIOCore
import NIOPosix

/// Opens one Redis connection: TCP connect, pipeline set-up, `AUTH`, `SELECT`.
enum RedisConnector {
    /// Connects to `configuration`'s server on `eventLoop` and authenticates.
    ///
    /// - Parameter pushSink: set for a subscriber connection; receives its
    ///   `message`/`pmessage` pushes on the event loop.
    /// - Throws: ``RedisError/connectionRefused(_:)``,
    ///   ``RedisError/connectTimeout(_:)``, ``RedisError/authenticationFailed(_:)``
    ///   or the error of `SELECT`.
    static func connect(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop,
        pushSink: (@Sendable (RedisPubSubMessage) -> Void)? = nil
    ) async throws -> any Channel {
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout.timeAmount)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let decoder = HiredisReplyDecoder(maxReplyBytes: configuration.maxReplyBytes,
                                                            onReplyTooLarge: configuration.hooks.replyTooLarge,
                                                            pushSink: pushSink, allocator: channel.allocator) else {
                        throw RedisError.protocolError("hiredis could not allocate a reply reader")
                    }
                    try channel.pipeline.syncOperations.addHandlers(decoder, RedisCommandHandler(pushSink: pushSink))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: configuration.host, port: configuration.port).get()
        } catch ChannelError.connectTimeout {
            throw RedisError.connectTimeout(configuration.address)
        } catch {
            throw RedisError.connectionRefused("\(configuration.address): \(error)")
        }
        do {
            try await handshake(channel: channel, configuration: configuration)
        } catch {
            channel.close(promise: nil)
            throw error
        }
        return channel
    }

    private static func handshake(channel: any Channel, configuration: RedisConfiguration) async throws {
        var commands: [RedisCommand] = []
        if let password = configuration.password {
            if let username = configuration.username {
                commands.append(RedisCommand("AUTH", .string(username), .string(password)))
            } else {
                commands.append(RedisCommand("AUTH", .string(password)))
            }
        }
        if configuration.database != 0 {
            commands.append(RedisCommand("SELECT", .integer(configuration.database)))
        }
        guard !commands.isEmpty else { return }
        let replies = execute(commands, on: channel, timeout: configuration.connectTimeout)
        for (index, reply) in replies.enumerated() {
            do {
                _ = try await reply.get()
            } catch RedisError.reply(let message) where index == 0 && configuration.password != nil {
                throw RedisError.authenticationFailed(message)
            }
        }
    }

    /// Writes `commands` to `channel` with one flush and returns their replies.
    static func execute(
        _ commands: [RedisCommand], on channel: any Channel, timeout: Duration
    ) -> [EventLoopFuture<RedisValue>] {
        let deadline = NIODeadline.now() + timeout.timeAmount
        let futures = commands.map { command in
            let promise = channel.eventLoop.makePromise(of: RedisValue.self)
            channel.submit(RedisRequest(command: command, promise: promise, deadline: deadline))
            return promise.futureResult
        }
        channel.flush()
        return futures
    }
}
