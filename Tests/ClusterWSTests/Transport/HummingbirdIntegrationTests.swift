import ClusterWS
import ClusterWSHummingbird
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Testing

@Suite("Hosting ClusterWS routes in a Hummingbird application", .timeLimit(.minutes(5)))
struct HummingbirdIntegrationTests {
    @Test func webSocketAndHummingbirdRoutesShareOnePort() async throws {
        var logger = Logger(label: "test.hummingbird")
        logger.logLevel = .warning
        let sockets = WebSocketServer(configuration: .init(keepalive: .disabled, closeTimeout: .seconds(1), listen: false), logger: logger)
        sockets.addRoute("/ws") { socket in
            for await message in socket.messages { try? await socket.send(message) }
        }
        let router = Router()
        router.get("/hello") { _, _ in "hi from hummingbird" }
        let portBox = Recorder<Int>()
        let app = Application(
            router: router,
            server: .clusterWS(sockets),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            services: [sockets],
            onServerRunning: { channel in portBox.append(channel.localAddress?.port ?? 0) },
            logger: logger
        )
        let harness = ServiceGroupHarness(app)
        try await harness.start()
        await portBox.wait(for: 1)
        let port = portBox.all[0]

        let http = try await RawClient.connect(port: port)
        try await http.send("GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        let response = try await http.readHTTPResponse()
        #expect(response.status == 200 && response.body == "hi from hummingbird")
        http.close()

        let client = try await connectedClient(port: port)
        try await client.send(Wire.frame(Wire.text, "through hummingbird"))
        #expect(try await client.readFrame().text == "through hummingbird")
        // The same strictness as the standalone transport.
        try await client.send(Wire.frame(Wire.text, Array("x".utf8), masked: false))
        #expect(try await client.readUntilClose().closeCode == 1002)

        for (request, status) in [(Wire.handshake(version: "8"), 426), (Wire.handshake(path: "/elsewhere"), 404),
                                  (Wire.handshake(key: "bad"), 400)] {
            let refused = try await RawClient.connect(port: port)
            try await refused.send(request)
            #expect(try await refused.readHTTPResponse().status == status)
        }

        let open = try await connectedClient(port: port)
        try await within(.seconds(10), "graceful shutdown") { try await harness.shutdownGracefully() }
        #expect(try await open.readUntilClose().closeCode == 1001)
    }
}
