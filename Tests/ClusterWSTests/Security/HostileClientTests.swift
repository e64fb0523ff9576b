@testable import ClusterWS
import EmbeddedRedis
import Logging
import NIOCore
import NIOPosix
import Dispatch
import Synchronization
import Testing

/// One node answering the internet, a hostile peer, and a healthy client
/// beside it. Every test asserts three things: the hostile input got its
/// answer (a typed error, an HTTP status or a close code), the healthy
/// client kept being served, and the process's RSS grew by less than the
/// stated budget. `make unit` runs this suite on its own, so the RSS figure
/// is this suite's alone; each test prints it.
@Suite("Hostile clients: nothing a peer sends stops a node or grows it without bound", .serialized, .timeLimit(.minutes(2)))
struct HostileClientTests {
    /// A node (and a second one, for cross-node paths) with a healthy client on node a.
    final class Setup: Sendable {
        let node: ClusterNode
        let other: ClusterNode
        let healthy: ClusterClient
        let redis: RedisServerProcess
        let ticks = Mutex(0)

        init(node: ClusterNode, other: ClusterNode, healthy: ClusterClient, redis: RedisServerProcess) {
            self.node = node
            self.other = other
            self.healthy = healthy
            self.redis = redis
        }

        var port: Int { get async throws { try await node.waitUntilListening() } }

        /// One message to the healthy client, through Redis from the other node; it must arrive.
        func tick() async throws {
            let number = ticks.withLock { value -> Int in
                value += 1
                return value
            }
            #expect(try await other.sender.send(uid: "healthy", .text("tick \(number)")) == 1)
            while true {
                let frame = try await healthy.next()
                if frame.text == "tick \(number)" { return }
            }
        }
    }

