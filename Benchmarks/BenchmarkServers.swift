import Foundation
import ArgumentParser
import ClusterWS
import ClusterWSHummingbird
import EmbeddedRedis
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// `Benchmarks serve`: one WebSocket server in its own process, driven by line
/// commands, so its resident memory can be read from /proc on its own.
///
/// - prints `port <P>` once listening;
/// - `count`: replies `count <open connections>`;
/// - `broadcast <messages> <bytes>`: sends that many binary messages to every
///   connection, one broadcast call per message; replies `sent`.
struct BenchmarkServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve", abstract: "Benchmark server (internal).",
                                                    shouldDisplay: false)

    enum Kind: String, ExpressibleByArgument {
        /// ClusterWS's own listener.
        case clusterws
        /// ClusterWS's routes hosted by a Hummingbird application (ClusterWSHummingbird).
        case hosted
        /// A plain hummingbird-websocket server, the baseline.
        case hummingbird
        /// A whole ClusterNode (embedded Redis), every connection bound to its own uid.
        case node
    }

    @Option var kind: Kind

    @Option(help: "Node id (kind node).")
    var id = "bench"

    @Flag(help: "Kind node: forward every probe a client sends to the uid it names.")
    var forward = false

    enum Relay: String, ExpressibleByArgument {
        /// `try await sender.send(uid:)`: each message waits for Redis's answer.
        case send
        /// `await sender.post(uid:)`: queued in order, no waiting for Redis.
        case post
    }

    @Option(help: "Kind node: how the forwarder sends (send: awaits Redis; post: does not).")
    var relay: Relay = .post

    @Flag(help: "Kind node with --forward: forward from a handleMessages callback instead of a for-await loop per connection.")
    var callback = false

    @Flag(help: "Kind node: keep history of every user's messages (history.users).")
    var history = false

    func run() async throws {
        MallocCounter.start()  // counts allocations when the driver preloaded the interposer
        if ProcessInfo.processInfo.environment["BENCH_NIO_EXECUTOR"] == "1" {
            _ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        }
        var logger = Logger(label: "bench.server")
        // BENCH_LOG_LEVEL=info shows drops and limit closes while a benchmark runs.
        logger.logLevel = ProcessInfo.processInfo.environment["BENCH_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .error
        switch kind {
        case .clusterws: try await runClusterWS(logger: logger, hosted: false)
        case .hosted: try await runClusterWS(logger: logger, hosted: true)
        case .hummingbird: try await runHummingbird(logger: logger)
        case .node: try await runNode(logger: logger)
        }
    }

    private func runClusterWS(logger: Logger, hosted: Bool) async throws {
        let server = WebSocketServer(configuration: .init(port: 0, listen: !hosted), logger: logger)
        server.addRoute("/ws") { _ in }  // server push only: no task per connection
        try await withThrowingTaskGroup(of: Void.self) { group in
            if hosted {
                let app = Application(
                    router: Router(), server: .clusterWS(server),
                    configuration: .init(address: .hostname("127.0.0.1", port: 0), backlog: 4096),
                    services: [server],
                    onServerRunning: { channel in reply("port \(channel.localAddress?.port ?? 0)") },
                    logger: logger)
                group.addTask { try await app.runService(gracefulShutdownSignals: []) }
            } else {
                group.addTask { try await server.run() }
                reply("port \(try await server.waitUntilListening())")
            }
            // "broadcast": calls back to back (they coalesce into bursts); "paced": each awaited,
            // so one frame and one flush per connection each.
            await serveCommands(
                count: { server.connectionCount },
                broadcast: { payload in server.broadcast(.binary(payload)) },
                paced: { payload in await server.broadcastAndWait([.binary(payload)]) })
            group.cancelAll()
        }
    }

    private func runNode(logger: Logger) async throws {
        let redis = try await RedisEndpoint.fromEnvironment()
        defer { redis.embedded?.terminate() }
        // Load clients send far more than a person would: no per-connection rate limits here (neither
        // messages nor bytes: one sender of a blast can carry several MB in a second, and the default
        // 1 MiB/s byte limit closed one now and then, which showed as lost messages).
        var configuration = ClusterConfiguration(redisURL: .init(redis.url), serverID: id, namespace: "bench",
                                                 webSocket: .init(maxMessagesPerSecond: nil, maxBytesPerSecond: nil))
        configuration.history.users = history
        let node = try ClusterNode(configuration: configuration, logger: logger)
        if forward {
            // What a chat server does: each client's messages, in order, to the uid they name.
            let relay = self.relay
            let forwardOne: @Sendable (ClusterWS.WebSocketMessage) async -> Void = { message in
                guard let uid = Probe.target(of: message.data) else { return }
                switch relay {
                case .send: _ = try? await node.sender.send(uid: uid, message)
                case .post: try? await node.sender.post(uid: uid, message)
                }
            }
            if callback {
                node.webSocket("/ws", authenticate: node.insecureUIDFromQuery()) { socket in
                    socket.handleMessages(forwardOne)
                }
            } else {
                node.webSocket("/ws", authenticate: node.insecureUIDFromQuery()) { socket in
                    for await message in socket.messages { await forwardOne(message) }
                }
            }
        } else {
            node.webSocket("/ws", authenticate: node.insecureUIDFromQuery())
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await node.run() }
            reply("port \(try await node.waitUntilListening())")
            // "broadcast": postAll back to back; "paced": sendAll, each awaited (its PUBLISH answered).
            // Until the cleanup of closed connections has caught up, they still count.
            let sendAll: @Sendable (ByteBuffer) async -> Void = { payload in _ = try? await node.sender.sendAll(.binary(payload)) }
            let postAll: @Sendable (ByteBuffer) async -> Void = { payload in try? await node.sender.postAll(.binary(payload)) }
            let counters = node.counters
            await serveCommands(count: { max(node.connectionCount, node.registry.count) },
                                broadcast: postAll, paced: sendAll,
                                bound: { uid in (try? await node.relations.isOnline(uid: uid)) ?? false },
                                drops: {
                                    DropReason.allCases.compactMap { reason in
                                        let count = counters.dropped(reason)
                                        return count == 0 ? nil : "\(reason.rawValue)=\(count)"
                                    }.joined(separator: ",")
                                })
            group.cancelAll()
        }
    }

    private func runHummingbird(logger: Logger) async throws {
        let connections = HummingbirdConnections()
        let app = Application(
            router: Router(),
            server: .http1WebSocketUpgrade { request, _, _ in
                guard request.path == "/ws" else { return .dontUpgrade }
                return .upgrade([:]) { inbound, outbound, _ in
                    let id = await connections.add(outbound)
                    for try await _ in inbound {}
                    await connections.remove(id)
                }
            },
            configuration: .init(address: .hostname("127.0.0.1", port: 0), backlog: 4096),
            onServerRunning: { channel in reply("port \(channel.localAddress?.port ?? 0)") },
            logger: logger
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService(gracefulShutdownSignals: []) }
            // Its broadcast awaits every write: always paced.
            let broadcast: @Sendable (ByteBuffer) async -> Void = { payload in await connections.broadcast(payload) }
            await serveCommands(count: { await connections.count }, broadcast: broadcast, paced: broadcast)
            group.cancelAll()
        }
    }
}

