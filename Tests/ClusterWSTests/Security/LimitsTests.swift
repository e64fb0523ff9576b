@testable import ClusterWS
import EmbeddedRedis
import Logging
import NIOCore
import Testing

@Suite("Limits: every rejection path gets its code, and everyone else keeps going", .timeLimit(.minutes(2)))
struct LimitsTests {
    @Test func connectionsPastTheNodeLimitGet503() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.maxConnections = 2
        try await withWebSocketServer(configuration) { server, port in
            let first = try await connectedClient(port: port)
            let second = try await connectedClient(port: port)
            let third = try await RawClient.connect(port: port)
            try await third.send(Wire.handshake())
            #expect(try await third.readHTTPResponse().status == 503)
            for client in [first, second] {  // unaffected
                try await client.send(Wire.frame(Wire.text, "still here"))
                #expect(try await client.readFrame().text == "still here")
            }
            first.close()
            try await eventually("a slot to free up") { server.connectionCount < 2 }
            let fourth = try await connectedClient(port: port)
            fourth.close()
            second.close()
        }
    }

    @Test func aClientSendingTooFastIsClosedWith1008() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.maxMessagesPerSecond = 10  // bucket of 20
        try await withWebSocketServer(configuration) { server, port in
            let flooder = try await connectedClient(port: port, sync: false)
            let calm = try await connectedClient(port: port, sync: false)
            var flood: [UInt8] = []
            for index in 0..<60 { flood += Wire.frame(Wire.text, "spam \(index)") }
            try await flooder.send(flood)
            #expect(try await flooder.readUntilClose().closeCode == 1008)
            await flooder.waitForClose()
            #expect(server.rateLimitCloses == 1)
            try await calm.send(Wire.frame(Wire.text, "hello"))
            #expect(try await calm.readFrame().text == "hello")
            calm.close()
        }
    }

    @Test func connectionsPastTheUserLimitGet429() async throws {
        try await withRedisServer { redis in
            var configuration = ClusterConfiguration(redisURL: .init(redis.url), serverID: "a", namespace: "test",
                                                     webSocket: .init(keepalive: .disabled, closeTimeout: .seconds(1)))
            configuration.maxConnectionsPerUser = 2
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            let node = try ClusterNode(configuration: configuration, logger: logger)
            node.webSocket("/ws", authenticate: { $0.queryParameter("uid") }) { socket in
                try? await socket.socket.send(.text("ready \(socket.fd)"))
            }
            let harness = ServiceGroupHarness(node)
            try await harness.start()
            let one = try await ClusterClient.connect(node, uid: "busy")
            let two = try await ClusterClient.connect(node, uid: "busy")
            let port = try await node.waitUntilListening()
            let three = try await RawClient.connect(port: port)
            try await three.send(Wire.handshake(path: "/ws?uid=busy"))
            #expect(try await three.readHTTPResponse().status == 429)
            _ = try await ClusterClient.connect(node, uid: "someone-else")  // other users are fine
            #expect(try await node.sender.send(uid: "busy", .text("both devices")) == 1)
            #expect(try await one.next().text == "both devices")
            #expect(try await two.next().text == "both devices")
            try await harness.shutdownGracefully()
        }
    }

    /// The limit is checked and recorded in one step on Redis: 20 handshakes
    /// of one uid at once, on two nodes, never admit more than the limit.
    @Test func concurrentHandshakesOfOneUserNeverOvershootTheLimit() async throws {
        try await withRedisServer { redis in
            var nodes: [ClusterNode] = []
            for id in ["a", "b"] {
                var configuration = ClusterConfiguration(redisURL: .init(redis.url), serverID: id, namespace: "test",
                                                         webSocket: .init(keepalive: .disabled, closeTimeout: .seconds(1)))
                configuration.maxConnectionsPerUser = 5
                var logger = Logger(label: "test")
                logger.logLevel = .critical
                let node = try ClusterNode(configuration: configuration, logger: logger)
                node.webSocket("/ws", authenticate: { $0.queryParameter("uid") }) { _ in }
                nodes.append(node)
            }
            let harness = ServiceGroupHarness(nodes[0], nodes[1])
            try await harness.start()
            let ports = [try await nodes[0].waitUntilListening(), try await nodes[1].waitUntilListening()]
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<20 {
                    group.addTask {
                        let client = try await RawClient.connect(port: ports[index % 2])
                        try await client.send(Wire.handshake(path: "/ws?uid=crowd"))
                        return try await client.readHTTPResponse().status
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == 101 }.count == 5)
            #expect(statuses.filter { $0 == 429 }.count == 15)
            #expect(try await nodes[0].relations.findUserFDs(uid: "crowd").count == 5)
            try await harness.shutdownGracefully()
        }
    }

    /// A handshake admitted (and counted) that never opens gives its place back.
    @Test func anAdmittedHandshakeThatNeverOpensGivesItsPlaceBack() async throws {
        try await withRedisServer { redis in
            var configuration = ClusterConfiguration(redisURL: .init(redis.url), serverID: "a", namespace: "test",
                                                     webSocket: .init(keepalive: .disabled, closeTimeout: .seconds(1)))
            configuration.maxConnectionsPerUser = 1
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            let node = try ClusterNode(configuration: configuration, logger: logger)
            let gate = Recorder<Int>()
            node.webSocket("/ws", authenticate: { request in
                gate.append(1)
                await gate.wait(for: 2)  // held until the client has left
                return request.queryParameter("uid")
            }) { socket in try? await socket.socket.send(.text("ready \(socket.fd)")) }
            let harness = ServiceGroupHarness(node)
            try await harness.start()
            let port = try await node.waitUntilListening()
            let leaver = try await RawClient.connect(port: port)
            try await leaver.send(Wire.handshake(path: "/ws?uid=solo"))
            await gate.wait(for: 1)
            leaver.close()
            gate.append(2)
            // Its reservation (made once authenticate returns, so maybe after this line) is
            // released when its channel closes: the user's one place is free again. A 429
            // meanwhile only means "not yet"; a leaked place would refuse every attempt.
            try await eventually("the place to be given back", within: .seconds(5)) {
                guard let stayer = try? await ClusterClient.connect(node, uid: "solo") else { return false }
                stayer.close()
                return true
            }
            try await eventually("no reservation left behind") {
                try await node.redis.send(RedisCommand("SCARD", .string(node.keys.user("solo")))).int == 0
            }
            try await harness.shutdownGracefully()
        }
    }

    @Test func twoClustersShareOneRedisWithoutSeeingEachOther() async throws {
        try await withRedisServer { redis in
            let one = try await TestCluster.start(["a", "b"], redis: redis, namespace: "one")
            let two = try await TestCluster.start(["a", "b"], redis: redis, namespace: "two")
            let inOne = try await ClusterClient.connect(one["b"], uid: "x")
            let inTwo = try await ClusterClient.connect(two["b"], uid: "x")
            #expect(try await one["a"].relations.findUserFDs(uid: "x") == [inOne.fd])
            #expect(try await two["a"].relations.findUserFDs(uid: "x") == [inTwo.fd])
            #expect(try await two["a"].sender.send(uid: "x", .text("for two")) == 1)
            _ = try await two["a"].sender.sendAll(.text("all of two"))
            #expect(try await one["a"].sender.send(uid: "x", .text("for one")) == 1)
            #expect(try await inOne.next().text == "for one")  // nothing of cluster two's came first
            #expect(try await inTwo.next().text == "for two")
            #expect(try await inTwo.next().text == "all of two")
            await one.stopAll()
            await two.stopAll()
        }
    }
}

