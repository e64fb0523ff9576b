@testable import ClusterWS
import NIOCore
import Testing

@Suite("onOpen handlers run on their connection's event loop", .timeLimit(.minutes(2)))
struct HandlerExecutorTests {
    /// The handler reports, for each message, whether it runs on its
    /// connection's event loop at start and after every await.
    @Test func handlerStaysOnItsConnectionsEventLoop() async throws {
        try await withWebSocketServer(setup: { server in
            server.addRoute("/where") { socket in
                var onLoop = socket.eventLoop.inEventLoop
                for await message in socket.messages {
                    onLoop = onLoop && socket.eventLoop.inEventLoop
                    try? await socket.send(.text(message.text + (onLoop ? ":loop" : ":elsewhere")))
                    onLoop = onLoop && socket.eventLoop.inEventLoop
                }
            }
        }) { _, port in
            let client = try await connectedClient(port: port, path: "/where")
            for index in 0..<5 {
                try await client.send(Wire.frame(Wire.text, "m\(index)"))
                #expect(try await client.readFrame().text == "m\(index):loop")
            }
        }
    }
}
