public import ArgumentParser
import ClusterWS
import EmbeddedRedis
public import Logging
import NIOCore

/// The ClusterWS demo. For now it shows the Redis layer end to end: a PING
/// and a publish/subscribe round trip through ClusterWS's own client.
@main
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "ClusterWS demo: talks to Redis through ClusterWS's client.",
        discussion: """
            Uses REDIS_URL when it is set; otherwise starts an embedded redis-server \
            on a free loopback port and stops it on exit.
            """
    )

    @Option(help: "How many messages to publish in the round trip.")
    var messages: Int = 5

    @Option(help: "Log level (trace, debug, info, notice, warning, error).")
    var logLevel: Logger.Level = .info

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = logLevel
            return handler
        }
        let logger = Logger(label: "clusterws.demo")
        let endpoint = try await RedisEndpoint.fromEnvironment()
        defer { endpoint.embedded?.terminate() }
        logger.info("redis", metadata: ["url": "\(endpoint.url)", "embedded": "\(endpoint.embedded != nil)"])
        try await RedisRoundTrip.run(url: endpoint.url, messages: messages, logger: logger)
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
