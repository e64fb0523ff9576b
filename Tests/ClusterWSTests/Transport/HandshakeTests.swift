@testable import ClusterWS
import NIOCore
import NIOHTTP1
import Testing

@Suite("RFC 6455 §4: opening handshake, raw bytes over TCP", .timeLimit(.minutes(2)))
struct HandshakeTests {
    @Test func validHandshakeGets101WithAccept() async throws {
        try await withWebSocketServer { _, port in
            let client = try await RawClient.connect(port: port)
            try await client.send(Wire.handshake())
            let response = try await client.readHTTPResponse()
            #expect(response.status == 101)
            #expect(response.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            #expect(response.headers["upgrade"]?.lowercased() == "websocket")
            #expect(response.headers["connection"]?.lowercased() == "upgrade")
            client.close()
        }
    }

    @Test(arguments: [
        (Wire.handshake(version: "8"), 426),
        (Wire.handshake(version: ""), 426),
        (Wire.handshake(key: ""), 400),
        (Wire.handshake(key: "not-a-key"), 400),
        (Wire.handshake(key: "c2hvcnQ="), 400),
        (Wire.handshake(method: "POST"), 400),
        (Wire.handshake(httpVersion: "1.0"), 400),
        (Wire.handshake(path: "/nope"), 404),
        ("GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n", 426),
        ("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
        ("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
        ("GET /other HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
        ("NOT HTTP AT ALL\r\n\r\n", 400),
    ] as [(String, Int)])
    func badHandshakesGetARealHTTPAnswer(request: String, status: Int) async throws {
        try await withWebSocketServer { _, port in
            let client = try await RawClient.connect(port: port)
            try await client.send(request)
            let response = try await client.readHTTPResponse()
            #expect(response.status == status)
            if status == 426 { #expect(response.headers["sec-websocket-version"] == "13") }
            await client.waitForClose()
        }
    }

    @Test func originAllowList() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.allowedOrigins = ["https://good.example"]
        try await withWebSocketServer(configuration) { _, port in
            let good = try await RawClient.connect(port: port)
            _ = try await good.upgrade(extra: ["Origin: https://good.example"])
            let bad = try await RawClient.connect(port: port)
            try await bad.send(Wire.handshake(extra: ["Origin: https://evil.example"]))
            #expect(try await bad.readHTTPResponse().status == 403)
            let none = try await RawClient.connect(port: port)
            try await none.send(Wire.handshake())
            #expect(try await none.readHTTPResponse().status == 403)
            good.close()
        }
    }

    @Test func authenticationHookDecidesBeforeTheUpgrade() async throws {
        let opened = Recorder<String>()
        try await withWebSocketServer(setup: { server in
            server.addRoute("/auth") { request in
                switch request.queryParameter("token") {
                case "good": return .accept(attributes: ["uid": "42"])
                case "banned": return .forbidden("banned")
                case "throw": throw CancellationError()
                default: return .unauthorized()
                }
            } onOpen: { socket in
                opened.append(socket.attributes["uid"] ?? "?")
            }
        }) { _, port in
            for (token, status) in [("bad", 401), ("banned", 403), ("throw", 401)] {
                let client = try await RawClient.connect(port: port)
                try await client.send(Wire.handshake(path: "/auth?token=\(token)"))
                #expect(try await client.readHTTPResponse().status == status)
            }
            #expect(opened.all.isEmpty)
            let client = try await connectedClient(port: port, path: "/auth?token=good")
            try await within(.seconds(5), "onOpen") { await opened.wait(for: 1) }
            #expect(opened.all == ["42"])
            client.close()
        }
    }

    @Test func plainHTTPGoesToTheResponder() async throws {
        try await withWebSocketServer(setup: { server in
            server.setHTTPResponder { request in
                request.head.uri == "/health" ? .text("ok\n") : .text("nope\n", status: .notFound)
            }
        }) { _, port in
            let client = try await RawClient.connect(port: port)
            try await client.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            let response = try await client.readHTTPResponse()
            #expect(response.status == 200)
            #expect(response.body == "ok\n")
        }
    }

    @Test func handshakeTimeoutClosesSilentAndHalfSentSockets() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.handshakeTimeout = .seconds(1)
        try await withWebSocketServer(configuration) { _, port in
            let silent = try await RawClient.connect(port: port)
            let half = try await RawClient.connect(port: port)
            try await half.send("GET /ws HTTP/1.1\r\nHost: local")
            let clock = ContinuousClock()
            let start = clock.now
            await silent.waitForClose()
            await half.waitForClose()
            #expect(clock.now - start < .seconds(5))
            // A completed handshake is not affected by the timer: still open well past it. Its own
            // handshake must finish within the 1 s timer: on a machine loaded by the parallel suite
            // it sometimes does not (a CI run saw the connection closed), so it may try again.
            var attempt: RawClient?
            for _ in 0..<3 where attempt == nil {
                attempt = try? await connectedClient(port: port)
            }
            let upgraded = try #require(attempt)
            try await Task.sleep(for: .milliseconds(1_500))
            try await upgraded.send(Wire.frame(Wire.ping, Array("still here".utf8)))
            #expect(try await upgraded.readFrame().text == "still here")
            upgraded.close()
        }
    }
}
