public import ArgumentParser
import ClusterWS
import EmbeddedRedis
import Foundation
public import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import UnixSignals

/// The seed's two-server verification, by one command: two cluster nodes
/// (server1 on 9502, server2 on 9504, like the seed's WS ports), one Redis
/// (embedded unless `REDIS_URL` is set), and a page on each node to try it.
@main
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "ClusterWS demo: two WebSocket nodes talking through Redis, with a page to try them.",
        discussion: """
            Starts an embedded redis-server on a free loopback port unless REDIS_URL is set, \
            then the nodes, and prints the URLs to open. Open one URL per node in two browser \
            tabs, connect as two users, and send between them. Ctrl-C shuts down gracefully: \
            sockets close with 1001 and the nodes' relations are removed from Redis.

            Users are taken from the `uid` query parameter: an INSECURE demo-only mode \
            (anyone can claim any uid); a warning is logged at start.
            """
    )

    @Option(name: .customLong("node"), help: ArgumentHelp(
        "A node as id=port; repeat for several (default: server1=9502 server2=9504, or $DEMO_NODES).",
        valueName: "id=port"))
    var nodes: [String] = []

    @Option(help: "Address the nodes listen on (default 127.0.0.1, or $DEMO_HOST).")
    var host: String?

    @Option(help: "Namespace of the demo's Redis keys and channels.")
    var namespace = "clusterws-demo"

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    @Flag(help: "Without REDIS_URL: start an embedded Redis Cluster (3 masters + 3 replicas) instead of one redis-server. With REDIS_URL, give it as redis+cluster://host:port,host:port.")
    var redisCluster = false

    func run() async throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "clusterws.demo")
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let environment = ProcessInfo.processInfo.environment
        let host = host ?? environment["DEMO_HOST"] ?? "127.0.0.1"
        let specs = try parseNodes(nodes.isEmpty ? (environment["DEMO_NODES"]?.split(separator: ",").map(String.init)
            ?? ["server1=9502", "server2=9504"]) : nodes)

        var embeddedCluster: RedisClusterProcess?
        let redis: RedisEndpoint
        if redisCluster, (environment["REDIS_URL"] ?? "").isEmpty {
            logger.info("starting an embedded Redis Cluster (3 masters + 3 replicas)")
            let cluster = try await RedisClusterProcess.start()
            embeddedCluster = cluster
            redis = RedisEndpoint(url: cluster.url, embedded: nil)
        } else {
            redis = try await RedisEndpoint.fromEnvironment()
        }
        defer {
            redis.embedded?.terminate()
            embeddedCluster?.terminate()
        }
        logger.info("redis", metadata: ["url": "\(redis.url)", "embedded": "\(redis.embedded != nil || embeddedCluster != nil)"])

        var demoNodes: [DemoNode] = []
        for (id, port) in specs {
            demoNodes.append(try DemoNode(id: id, host: host, port: port, redisURL: redis.url, namespace: namespace,
                                          metrics: registry, logger: logger))
        }
        let group = ServiceGroup(configuration: .init(
            services: demoNodes.map { $0.node },
            gracefulShutdownSignals: [.sigint, .sigterm],
            logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            for demo in demoNodes {
                let port = try await demo.node.waitUntilListening()
                try await demo.announce(port: port)
                say("\(demo.node.id): open http://\(host == "0.0.0.0" ? "127.0.0.1" : host):\(port)/   (WebSocket ws://\(host):\(port)/ws?uid=…)")
            }
            if let first = demoNodes.first {
                let port = try await first.node.waitUntilListening()
                let base = "http://\(host == "0.0.0.0" ? "127.0.0.1" : host):\(port)"
                say("publish from any backend: curl -H 'Authorization: Bearer \(DemoNode.apiKey)' -d '{\"uid\":\"bob\",\"text\":\"hi from curl\"}' \(base)/api/publish")
                say("room members:             curl -H 'Authorization: Bearer \(DemoNode.apiKey)' '\(base)/api/presence?room=lobby'")
            }
            say("Ctrl-C to stop.")
            try await tasks.waitForAll()
        }
        logger.info("demo stopped")
    }

    private func parseNodes(_ items: [String]) throws -> [(String, Int)] {
        try items.map { item in
            let parts = item.split(separator: "=")
            guard parts.count == 2, let port = Int(parts[1]), (0...65535).contains(port), !parts[0].isEmpty else {
                throw ValidationError("--node takes id=port, e.g. server1=9502 (got '\(item)')")
            }
            return (String(parts[0]), port)
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// Prints a line to standard output at once (it may be a pipe or a file).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