/// Answers the driver's line commands until standard input closes:
/// `count` → `count <n>`; `usage` → this process's ``ProcessUsage`` line; `drops` →
/// `drops <reason>=<count>,…` (a node's drop counters since it started, `-` for none); `broadcast <messages> <bytes>` and `paced <messages> <bytes>` → `sent`
/// (each message a probe stamped when it is handed to the server);
/// `bound <uid prefix> <n>` → `bound yes` once uids prefix0…prefix(n-1) are all online.
private func serveCommands(
    count: @Sendable () async -> Int,
    broadcast: @Sendable (ByteBuffer) async -> Void,
    paced: @Sendable (ByteBuffer) async -> Void,
    bound: @Sendable (String) async -> Bool = { _ in false },
    drops: @Sendable () -> String = { "" }
) async {
    for await line in standardInputLines() {
        let words = line.split(separator: " ")
        switch words.first {
        case "count":
            reply("count \(await count())")
        case "usage":
            reply(ProcessUsage.current().line)
        case "heap":
            // Bytes malloc has handed out and not got back (a leak grows it; fragmentation does not).
            reply("heap \(HeapInUse.bytes() ?? -1)")
        case "drops":
            let list = drops()
            reply("drops " + (list.isEmpty ? "-" : list))
        case "broadcast", "paced":
            let (messages, size) = (Int(words[1]) ?? 0, Int(words[2]) ?? 0)
            let send = words.first == "broadcast" ? broadcast : paced
            // Each call timed: `sent <p50 µs> <p90 µs>` (what an awaiting caller waits per broadcast).
            var took: [Double] = []
            took.reserveCapacity(messages)
            let clock = ContinuousClock()
            for id in 0..<messages {
                let start = clock.now
                await send(Probe.payload(id: UInt64(id), size: size))
                took.append((clock.now - start).seconds * 1e6)
            }
            reply("sent \(Int(took.quantile(0.5))) \(Int(took.quantile(0.9)))")
        case "bound":
            let (prefix, total) = (String(words[1]), Int(words[2]) ?? 0)
            var all = true
            for index in 0..<total where !(await bound(prefix + String(index))) { all = false; break }
            reply(all ? "bound yes" : "bound no")
        default:
            reply("unknown")
        }
    }
}

/// The usual hummingbird-websocket pattern: an actor holding every outbound
/// writer, broadcasting with one awaited write per connection.
actor HummingbirdConnections {
    private var writers: [Int: WebSocketOutboundWriter] = [:]
    private var nextID = 0

    var count: Int { writers.count }

    func add(_ writer: WebSocketOutboundWriter) -> Int {
        nextID += 1
        writers[nextID] = writer
        return nextID
    }

    func remove(_ id: Int) { writers[id] = nil }

    func broadcast(_ payload: ByteBuffer) async {
        for writer in writers.values { try? await writer.write(.binary(payload)) }
    }
}
