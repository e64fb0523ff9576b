import ArgumentParser
import ClusterWS
import EmbeddedRedis
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Pipelined PUBLISH throughput of ClusterWS's Redis client with one
/// subscriber receiving every message, beside `redis-benchmark` on the same
/// server in the same run.
struct RedisBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redis",
        abstract: "PUBLISH throughput of our Redis client vs redis-benchmark (-P 1 and -P 16), one subscriber."
    )

    @Option(help: "Messages per run.")
    var messages: Int = 400_000

    @Option(help: "Payload size in bytes.")
    var payloadSize: Int = 64

    @Option(help: "Concurrent senders (our tasks; redis-benchmark's -c).")
    var clients: Int = 50

    @Option(help: "Pipeline depths to run, comma-separated.")
    var depths: String = "1,16"

    @Flag(help: "Skip the redis-benchmark baseline (for profiling our side alone).")
    var skipBaseline = false

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func run() async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let endpoint = try await RedisEndpoint.fromEnvironment()
        defer { endpoint.embedded?.terminate() }
        progress("redis at \(endpoint.url)\(endpoint.embedded == nil ? "" : " (embedded)")")

        let configuration = try RedisConfiguration(url: endpoint.url)
        let loops = MultiThreadedEventLoopGroup.singleton
        let publisher = RedisConnection(configuration: configuration, eventLoop: loops.next())
        let subscriber = RedisSubscriber(configuration: configuration, eventLoop: loops.next(), buffer: .init(messages: 1 << 22, bytes: 1 << 30))
        let received = TargetCounter()
        let payload = String(repeating: "x", count: payloadSize)
        let channel = "bench:publish"

        var table = ResultTable(
            title: "Redis PUBLISH, one subscriber receiving every message (\(messages) msgs, \(payloadSize) B payload, \(clients) senders)",
            columns: ["client", "pipeline", "delivered msgs/s", "sent req/s (tool's own figure)", "received", "ratio"])

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await publisher.run() }
            group.addTask { try await subscriber.run() }
            group.addTask {
                for await _ in subscriber.messages { received.increment() }
            }
            defer { group.cancelAll() }
            try await subscriber.waitUntilConnected(timeout: .seconds(5))
            try await subscriber.subscribe([channel])

            for depth in depths.split(separator: ",").compactMap({ Int($0) }) {
                var baseline = Double.nan
                var reported = Double.nan
                var baselineReceived = 0
                if !skipBaseline {
                    (baseline, reported, baselineReceived) = try await RedisBenchmarkTool.delivered(
                        configuration: configuration, received: received, channel: channel, payload: payload,
                        messages: messages, clients: clients, pipeline: depth)
                }

                progress("ClusterWS RedisConnection, \(clients) senders, \(depth == 1 ? "one command per await" : "batches of \(depth)")")
                received.reset(target: messages)
                let ours = try await publishThroughput(
                    publisher: publisher, received: received, channel: channel, payload: payload, depth: depth)
                table.add("ClusterWS", "\(depth)", ours.rate.grouped, "—", "\(ours.received)/\(messages)",
                          (ours.rate / baseline).fixed(2) + "×")
                table.add("redis-benchmark", "\(depth)", baseline.grouped, reported.grouped,
                          "\(baselineReceived)/\(messages)", "1.00×")
            }
        }
        table.notes = [
            "ClusterWS: \(clients) tasks share ONE pipelined connection; depth 1 = each task awaits every PUBLISH,",
            "depth 16 = each task sends batches of 16 with one flush. redis-benchmark: \(clients) connections.",
            "delivered msgs/s: from the first PUBLISH until our subscriber has received the last message, for both clients.",
            "ratio: delivered msgs/s over redis-benchmark's delivered msgs/s at the same pipeline depth.",
            "Dropped by the subscriber buffer: \(subscriber.droppedMessages).",
        ]
        print(json ? table.json() : table.render())
    }

    private func publishThroughput(
        publisher: RedisConnection, received: TargetCounter, channel: String, payload: String, depth: Int
    ) async throws -> (rate: Double, received: Int) {
        let clock = ContinuousClock()
        let start = clock.now
        let perClient = messages / clients
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<clients {
                let count = client == 0 ? perClient + messages % clients : perClient
                group.addTask {
                    let command = RedisCommand("PUBLISH", .string(channel), .string(payload))
                    var sent = 0
                    while sent < count {
                        let n = min(depth, count - sent)
                        if n == 1 {
                            _ = try await publisher.send(command)
                        } else {
                            _ = try await publisher.send(batch: Array(repeating: command, count: n))
                        }
                        sent += n
                    }
                }
            }
            try await group.waitForAll()
        }
        let complete = await received.reached(within: .seconds(30))
        let elapsed = clock.now - start
        let seconds = elapsed.seconds
        if !complete { progress("subscriber received only \(received.count) of \(messages)") }
        return (Double(received.count) / seconds, received.count)
    }
}
