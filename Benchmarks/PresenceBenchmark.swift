import ArgumentParser
import ClusterWS
import ClusterWSPublishAPI
import EmbeddedRedis
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The cost of room presence (joins and leaves per second with it off and
/// on) and of the HTTP publish API (publishes per second through it and
/// through the Swift API), two nodes in this process on one Redis.
struct PresenceBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "presence",
        abstract: "Joins/leaves per second with presence off vs on; publishes per second over HTTP vs the Swift API.")

    @Option(help: "Connections on node a (each its own uid).")
    var connections = 500

    @Option(help: "Join + leave rounds over every connection.")
    var rounds = 10

    @Option(help: "Publishes per API run.")
    var publishes = 20_000

    @Option(help: "Concurrent callers (tasks, or HTTP connections at a time).")
    var concurrency = 16

    func run() async throws {
        bootstrapQuietLogging()
        let redis = try await RedisEndpoint.fromEnvironment()
        defer { redis.embedded?.terminate() }
        var joins = ResultTable(title: "Room joins and leaves, \(connections) connections on node a, \(rounds) rounds, \(concurrency) at a time",
                                columns: ["presence.rooms", "joins + leaves/s", "events seen on node b", "expected"])
        var publishing = ResultTable(title: "Publishes to one user on node b, from node a (\(publishes) per run, \(concurrency) at a time)",
                                     columns: ["API", "publishes/s", "delivered"])
        for presence in [false, true] {
            try await withNodes(redis.url, namespace: "bench-presence-\(presence)", presence: presence) { a, b, fds, received in
                let listener = presence ? try await b.presenceEvents(room: "r") : nil
                let events = Atomic<Int>(0)
                let counting = Task { if let listener { for await _ in listener { events.add(1, ordering: .relaxed) } } }
                defer { counting.cancel() }
                let clock = ContinuousClock()
                let start = clock.now
                for round in 0..<rounds {
                    progress("presence \(presence ? "on" : "off"): round \(round + 1)/\(rounds)")
                    try await forEach(fds) { fd in try await a.join(fd, room: "r") }
                    try await forEach(fds) { fd in try await a.leave(fd, room: "r") }
                }
                let seconds = (clock.now - start).seconds
                let expected = presence ? 2 * fds.count * rounds : 0
                if presence {
                    let deadline = clock.now + .seconds(10)
                    while events.load(ordering: .relaxed) < expected, clock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
                }
                joins.add(presence ? "on" : "off", (Double(2 * fds.count * rounds) / seconds).grouped,
                          "\(events.load(ordering: .relaxed))", "\(expected)")
                guard presence else { return }
                // The publish API, on the same nodes: Swift, then HTTP (a new connection per request).
                let api = try PublishAPI(node: a, configuration: .init(apiKeys: ["bench-key"]))
                a.setHTTPResponder { request in await api.respond(to: request) ?? .text("no\n", status: .notFound) }
                let port = try await a.waitUntilListening()
                for kind in ["Swift sender.publish", "HTTP POST /api/publish"] {
                    progress("publish: \(kind)")
                    received.value.store(0, ordering: .relaxed)
                    let begin = clock.now
                    try await forEach(Array(0..<publishes)) { index in
                        if kind.hasPrefix("Swift") {
                            _ = try await a.sender.publish(.text("p\(index)"), to: .user("target"))
                        } else {
                            let status = try await httpPost(port: port, path: "/api/publish", key: "bench-key",
                                                            body: #"{"uid":"target","text":"p\#(index)"}"#)
                            guard status == 200 else { throw BenchmarkError("HTTP \(status)") }
                        }
                    }
                    let deadline = clock.now + .seconds(10)
                    while received.value.load(ordering: .relaxed) < publishes, clock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
                    let rate = Double(publishes) / (clock.now - begin).seconds
                    publishing.add(kind, rate.grouped, "\(received.value.load(ordering: .relaxed))/\(publishes)")
                }
            }
        }
        joins.notes = [
            "Each round joins every connection to room r, then makes each leave (the application's node.join / node.leave calls).",
            "Presence on: each join or leave is also a script on the room's member hash that publishes the per-user event;",
            "node b's presenceEvents listener counts them (every connection is its own user: one event per call).",
        ]
        publishing.notes = [
            "Swift: a.sender.publish(.text, to: .user) awaited by each of the callers. HTTP: each caller POSTs the same JSON body",
            "with an API key over a new TCP connection per request (the node's own HTTP port answers one request per connection).",
            "Delivered: frames received by the user's client on node b. Nodes, Redis and clients share the machine.",
        ]
        print(joins.render())
        print(publishing.render())
    }

    /// Runs `body` on `items`, `concurrency` at a time.
    private func forEach<T: Sendable>(_ items: [T], _ body: @escaping @Sendable (T) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            var iterator = items.makeIterator()
            for _ in 0..<concurrency {
                guard let item = iterator.next() else { break }
                group.addTask { try await body(item) }
            }
            while try await group.next() != nil {
                if let item = iterator.next() { group.addTask { try await body(item) } }
            }
        }
    }

    /// Two nodes, `connections` clients on a (their fds), one client `target` on b counting what it receives.
    private func withNodes(_ url: String, namespace: String, presence: Bool,
                           _ body: (ClusterNode, ClusterNode, [DistributedFD], Count) async throws -> Void) async throws {
        let fds = Mutex<[DistributedFD]>([])
        func node(_ id: String) throws -> ClusterNode {
            var configuration = ClusterConfiguration(redisURL: .init(url), serverID: id, namespace: namespace,
                                                     webSocket: .init(keepalive: .disabled, maxMessagesPerSecond: nil))
            configuration.presence.rooms = presence
            var logger = Logger(label: "bench.node")
            logger.logLevel = .error
            let node = try ClusterNode(configuration: configuration, logger: logger)
            node.webSocket("/ws", authenticate: { $0.queryParameter("uid") }) { client in
                fds.withLock { $0.append(client.fd) }
                for await _ in client.messages {}
            }
            return node
        }
        let a = try node("a"), b = try node("b")
        let group = ServiceGroup(configuration: .init(services: [a, b], logger: Logger(label: "bench")))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let portA = try await a.waitUntilListening()
            let portB = try await b.waitUntilListening()
            // Raw WebSocket clients (no subprotocol: these nodes keep no history).
            var channels: [any Channel] = []
            let ignored = Count()
            for index in 0..<connections {
                channels.append(try await connectWebSocketClient(port: portA, path: "/ws?uid=u\(index)") { upgraded in
                    FrameCounter(count: ignored, upgraded: upgraded)
                })
            }
            let received = Count()
            channels.append(try await connectWebSocketClient(port: portB, path: "/ws?uid=target") { upgraded in
                FrameCounter(count: received, upgraded: upgraded)
            })
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(30)
            while fds.withLock({ $0.count }) < connections + 1, clock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            while try await !a.relations.isOnline(uid: "target"), clock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            let mine = fds.withLock { $0 }.filter { $0.node == "a" }
            try await body(a, b, mine, received)
            for channel in channels { channel.close(promise: nil) }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }
}

