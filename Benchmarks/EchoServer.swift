import ArgumentParser
import ClusterWS
import Foundation

/// `Benchmarks echo --port 9001`: a WebSocket echo server built from this
/// package (every message sent back as it came, text or binary), for the
/// Autobahn|Testsuite fuzzing client (`make autobahn`). Limits are raised to
/// what the suite sends (16 MiB messages, no rate limits).
struct EchoServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo", abstract: "An echo server for Autobahn|Testsuite (permessage-deflate on).")

    @Option(help: "Port to listen on.")
    var port = 9001

    enum Compression: String, ExpressibleByArgument {
        case off, noContextTakeover = "no-context-takeover", contextTakeover = "context-takeover"
    }

    @Option(help: "permessage-deflate mode: off, no-context-takeover (the default) or context-takeover.")
    var compression: Compression = .noContextTakeover

    @Option(help: "Compress messages of at least this many bytes.")
    var minimumSize = 0

    func run() async throws {
        var configuration = WebSocketServerConfiguration(port: port)
        configuration.maxFrameSize = 16 << 20 + 1024
        configuration.maxMessageSize = 16 << 20 + 1024
        configuration.maxMessagesPerSecond = nil
        configuration.maxBytesPerSecond = nil
        configuration.maxOutboundBufferBytes = 64 << 20
        configuration.inboundBufferBytes = 32 << 20
        configuration.keepalive = .disabled
        switch compression {
        case .off: configuration.compression = .off
        case .noContextTakeover: configuration.compression = WebSocketCompression(mode: .noContextTakeover, minimumSize: minimumSize)
        case .contextTakeover: configuration.compression = WebSocketCompression(mode: .contextTakeover, minimumSize: minimumSize)
        }
        let server = WebSocketServer(configuration: configuration)
        server.addRoute("/") { _ in .accept() } onOpen: { socket in
            socket.handleMessages { message in
                try? await socket.send(message)
            }
        }
        print("echo server on ws://127.0.0.1:\(port)/ (compression: \(compression.rawValue))")
        try await server.run()
    }
}
