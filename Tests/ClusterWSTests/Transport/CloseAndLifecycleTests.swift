@testable import ClusterWS
import NIOCore
import Testing

@Suite("RFC 6455 §7: closing, keepalive, shutdown", .timeLimit(.minutes(2)))
struct CloseAndLifecycleTests {
    @Test(arguments: [1000, 1001, 3000, 4999] as [UInt16])
    func clientCloseIsEchoedThenServerClosesTCP(code: UInt16) async throws {
        try await withWebSocketServer { _, port in
            let client = try await connectedClient(port: port)
            try await client.send(Wire.closeFrame(code: code, reason: Array("bye".utf8)))
            let echo = try await client.readFrame()
            #expect(echo.opcode == Wire.close && echo.closeCode == code)
            await client.waitForClose()
        }
    }

    @Test func emptyCloseIsAnsweredWith1000() async throws {
        try await withWebSocketServer { _, port in
            let client = try await connectedClient(port: port)
            try await client.send(Wire.closeFrame(code: nil))
            #expect(try await client.readFrame().closeCode == 1000)
            await client.waitForClose()
        }
    }

    @Test(arguments: [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] as [UInt16])
    func invalidCloseCodesClose1002(code: UInt16) async throws {
        try await withWebSocketServer { _, port in
            let client = try await connectedClient(port: port)
            try await client.send(Wire.closeFrame(code: code))
            #expect(try await client.readFrame().closeCode == 1002)
            await client.waitForClose()
        }
    }

    @Test func oneByteClosePayloadCloses1002() async throws {
        try await withWebSocketServer { _, port in
            let client = try await connectedClient(port: port)
            try await client.send(Wire.frame(Wire.close, [0x03]))
            #expect(try await client.readFrame().closeCode == 1002)
            await client.waitForClose()
        }
    }

    @Test func invalidUTF8InCloseReasonCloses1007() async throws {
        try await withWebSocketServer { _, port in
            let client = try await connectedClient(port: port)
            try await client.send(Wire.closeFrame(code: 1000, reason: [0xC0, 0x80]))
            #expect(try await client.readFrame().closeCode == 1007)
            await client.waitForClose()
        }
    }

    @Test func serverInitiatedCloseWaitsForTheClientThenClosesTCP() async throws {
        let codes = Recorder<WebSocketCloseCode>()
        try await withWebSocketServer(setup: { server in
            server.addRoute("/bye") { socket in
                await socket.close(code: WebSocketCloseCode(rawValue: 4000), reason: "done")
                codes.append(await socket.closed())
            }
        }) { _, port in
            let client = try await connectedClient(port: port, path: "/bye", sync: false)
            let close = try await client.readFrame()
            #expect(close.closeCode == 4000 && close.closeReason == "done")
            #expect(!client.isClosed)
            try await client.send(Wire.closeFrame(code: 4000))
            await client.waitForClose()
            await codes.wait(for: 1)
            #expect(codes.all == [WebSocketCloseCode(rawValue: 4000)])
        }
    }

    @Test func closeTimeoutClosesTCPWhenTheClientNeverAnswers() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.closeTimeout = .milliseconds(200)
        try await withWebSocketServer(configuration, setup: { server in
            server.addRoute("/bye") { socket in await socket.close() }
        }) { _, port in
            let client = try await connectedClient(port: port, path: "/bye", sync: false)
            #expect(try await client.readFrame().closeCode == 1000)
            await client.waitForClose()
        }
    }

    @Test func dataAfterOurCloseIsIgnored() async throws {
        let delivered = Recorder<String>()
        let ended = Recorder<WebSocketCloseCode>()
        try await withWebSocketServer(setup: { server in
            server.addRoute("/bye") { socket in
                await socket.close()
                for await message in socket.messages { delivered.append(message.text) }
                ended.append(await socket.closed())
            }
        }) { _, port in
            let client = try await connectedClient(port: port, path: "/bye", sync: false)
            #expect(try await client.readFrame().closeCode == 1000)
            try await client.send(Wire.frame(Wire.text, "late"))
            try await client.send(Wire.closeFrame(code: 1000))
            await client.waitForClose()
            await ended.wait(for: 1)
            #expect(delivered.all.isEmpty)  // the message after our close frame never reached the application
        }
    }

    @Test func keepalivePingsAndClosesASilentPeer() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.keepalive = .enabled(pingInterval: .milliseconds(200), pongTimeout: .seconds(5))
        try await withWebSocketServer(configuration) { _, port in
            let alive = try await connectedClient(port: port)
            let silent = try await connectedClient(port: port)
            // The live client answers three pings; the silent one answers none.
            for _ in 0..<3 {
                let ping = try await alive.readFrame()
                #expect(ping.opcode == Wire.ping)
                try await alive.send(Wire.frame(Wire.pong, ping.payload))
            }
            #expect(try await silent.readFrame().opcode == Wire.ping)
            #expect(try await silent.readUntilClose().closeCode == 1008)
            await silent.waitForClose()
            #expect(!alive.isClosed)
            alive.close()
        }
    }

    @Test func gracefulShutdownClosesEverySocketWith1001() async throws {
        let server = WebSocketServer(configuration: .testing)
        server.addRoute("/ws") { socket in _ = await socket.closed() }
        let harness = ServiceGroupHarness(server)
        try await harness.start()
        let port = try await server.waitUntilListening()
        let clients = try await (0..<5).asyncMap { _ in try await connectedClient(port: port) }
        #expect(server.connectionCount == 5)
        let shutdown = Task { try await harness.shutdownGracefully() }
        for client in clients {
            let close = try await client.readUntilClose()
            #expect(close.closeCode == 1001)
            try await client.send(Wire.closeFrame(code: 1001))
            await client.waitForClose()
        }
        try await within(.seconds(5), "the server to stop") { try await shutdown.value }
        #expect(server.connectionCount == 0)
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
