package import CoreMetrics
package import Logging
package import NIOCore

/// One command connection to one Redis server per event loop, so the sends
/// and posts of a connection handler (whose task runs on its connection's
/// loop) are written by that same loop: no hop to another thread and back,
/// no wake-up of another loop per message. A caller on no loop of the group
/// uses the first connection.
///
/// Order: a caller stays on one executor, so its commands all go through one
/// connection, in call order. Commands of different callers were never
/// ordered with each other.
package final class LoopConnections: RedisCommands {
    /// The connection of the group's first loop, and of callers on no loop.
    package let primary: RedisConnection
    private let others: [RedisConnection]

    /// A connection per loop of `loops` (at least one).
    package init(configuration: RedisConfiguration, loops: any EventLoopGroup, logger: Logger,
                 commandDuration: Timer? = nil, reconnects: Counter? = nil, setupCommands: [RedisCommand] = []) {
        let connections = loops.makeIterator().map { loop in
            RedisConnection(configuration: configuration, eventLoop: loop, logger: logger, commandDuration: commandDuration,
                            reconnects: reconnects, setupCommands: setupCommands)
        }
        primary = connections.first ?? RedisConnection(configuration: configuration, eventLoop: loops.next(), logger: logger,
                                                       commandDuration: commandDuration, reconnects: reconnects,
                                                       setupCommands: setupCommands)
        others = Array(connections.dropFirst())
    }

    /// Every connection.
    package var all: [RedisConnection] { [primary] + others }

    /// The connection of the calling thread's loop (the first one off the loops).
    package var current: RedisConnection {
        if primary.eventLoop.inEventLoop { return primary }
        for connection in others where connection.eventLoop.inEventLoop { return connection }
        return primary
    }

    package func send(_ command: RedisCommand, timeout: Duration?) async throws -> RedisValue {
        try await current.send(command, timeout: timeout)
    }

    package func send(batch commands: [RedisCommand]) async throws -> [Result<RedisValue, RedisError>] {
        try await current.send(batch: commands)
    }

    package func post(_ command: RedisCommand, onFailure: @escaping @Sendable (RedisError) -> Void) {
        current.post(command, onFailure: onFailure)
    }

    /// The calling loop's connection has more posts unanswered than its pacing mark.
    package var isPostBacklogged: Bool { current.isPostBacklogged }

    /// Waits on the calling loop's connection (a caller keeps its executor, so
    /// it posts on the connection it waited for).
    package func waitForPostRoom() async {
        await current.waitForPostRoom()
    }

    package func runUntilShutdown() async {
        await withTaskGroup(of: Void.self) { group in
            for connection in all { group.addTask { await connection.runUntilShutdown() } }
        }
    }

    package func shutdown() async {
        for connection in all { await connection.shutdown() }
    }

    package func waitUntilReady(timeout: Duration) async throws {
        for connection in all { try await connection.waitUntilReady(timeout: timeout) }
    }
}