    private func withNode(
        _ name: String, budget: Int, pingHealthy: Bool = false,
        configure: (inout ClusterConfiguration) -> Void = { _ in },
        _ body: @escaping @Sendable (Setup) async throws -> Void
    ) async throws {
        try await withRedisServer { redis in
            func make(_ id: String) throws -> ClusterNode {
                var configuration = ClusterConfiguration(
                    redisURL: .init(redis.url), serverID: id, namespace: "hostile",
                    webSocket: WebSocketServerConfiguration(keepalive: .disabled, closeTimeout: .seconds(1),
                                                           maxOutboundBufferBytes: 256 * 1024))
                configuration.heartbeatInterval = .milliseconds(200)
                configuration.livenessWindow = .seconds(2)
                configure(&configuration)
                var logger = Logger(label: "test.hostile")
                logger.logLevel = .critical
                let node = try ClusterNode(configuration: configuration, logger: logger)
                node.webSocket("/ws", authenticate: node.insecureUIDFromQuery()) { client in
                    try? await client.socket.send(.text("ready \(client.fd)"))
                    for await message in client.messages {
                        // Hostile messages name targets; the node's answers are typed errors, sent back.
                        do {
                            _ = try await node.sender.send(uid: message.text, .text("relayed"))
                        } catch {
                            try? await client.socket.send(.text("error: \(error)"))
                        }
                    }
                }
                return node
            }
            let node = try make("a")
            let other = try make("b")
            let harness = ServiceGroupHarness(node, other)
            try await harness.start()
            _ = try await node.waitUntilListening()
            _ = try await other.waitUntilListening()
            let healthy = try await ClusterClient.connect(node, uid: "healthy")
            let setup = Setup(node: node, other: other, healthy: healthy, redis: redis)
            // With server keepalive on, the healthy client shows it is alive (any frame counts).
            let pinger = Task {
                while pingHealthy, !Task.isCancelled {
                    try? await healthy.raw.send(Wire.frame(Wire.ping, Array("alive".utf8)))
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
            defer { pinger.cancel() }
            try await setup.tick()
            let meter = RSSMeter.start()
            do {
                try await within(.seconds(60), name) { try await body(setup) }
            } catch {
                _ = meter.stop()
                try? await harness.shutdownGracefully()
                throw error
            }
            try await setup.tick()
            let growth = meter.stop()
            print("hostile \(name): peak RSS growth \(growth / 1024) KiB (budget \(budget / 1024) KiB)")
            #expect(growth < budget, "RSS grew \(growth) bytes; the budget is \(budget)")
            healthy.close()
            try await harness.shutdownGracefully()
        }
    }

    // MARK: Names and targets

    @Test func oversizedAndMalformedNamesGetTypedErrorsAndNothingIsSent() async throws {
        try await withNode("names", budget: 16 << 20) { setup in
            let node = setup.node
            let huge = String(repeating: "B", count: 70_000)
            let wide = String(repeating: "👩‍👩‍👧‍👧", count: 11)  // 11 characters, 275 bytes
            let cases: [(String, NameError.Problem)] = [
                (huge, .tooLong(bytes: 70_000, limit: 256)),
                (wide, .tooLong(bytes: 275, limit: 256)),
                ("", .empty),
                ("tab\there", .controlCharacter),
                ("nul\u{0}", .controlCharacter),
                ("c1\u{85}", .controlCharacter),
            ]
            for (name, problem) in cases {
                let expected = ClusterError.invalidName(NameError(kind: .uid, problem: problem))
                await #expect(throws: expected) { try await node.sender.send(uid: name, .text("x")) }
                await #expect(throws: expected) { try await node.sender.post(uid: name, .text("x")) }
                await #expect(throws: expected) { try await node.sender.sendMulti(uids: ["ok", name], .text("x")) }
                await #expect(throws: expected) { try await node.relations.findUserFDs(uid: name) }
                await #expect(throws: expected) { try await node.bind(setup.healthy.fd, uid: name) }
                let room = ClusterError.invalidName(NameError(kind: .room, problem: problem))
                await #expect(throws: room) { try await node.join(setup.healthy.fd, room: name) }
                await #expect(throws: room) { try await node.sender.send(room: name, .text("x")) }
                await #expect(throws: room) { try await node.sender.post(room: name, .text("x")) }
            }
            // Addresses made by the application: their node id follows the server id rules.
            let badFD = DistributedFD(node: String(repeating: "n", count: 100_000), epoch: 1, fd: UInt64.max)
            await #expect(throws: ClusterError.self) { try await node.sender.send(to: badFD, .text("x")) }
            await #expect(throws: ClusterError.self) { try await node.sender.sendAll(.text("x"), except: [badFD]) }
            // An fd number past Int.max on this node's own address is just "not here".
            let mine = DistributedFD(node: node.id, epoch: node.epoch, fd: UInt64.max)
            #expect(try await node.sender.send(to: mine, .text("x")) == false)
            try await node.sender.postAll(.text("all but a huge fd"), except: [mine])
            // The uid a client gives at the handshake: 400, never registered.
            let client = try await RawClient.connect(port: try await setup.port)
            try await client.send(Wire.handshake(path: "/ws?uid=" + String(repeating: "B", count: 300)))
            #expect(try await client.readHTTPResponse().status == 400)
            // Through a client's own messages (the route relays to the uid it is sent).
            let hostile = try await ClusterClient.connect(node, uid: "mallory")
            try await hostile.raw.send(Wire.frame(Wire.text, huge))
            #expect(try await hostile.next().text.hasPrefix("error: the uid is 70000 bytes long"))
            #expect(node.counters.hits(.names) >= cases.count * 8 + 2)
            hostile.close()
        }
    }

    @Test func aMessageToManyUsersCostsPayloadPlusTargetsNotTheirProduct() async throws {
        try await withNode("many targets", budget: 16 << 20) { setup in
            let node = setup.node
            // 20 of the users are connected to the other node, the rest nowhere.
            var clients: [ClusterClient] = []
            for index in 0..<20 { clients.append(try await ClusterClient.connect(setup.other, uid: "u\(index)")) }
            let uids = (0..<1_000).map { "u\($0)" }
            let payload = ByteBuffer(repeating: UInt8(ascii: "x"), count: 39 * 1024)
            let before = try await redisInputBytes(setup.redis)
            let results = try await node.sender.sendMulti(uids: uids, .binary(payload))
            let sent = try await redisInputBytes(setup.redis) - before
            print("many targets: 1,000 uids × 39 KiB sent \(sent) bytes to Redis")
            // One envelope (payload + every uid) in one script call; not 1,000 copies (39 MiB).
            // Bound: the payload once, plus per uid its key and its name (< 80 bytes), plus heartbeats.
            #expect(sent < 39 * 1024 + 1_000 * 80 + 64 * 1024)
            #expect(results.count == 1_000)
            #expect(results.filter { $0.value == 1 }.count == 20)
            for client in clients { #expect(try await client.next().payload.count == 39 * 1024) }
            // Past the cap: refused before anything is sent, counted.
            await #expect(throws: ClusterError.tooManyTargets(count: 1_001, limit: 1_000)) {
                try await node.sender.sendMulti(uids: uids + ["one more"], .binary(payload))
            }
            let except = (0..<1_001).map { DistributedFD(node: "b", epoch: 1, fd: UInt64($0)) }
            await #expect(throws: ClusterError.tooManyTargets(count: 1_001, limit: 1_000)) {
                try await node.sender.sendAll(.text("x"), except: except)
            }
            #expect(node.counters.hits(.targetsPerCall) == 2)
            for client in clients { client.close() }
        }
    }

    @Test func roomsPerConnectionAreCapped() async throws {
        try await withNode("many rooms", budget: 16 << 20, configure: { $0.limits.maxRoomsPerConnection = 40 }) { setup in
            let node = setup.node
            let joiner = try await ClusterClient.connect(node, uid: "joiner")
            for index in 0..<40 { try await node.join(joiner.fd, room: "room\(index)") }
            try await node.join(joiner.fd, room: "room0")  // already in it: fine
            await #expect(throws: ClusterError.tooManyRooms(limit: 40)) { try await node.join(joiner.fd, room: "room40") }
            #expect(node.counters.hits(.roomsPerConnection) == 1)
            let channels = try await setup.redis.withClient { redis in
                try await redis.send(RedisCommand("PUBSUB", "CHANNELS", "hostile:room:*")).array?.count ?? 0
            }
            #expect(channels == 40)
            try await node.leave(joiner.fd, room: "room3")
            try await node.join(joiner.fd, room: "room40")  // room again after leaving one
            joiner.close()
        }
    }

    // MARK: Plain HTTP

    @Test func pipelinedHTTPRequestsRunOneAtATime() async throws {
        let calls = Mutex(0)
        try await withNode("pipelined http", budget: 16 << 20) { setup in
            setup.node.setHTTPResponder { _ in
                calls.withLock { $0 += 1 }
                return .text("ok\n")
            }
            let client = try await RawClient.connect(port: try await setup.port)
            let request = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            try await client.send(String(repeating: request, count: 500))
            let response = try await client.readHTTPResponse()
            #expect(response.status == 200 && response.headers["connection"] == "close")
            await client.waitForClose()
            #expect(calls.withLock { $0 } == 1)
        }
    }

    @Test func anOversizedHeaderGets431AndAnOversizedBody413() async throws {
        try await withNode("big requests", budget: 16 << 20) { setup in
            let port = try await setup.port
            let client = try await RawClient.connect(port: port)
            try await client.send("GET / HTTP/1.1\r\nHost: x\r\nX-Fill: " + String(repeating: "a", count: 20_000) + "\r\n\r\n")
            #expect(try await client.readHTTPResponse().status == 431)
            await client.waitForClose()
            // The same on the WebSocket path, in the handshake.
            let upgrade = try await RawClient.connect(port: port)
            try await upgrade.send(Wire.handshake(extra: ["X-Fill: " + String(repeating: "a", count: 20_000)]))
            #expect(try await upgrade.readHTTPResponse().status == 431)
            let body = try await RawClient.connect(port: port)
            try await body.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n" + String(repeating: "b", count: 1_100_000))
            #expect(try await body.readHTTPResponse().status == 413)
            await body.waitForClose()
            let garbage = try await RawClient.connect(port: port)
            try await garbage.send("\u{1}\u{2} NOT HTTP\r\n\r\n")
            #expect(try await garbage.readHTTPResponse().status == 400)
            let clock = ContinuousClock()
            let answered = clock.now
            await garbage.waitForClose()  // at once, not after the handshake timeout
            #expect(clock.now - answered < .seconds(2))
            #expect(setup.node.counters.hits(.requestHead) == 2)
            #expect(setup.node.counters.hits(.requestBody) == 1)
        }
    }

    @Test func handshakesInProgressAreBounded() async throws {
        try await withNode("slow handshakes", budget: 16 << 20, configure: {
            $0.webSocket.maxPendingHandshakes = 50
            $0.webSocket.handshakeTimeout = .seconds(2)
        }) { setup in
            let port = try await setup.port
            var idle: [RawClient] = []
            for _ in 0..<50 { idle.append(try await RawClient.connect(port: port)) }
            try await eventually("the server to see 50 pending handshakes") { setup.node.server.pendingHandshakeCount == 50 }
            // Half a request each keeps them in the handshake; more connections are closed at once.
            for client in idle { try await client.send("GET /ws HTTP/1.1\r\nHost: x\r\n") }
            var refused: [RawClient] = []
            for _ in 0..<100 { refused.append(try await RawClient.connect(port: port)) }
            for client in refused { await client.waitForClose() }
            #expect(setup.node.counters.hits(.pendingHandshakes) == 100)
            try await setup.tick()  // the connected client is served meanwhile
            // The handshake timeout frees the slots; a new client gets in again.
            for client in idle { await client.waitForClose() }
            let late = try await ClusterClient.connect(setup.node, uid: "late")
            late.close()
        }
    }

    // MARK: Inbound budgets

    @Test func inboundBytesAreRateLimited() async throws {
        try await withNode("byte rate", budget: 16 << 20, configure: {
            $0.webSocket.maxBytesPerSecond = 64 * 1024
            $0.webSocket.maxMessagesPerSecond = nil
        }) { setup in
            let flooder = try await ClusterClient.connect(setup.node, uid: "flooder")
            let chunk = Wire.frame(Wire.binary, [UInt8](repeating: 0, count: 32 * 1024))
            try await flooder.raw.send((0..<20).flatMap { _ in chunk })
            #expect(try await flooder.raw.readUntilClose().closeCode == 1008)
            #expect(setup.node.server.byteRateLimitCloses == 1)
        }
    }

    @Test func unreadMessagesAreBoundedInBytesByPausingTheSocket() async throws {
        try await withNode("inbound bytes", budget: 24 << 20, configure: {
            $0.webSocket.inboundBufferBytes = 256 * 1024
            $0.webSocket.maxMessagesPerSecond = nil
            $0.webSocket.maxBytesPerSecond = nil
        }) { setup in
            // This route never reads its messages.
            setup.node.webSocket("/sink", authenticate: { _ in "sink" }) { _ in }
            let client = try await RawClient.connect(port: try await setup.port)
            _ = try await client.upgrade(path: "/sink")
            let frame = Wire.frame(Wire.binary, [UInt8](repeating: 1, count: 64 * 1024))
            // 64 MiB offered, a frame at a time; the server stops reading after ~256 KiB,
            // so the writer blocks once the kernel buffers are full.
            let writer = Task { for _ in 0..<1_024 where !Task.isCancelled { try? await client.send(frame) } }
            try await eventually("reading to pause") { setup.node.counters.hits(.inboundBuffer) == 1 }
            try await setup.tick()
            writer.cancel()
            client.close()
        }
    }

    @Test func pingFloodsFromAClientThatNeverReadsAreBounded() async throws {
        try await withNode("ping flood", budget: 24 << 20, configure: {
            $0.webSocket.maxMessagesPerSecond = nil  // only the outbound budget stands in the way
            $0.webSocket.maxBytesPerSecond = nil
        }) { setup in
            let flooder = try await ClusterClient.connect(setup.node, uid: "pinger", receiveBuffer: 4096)
            try await flooder.raw.stopReading()
            let ping = Wire.frame(Wire.ping, [UInt8](repeating: 7, count: 125))
            // 60,000 pings: their pongs (7.6 MB) are more than the kernel's buffers can hold.
            let batch = (0..<500).flatMap { _ in ping }
            for _ in 0..<120 where setup.node.slowConsumerCloses == 0 { flooder.raw.sendWithoutWaiting(batch) }
            try await eventually("the flooder to be dropped as a slow consumer") {
                setup.node.slowConsumerCloses == 1 && setup.node.connectionCount == 1
            }
            // With the message rate on (the default), the same flood is cut by the rate limit.
            flooder.close()
        }
    }

    @Test func pingFloodsHitTheMessageRate() async throws {
        try await withNode("ping rate", budget: 16 << 20) { setup in
            let flooder = try await ClusterClient.connect(setup.node, uid: "pinger")
            let ping = Wire.frame(Wire.ping, [UInt8](repeating: 7, count: 10))
            try await flooder.raw.send((0..<1_000).flatMap { _ in ping })
            #expect(try await flooder.raw.readUntilClose().closeCode == 1008)
            #expect(setup.node.server.rateLimitCloses == 1)
        }
    }

    // MARK: Every close ends

    enum CloseCause: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case clientClose, protocolError, tooBig, serverClose, keepalive
        var testDescription: String { rawValue }
    }