/// Counts the frames a raw client receives.
final class FrameCounter: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let count: Count
    let upgraded: EventLoopPromise<Void>
    var reader = ClientFrameReader()

    init(count: Count, upgraded: EventLoopPromise<Void>) {
        self.count = count
        self.upgraded = upgraded
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if reader.feed(&incoming) { upgraded.succeed() }
        while reader.next() != nil { count.value.add(1, ordering: .relaxed) }
        reader.compact()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        upgraded.fail(error)
        context.close(promise: nil)
    }
}

/// A count shared between tasks.
final class Count: Sendable {
    let value = Atomic<Int>(0)
}

/// One HTTP/1.1 POST on a new connection; the status code.
func httpPost(port: Int, path: String, key: String, body: String) async throws -> Int {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
        }
    return try await channel.executeThenClose { inbound, outbound in
        let bytes = body.utf8.count
        try await outbound.write(ByteBuffer(string: "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(key)\r\n"
            + "Content-Type: application/json\r\nContent-Length: \(bytes)\r\n\r\n\(body)"))
        var response = ByteBuffer()
        for try await chunk in inbound {
            response.writeImmutableBuffer(chunk)
            if let text = response.getString(at: response.readerIndex, length: min(response.readableBytes, 16)), text.count >= 12 {
                return Int(text.dropFirst(9).prefix(3)) ?? 0
            }
        }
        return 0
    }
}
