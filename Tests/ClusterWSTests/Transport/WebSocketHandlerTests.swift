@testable import ClusterWS
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOWebSocket
import Testing

/// The WebSocket channel handler on a testing channel: frames in, messages
/// out to the connection's actor, frames written back — no socket. (The
/// actor's executor is the channel's event loop, which an async testing
/// channel provides.)
@Suite("WebSocket handler (testing channel)", .timeLimit(.minutes(2)))
struct WebSocketHandlerTests {
    private let key = WebSocketMaskingKey([9, 8, 7, 6] as [UInt8])!

    private func frame(_ opcode: WebSocketOpcode, _ bytes: [UInt8]) -> WebSocketFrame {
        var data = ByteBuffer(bytes: bytes)
        data.webSocketMask(key)
        return WebSocketFrame(fin: true, opcode: opcode, maskKey: key, data: data)
    }

    private func setUp(_ configuration: WebSocketServerConfiguration = .testing)
        async throws -> (NIOAsyncTestingChannel, WebSocket, Recorder<WebSocketCloseCode>) {
        let channel = NIOAsyncTestingChannel()
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).get()
        let socket = WebSocket(id: 1, request: WebSocketRequest(path: "/", uri: "/", headers: [:], remoteAddress: nil),
                               attributes: [:], channel: channel, configuration: configuration, counters: NodeCounters())
        let closes = Recorder<WebSocketCloseCode>()
        try await channel.pipeline.addHandler(WebSocketHandler(socket: socket, configuration: configuration) { _, code in
            closes.append(code)
        }).get()
        return (channel, socket, closes)
    }

    @Test func messagesReachTheActorAndPingsAreAnswered() async throws {
        let (channel, socket, _) = try await setUp()
        try await channel.writeInbound(frame(.text, Array("hello".utf8)))
        var iterator = socket.messages.makeAsyncIterator()
        #expect(await iterator.next() == .text("hello"))
        try await channel.writeInbound(frame(.ping, [1, 2]))
        let pong = try await channel.waitForOutboundWrite(as: ByteBuffer.self)
        #expect(Array(pong.readableBytesView) == [0x8A, 2, 1, 2])
        _ = try? await channel.finish()
    }

    @Test func aProtocolErrorClosesWithItsCodeAndCause() async throws {
        let (channel, socket, closes) = try await setUp()
        try await channel.writeInbound(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: "unmasked")))
        let close = try await channel.waitForOutboundWrite(as: ByteBuffer.self)
        #expect(Array(close.readableBytesView.prefix(4)) == [0x88, UInt8(close.readableBytes - 2), 0x03, 0xEA])  // 1002
        try await channel.testingEventLoop.executeInContext { }
        await closes.wait(for: 1)
        #expect(closes.all == [.protocolError])
        #expect(await socket.closeCause == .protocolError)
        #expect(!channel.isActive)
    }

    @Test func aRateLimitCloseIsCountedAsARateLimitNotAsASlowConsumer() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.maxMessagesPerSecond = 1  // a bucket of 2
        let (channel, socket, closes) = try await setUp(configuration)
        for _ in 0..<3 { try await channel.writeInbound(frame(.binary, [0])) }
        await closes.wait(for: 1)
        #expect(closes.all == [.policyViolation])
        #expect(await socket.closeCause == .rateLimited)
        #expect(socket.counters.dropped(.rateLimit) == 1)
        #expect(socket.counters.dropped(.slowConsumer) == 0)
    }

    @Test func aServerCloseWaitsForThePeerThenTheCloseTimeoutEndsIt() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.closeTimeout = .milliseconds(200)
        let (channel, socket, closes) = try await setUp(configuration)
        await socket.close(code: .goingAway, reason: "bye")
        let close = try await channel.waitForOutboundWrite(as: ByteBuffer.self)
        #expect(Array(close.readableBytesView.prefix(4)) == [0x88, 5, 0x03, 0xE9])
        #expect(channel.isActive)  // waiting for the peer's close frame…
        await channel.testingEventLoop.advanceTime(by: .milliseconds(250))  // …which never comes
        await closes.wait(for: 1)
        #expect(await socket.closeCause == .closedByServer)
    }
}
