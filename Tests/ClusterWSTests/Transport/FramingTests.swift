@testable import ClusterWS
import NIOCore
import Testing

@Suite("RFC 6455 §5: framing, raw bytes over TCP", .timeLimit(.minutes(2)))
struct FramingTests {
    /// Sends `bytes` after a valid handshake and expects a close frame with `code`, then TCP closed.
    private func expectClose(_ code: UInt16, after bytes: [UInt8], configuration: WebSocketServerConfiguration = .testing)
        async throws
    {
        try await withWebSocketServer(configuration) { _, port in
            let client = try await connectedClient(port: port)
            try await client.send(bytes)
            let close = try await client.readUntilClose()
            #expect(close.closeCode == code)
            await client.waitForClose()
        }
    }

    @Test func echoesTextAndBinary() async throws {
        try await withWebSocketServer { _, port in
            let client = try await connectedClient(port: port)
            try await client.send(Wire.frame(Wire.text, "héllo"))
            let text = try await client.readFrame()
            #expect(text.opcode == Wire.text && text.fin && !text.masked && text.text == "héllo")
            let binary: [UInt8] = [0, 255, 13, 10]
            try await client.send(Wire.frame(Wire.binary, binary))
            let back = try await client.readFrame()
            #expect(back.opcode == Wire.binary && back.payload == binary)
            let big = [UInt8](repeating: 0x61, count: 70_000)  // 64-bit length form... under 128 KiB message limit
            try await client.send(Wire.frame(Wire.binary, Array(big[..<60_000])))
            #expect(try await client.readFrame().payload.count == 60_000)
            client.close()
        }
    }

    @Test func unmaskedClientFrameCloses1002() async throws {
        try await expectClose(1002, after: Wire.frame(Wire.text, Array("x".utf8), masked: false))
    }

    @Test(arguments: [1, 2, 4] as [UInt8])
    func reservedBitsClose1002(rsv: UInt8) async throws {
        try await expectClose(1002, after: Wire.frame(Wire.text, Array("x".utf8), rsv: rsv))
    }

    @Test(arguments: [0x3, 0x7, 0xB, 0xF] as [UInt8])
    func reservedOpcodesClose1002(opcode: UInt8) async throws {
        try await expectClose(1002, after: Wire.frame(opcode, []))
    }

    @Test func fragmentedMessagesAreJoinedAndControlFramesMayInterleave() async throws {
        try await withWebSocketServer { _, port in
            let client = try await connectedClient(port: port)
            try await client.send(Wire.frame(Wire.text, "Hel", fin: false))
            try await client.send(Wire.frame(Wire.ping, Array("mid".utf8)))
            try await client.send(Wire.frame(Wire.continuation, "lo, ", fin: false))
            try await client.send(Wire.frame(Wire.continuation, "world", fin: true))
            let pong = try await client.readFrame()
            #expect(pong.opcode == Wire.pong && pong.text == "mid")
            let message = try await client.readFrame()
            #expect(message.opcode == Wire.text && message.text == "Hello, world")
            client.close()
        }
    }

    @Test func continuationWithoutAStartCloses1002() async throws {
        try await expectClose(1002, after: Wire.frame(Wire.continuation, "orphan"))
    }

    @Test func newMessageInsideAFragmentedOneCloses1002() async throws {
        try await expectClose(1002, after: Wire.frame(Wire.text, "a", fin: false) + Wire.frame(Wire.text, "b"))
    }

    @Test func fragmentedControlFrameCloses1002() async throws {
        try await expectClose(1002, after: Wire.frame(Wire.ping, [1], fin: false))
    }

    @Test func oversizedControlFrameCloses1002() async throws {
        try await expectClose(1002, after: Wire.frame(Wire.ping, [UInt8](repeating: 1, count: 126)))
    }

    @Test func pingIsAnsweredWithTheSamePayload() async throws {
        try await withWebSocketServer { _, port in
            let client = try await connectedClient(port: port)
            let payload: [UInt8] = Array(0..<125)
            try await client.send(Wire.frame(Wire.ping, payload))
            let pong = try await client.readFrame()
            #expect(pong.opcode == Wire.pong && pong.payload == payload)
            try await client.send(Wire.frame(Wire.ping, []))
            #expect(try await client.readFrame().payload.isEmpty)
            client.close()
        }
    }

    @Test func invalidUTF8InATextMessageCloses1007() async throws {
        try await expectClose(1007, after: Wire.frame(Wire.text, [0x48, 0xC3, 0x28]))
    }

    @Test func invalidUTF8SplitAcrossFragmentsCloses1007() async throws {
        // "€" cut after its first byte, and the next fragment does not continue it.
        try await expectClose(1007, after: Wire.frame(Wire.text, [0xE2], fin: false) + Wire.frame(Wire.continuation, [0x41]))
    }

    @Test func truncatedCodePointAtMessageEndCloses1007() async throws {
        try await expectClose(1007, after: Wire.frame(Wire.text, [0x41], fin: false) + Wire.frame(Wire.continuation, [0xE2, 0x82]))
    }

    @Test func validUTF8SplitAcrossFragmentsIsDelivered() async throws {
        try await withWebSocketServer { _, port in
            let client = try await connectedClient(port: port)
            try await client.send(Wire.frame(Wire.text, [0xE2], fin: false))
            try await client.send(Wire.frame(Wire.continuation, [0x82], fin: false))
            try await client.send(Wire.frame(Wire.continuation, [0xAC]))
            #expect(try await client.readFrame().text == "€")
            client.close()
        }
    }

    @Test func invalidUTF8IsCaughtBeforeTheMessageEnds() async throws {
        // The bad byte is in the first fragment; the server fails at once, without waiting for FIN.
        try await withWebSocketServer { _, port in
            let client = try await connectedClient(port: port)
            try await client.send(Wire.frame(Wire.text, [0x41, 0xFF], fin: false))
            #expect(try await client.readUntilClose().closeCode == 1007)
            await client.waitForClose()
        }
    }

    @Test func frameLargerThanTheLimitCloses1009() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.maxFrameSize = 1_000
        // Only the header is sent: the limit applies before the payload is read.
        try await expectClose(1009, after: Array(Wire.frame(Wire.binary, [], lengthOverride: 10_000)), configuration: configuration)
    }

    @Test func messageLargerThanTheLimitAcrossFragmentsCloses1009() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.maxMessageSize = 1_000
        let part = [UInt8](repeating: 0x61, count: 600)
        try await expectClose(1009, after: Wire.frame(Wire.binary, part, fin: false) + Wire.frame(Wire.continuation, part),
                              configuration: configuration)
    }
}
