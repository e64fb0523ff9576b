import ArgumentParser

/// `swift run -c release Benchmarks <scenario>`: every scenario starts what it
/// needs (an embedded redis-server unless `REDIS_URL` is set) and prints a table.
@main
struct Benchmarks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "ClusterWS benchmarks. Build with -c release; figures from debug builds mean nothing.",
        subcommands: [ClusterBenchmark.self, EchoServer.self, RedisBenchmark.self, TransportBenchmark.self, DriverBenchmark.self, RecoveryBenchmark.self, PresenceBenchmark.self, BenchmarkServer.self, LoadClients.self],
        defaultSubcommand: ClusterBenchmark.self
    )
}