    /// Whoever starts the close and whatever the reason, a peer that stops
    /// reading (its buffers full of our data) is disconnected within
    /// `closeTimeout`, and the node forgets it: its uid goes offline.
    @Test(arguments: CloseCause.allCases)
    func everyCloseEndsEvenIfThePeerNeverReads(cause: CloseCause) async throws {
        try await withNode("close \(cause)", budget: 32 << 20, pingHealthy: cause == .keepalive, configure: {
            $0.webSocket.closeTimeout = .seconds(1)
            $0.webSocket.maxOutboundBufferBytes = 8 << 20  // not a slow-consumer drop: the close must end it
            if cause == .keepalive { $0.webSocket.keepalive = .enabled(pingInterval: .milliseconds(300), pongTimeout: .milliseconds(300)) }
        }) { setup in
            let node = setup.node
            let stuck = try await ClusterClient.connect(node, uid: "stuck", receiveBuffer: 4096)
            try await stuck.raw.stopReading()
            // Fill the pipe past the kernel's buffers: a close frame now queues behind what cannot leave.
            for _ in 0..<24 { _ = try await node.sender.send(uid: "stuck", .binary(ByteBuffer(repeating: 1, count: 256 * 1024))) }
            let clock = ContinuousClock()
            let start = clock.now
            switch cause {
            case .clientClose: stuck.raw.sendWithoutWaiting(Wire.closeFrame(code: 1000))
            case .protocolError: stuck.raw.sendWithoutWaiting(Wire.frame(Wire.text, Array("x".utf8), masked: false))
            case .tooBig: stuck.raw.sendWithoutWaiting(Wire.frame(Wire.binary, [UInt8](repeating: 0, count: 2 << 20)))
            case .serverClose:
                let socket = try #require(node.registry.sockets(user: "stuck").first)
                await socket.close(code: .normalClosure, reason: "bye")
            case .keepalive: break  // it answers no ping: it never reads them
            }
            try await eventually("the node to drop the stuck peer", within: .seconds(5)) {
                node.registry.sockets(user: "stuck").isEmpty
            }
            try await eventually("the uid to go offline") { try await !node.relations.isOnline(uid: "stuck") }
            let took = clock.now - start
            print("close \(cause): connection gone after \(took)")
            #expect(took < .seconds(cause == .keepalive ? 3 : 2))
            stuck.close()
        }
    }