@Suite("Rejections do not disturb anyone else", .timeLimit(.minutes(2)))
struct RejectionIsolationTests {
    @Test func everyBadInputGetsItsCodeWhileAHealthyClientKeepsReceiving() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.maxMessagesPerSecond = 20
        configuration.maxMessageSize = 1_000
        configuration.allowedOrigins = ["https://ok.example"]
        try await withWebSocketServer(configuration) { server, port in
            let healthy = try await connectedClient(port: port, extra: ["Origin: https://ok.example"])
            var sent = 0
            var received = 0
            func tick() async throws {
                sent += 1
                server.broadcast(.text("tick \(sent)"))
                while received < sent {
                    let frame = try await healthy.readFrame()
                    received += 1
                    #expect(frame.text == "tick \(received)")
                }
            }
            let handshakes: [(String, Int)] = [
                (Wire.handshake(version: "7", extra: ["Origin: https://ok.example"]), 426),
                (Wire.handshake(key: "nope", extra: ["Origin: https://ok.example"]), 400),
                (Wire.handshake(path: "/missing", extra: ["Origin: https://ok.example"]), 404),
                (Wire.handshake(extra: ["Origin: https://evil.example"]), 403),
                ("GARBAGE\r\n\r\n", 400),
            ]
            for (request, status) in handshakes {
                let client = try await RawClient.connect(port: port)
                try await client.send(request)
                #expect(try await client.readHTTPResponse().status == status)
                try await tick()
            }
            let frames: [([UInt8], UInt16)] = [
                (Wire.frame(Wire.text, Array("x".utf8), masked: false), 1002),
                (Wire.frame(Wire.text, Array("x".utf8), rsv: 4), 1002),
                (Wire.frame(Wire.text, [0xC3, 0x28]), 1007),
                (Wire.frame(Wire.binary, [UInt8](repeating: 0, count: 1_001)), 1009),
                ((0..<60).flatMap { _ in Wire.frame(Wire.text, "flood") }, 1008),
            ]
            for (bytes, code) in frames {
                let client = try await connectedClient(port: port, extra: ["Origin: https://ok.example"], sync: false)
                try await client.send(bytes)
                #expect(try await client.readUntilClose().closeCode == code)
                try await tick()
            }
            #expect(received == handshakes.count + frames.count)
            healthy.close()
        }
    }
}