    // MARK: Fan-out

    /// A starved event loop cannot make its fan-out queue grow without bound:
    /// past `fanOutQueueBytes`, newer messages for it are dropped and counted.
    @Test func aStarvedLoopsFanOutQueueIsBounded() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.fanOutQueueBytes = 2 << 20
        configuration.maxOutboundBufferBytes = 64 << 20
        try await withOneLoopServer(configuration) { server, loop, port in
            let client = try await connectedClient(port: port)
            let meter = RSSMeter.start()
            // Starve the loop: it runs this job until the test lets go.
            let blocked = DispatchSemaphore(value: 0)
            loop.execute { blocked.wait() }
            for index in 0..<100 { server.broadcast(.binary(ByteBuffer(repeating: UInt8(index), count: 256 * 1024))) }
            #expect(server.fanOutDrops == 92)
            blocked.signal()
            for index in 0..<8 {
                let frame = try await client.readFrame()
                #expect(frame.payload.count == 256 * 1024 && frame.payload[0] == UInt8(index))
            }
            let growth = meter.stop()
            print("hostile fan-out: peak RSS growth \(growth / 1024) KiB (budget \(16 << 10) KiB)")
            #expect(growth < 16 << 20)
            client.close()
        }
    }

    // MARK: Redis as a peer

    /// A reply longer than the node accepts resets that Redis link (counted)
    /// instead of being buffered; the link comes back and works.
    @Test func anOversizedRedisReplyResetsTheLinkAndItRecovers() async throws {
        try await withRedisServer { redis in
            var configuration = RedisConfiguration.testing(redis)
            configuration.maxReplyBytes = 64 * 1024
            let hits = Mutex(0)
            configuration.hooks.replyTooLarge = { hits.withLock { $0 += 1 } }
            let connection = RedisConnection(configuration: configuration)
            try await withRunning([connection]) {
                try await connection.waitUntilConnected(timeout: .seconds(5))
                _ = try await connection.send(RedisCommand("SET", "big", .bytes(ByteBuffer(repeating: 1, count: 1 << 20))))
                await #expect(throws: RedisError.self) { try await connection.send(RedisCommand("GET", "big")) }
                #expect(hits.withLock { $0 } == 1)
                try await connection.waitUntilConnected(after: 1, timeout: .seconds(5))
                #expect(try await connection.send(RedisCommand("STRLEN", "big")).int == 1 << 20)
            }
        }
    }

    /// Garbage in every shape on the cluster's channels (lying counts,
    /// truncations, names without end) is dropped and counted; routing goes on.
    @Test func garbageOnTheChannelsIsDroppedWithoutTrouble() async throws {
        try await withNode("redis garbage", budget: 16 << 20) { setup in
            let samples: [[UInt8]] = [
                [],
                [67, 87, 1, 1, 1, 0, 1, 97] + [UInt8](repeating: 0, count: 16) + [255, 255, 255, 255],  // fds: 4G claimed
                [67, 87, 1, 5, 1, 0, 1, 97] + [UInt8](repeating: 0, count: 8) + [255, 255, 255, 255],   // users: 4G claimed
                [67, 87, 1, 2, 1, 255, 255],                                                          // a 65,535-byte name, absent
                [67, 87, 1, 4, 2, 0, 0] + [UInt8](repeating: 0, count: 8) + [0, 0, 0, 1, 255, 255],  // except list, truncated
                [67, 87, 1, 9, 1, 0, 0] + [UInt8](repeating: 0, count: 8),                           // unknown kind
                [67, 87, 1, 2, 7, 0, 0] + [UInt8](repeating: 0, count: 8),                           // unknown opcode
            ]
            try await setup.redis.withClient { redis in
                for sample in samples {
                    for channel in ["hostile:all", "hostile:node:a", "hostile:user:healthy"] {
                        _ = try await redis.send(RedisCommand("PUBLISH", .string(channel), .bytes(ByteBuffer(bytes: sample))))
                    }
                }
            }
            try await setup.tick()
            #expect(setup.node.statistics.garbageDropped == samples.count * 3)
        }
    }

    private func redisInputBytes(_ redis: RedisServerProcess) async throws -> Int {
        try await redis.withClient { connection in
            let info = try await connection.send(RedisCommand("INFO", "stats")).string ?? ""
            let line = info.split(separator: "\r\n").first { $0.hasPrefix("total_net_input_bytes:") }
            return Int(line?.split(separator: ":").last ?? "") ?? 0
        }
    }
}

extension RedisServerProcess {
    /// Runs `body` with a connection of its own to this server.
    func withClient<T: Sendable>(_ body: @Sendable (RedisConnection) async throws -> T) async throws -> T {
        let connection = RedisConnection(configuration: .testing(self))
        return try await withRunning([connection]) {
            try await connection.waitUntilConnected(timeout: .seconds(5))
            return try await body(connection)
        }
    }
}
