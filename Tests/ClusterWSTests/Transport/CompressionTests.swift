@testable import ClusterWS
import NIOCore
import Synchronization
import Testing

/// permessage-deflate over real sockets: raw clients that offer the
/// extension, send compressed frames byte by byte and read the server's.
@Suite("permessage-deflate over real sockets", .timeLimit(.minutes(2)))
struct CompressionTests {
    static let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
    /// RFC 7692 §7.2.3.1: "Hello", compressed.
    static let hello: [UInt8] = [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]
    static let rsv1: UInt8 = 0b100
    let allocator = ByteBufferAllocator()
    /// `C0 AF` (an overlong encoding), compressed.
    static let compressedInvalidUTF8: [UInt8] = {
        let deflater = try? MessageDeflater(windowBits: 15, level: 6, resetsPerMessage: true)
        return deflater?.deflate(ByteBuffer(bytes: [0xC0, 0xAF]), allocator: ByteBufferAllocator()).map { Array(buffer: $0) } ?? []
    }()

    func compressed(_ payload: ByteBuffer, level: Int32 = 6) throws -> [UInt8] {
        let deflater = try MessageDeflater(windowBits: 15, level: level, resetsPerMessage: true)
        return Array(buffer: try #require(deflater.deflate(payload, allocator: allocator)))
    }

    func inflated(_ frame: WireFrame) throws -> ByteBuffer {
        let inflater = try MessageInflater(windowBits: 15, resetsPerMessage: true)
        return try inflater.inflate(ByteBuffer(bytes: frame.payload), limit: 1 << 20, allocator: allocator).get()
    }

    @Test func anOfferIsAcceptedAndMessagesRoundTripCompressed() async throws {
        try await withWebSocketServer { _, port in
            let client = try await RawClient.connect(port: port)
            let headers = try await client.upgrade(extra: [Self.offer])
            #expect(headers["sec-websocket-extensions"]
                    == "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
            // Compressed in, echoed: "Hello" is under the minimum size, so it comes back as it is.
            try await client.send(Wire.frame(Wire.text, Self.hello, rsv: Self.rsv1))
            let small = try await client.readFrame()
            #expect(small.rsv == 0 && small.text == "Hello")
            // A long message comes back compressed (RSV1), smaller than it is.
            let long = ByteBuffer(string: String(repeating: "{\"room\":\"lobby\",\"text\":\"hi there\"} ", count: 40))
            try await client.send(Wire.frame(Wire.text, try compressed(long), rsv: Self.rsv1))
            let echo = try await client.readFrame()
            #expect(echo.rsv == Self.rsv1 && echo.opcode == Wire.text)
            #expect(echo.payload.count < long.readableBytes / 4)
            #expect(try inflated(echo) == long)
            // Uncompressed frames are still fine on a compressed connection.
            try await client.send(Wire.frame(Wire.binary, [1, 2, 3]))
            #expect(try await client.readFrame().payload == [1, 2, 3])
            client.close()
        }
    }

    @Test func withoutAnOfferNothingIsCompressed() async throws {
        try await withWebSocketServer { server, port in
            let client = try await connectedClient(port: port)
            server.broadcast(.text(String(repeating: "x", count: 1_000)))
            let frame = try await client.readFrame()
            #expect(frame.rsv == 0 && frame.payload.count == 1_000)
            // And compressed frames from it are a protocol error.
            try await client.send(Wire.frame(Wire.text, Self.hello, rsv: Self.rsv1))
            #expect(try await client.readUntilClose().closeCode == 1002)
        }
    }

    @Test func aBroadcastIsCompressedOncePerParameterSet() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.compression.minimumSize = 16
        try await withOneLoopServer(configuration) { server, loop, port in
            var compressedClients: [RawClient] = []
            for _ in 0..<5 {
                let client = try await RawClient.connect(port: port)
                _ = try await client.upgrade(extra: [Self.offer])
                compressedClients.append(client)
            }
            let windowed = try await RawClient.connect(port: port)
            _ = try await windowed.upgrade(extra: ["Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10"])
            let plain = try await connectedClient(port: port, sync: false)
            try await eventually("every client to be registered") { server.connectionCount == 7 }
            let codecs = server.connections.loops[0].codecs
            let before = try await loop.submit { codecs.messagesDeflated }.get()
            let message = String(repeating: "{\"type\":\"tick\",\"value\":42} ", count: 30)
            server.broadcast(.text(message))
            var frames: [WireFrame] = []
            for client in compressedClients { frames.append(try await client.readFrame()) }
            #expect(Set(frames.map(\.payload)).count == 1)  // the same bytes for all five
            #expect(frames.allSatisfy { $0.rsv == Self.rsv1 })
            #expect(try inflated(frames[0]).readableBytes == message.utf8.count)
            let small = try await windowed.readFrame()
            let smallText = String(buffer: try inflated(small))
            #expect(small.rsv == Self.rsv1 && smallText == message)
            let raw = try await plain.readFrame()
            #expect(raw.rsv == 0 && raw.text == message)
            // Two parameter sets (window 15 and window 10): two deflates for seven connections.
            let after = try await loop.submit { codecs.messagesDeflated }.get()
            #expect(after - before == 2)
            for client in compressedClients + [windowed, plain] { client.close() }
        }
    }

    @Test func aDeflateBombIsClosedWith1009AndOthersAreServed() async throws {
        try await withWebSocketServer { _, port in
            // 16 MiB of zeros in a ~16 KiB frame; the limit is 128 KiB inflated.
            let bomb = Wire.frame(Wire.binary, try compressed(ByteBuffer(repeating: 0, count: 16 << 20), level: 9),
                                  rsv: Self.rsv1)
            try await withThrowingTaskGroup(of: UInt16?.self) { group in
                for _ in 0..<20 {
                    group.addTask {
                        let client = try await RawClient.connect(port: port)
                        _ = try await client.upgrade(extra: [Self.offer])
                        try await client.send(bomb)
                        return try await client.readUntilClose().closeCode
                    }
                }
                for try await code in group { #expect(code == 1009) }
            }
            let healthy = try await RawClient.connect(port: port)
            _ = try await healthy.upgrade(extra: [Self.offer])
            try await healthy.send(Wire.frame(Wire.text, Self.hello, rsv: Self.rsv1))
            #expect(try await healthy.readFrame().text == "Hello")
            healthy.close()
        }
    }

    @Test(arguments: [
        // A corrupt stream: 1007.
        (Wire.frame(Wire.text, [0xFF, 0xFF, 0xFF, 0x00, 0x12], rsv: 0b100), UInt16(1007)),
        // Compressed bytes that inflate to invalid UTF-8 in a text message: 1007.
        (Wire.frame(Wire.text, compressedInvalidUTF8, rsv: 0b100), UInt16(1007)),
        // RSV1 on a ping: 1002.
        (Wire.frame(Wire.ping, [], rsv: 0b100), UInt16(1002)),
        // RSV1 on a continuation: 1002.
        (Wire.frame(Wire.text, [0xF2], fin: false, rsv: 0b100) + Wire.frame(Wire.continuation, [0x48], rsv: 0b100),
         UInt16(1002)),
        // RSV2 is never negotiated: 1002.
        (Wire.frame(Wire.text, [0x00], rsv: 0b010), UInt16(1002)),
    ])
    func misuseGetsTheRFCsCloseCode(bytes: [UInt8], code: UInt16) async throws {
        try await withWebSocketServer { _, port in
            let client = try await RawClient.connect(port: port)
            _ = try await client.upgrade(extra: [Self.offer])
            try await client.send(bytes)
            #expect(try await client.readUntilClose().closeCode == code)
        }
    }

    @Test func contextTakeoverKeepsAContextPerConnectionUpToItsLimit() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.compression = WebSocketCompression(mode: .contextTakeover, minimumSize: 16,
                                                         maxContextTakeoverConnections: 1)
        try await withWebSocketServer(configuration) { server, port in
            let first = try await RawClient.connect(port: port)
            let firstHeaders = try await first.upgrade(extra: [Self.offer])
            #expect(firstHeaders["sec-websocket-extensions"] == "permessage-deflate; client_max_window_bits=12")
            let second = try await RawClient.connect(port: port)
            let secondHeaders = try await second.upgrade(extra: [Self.offer])
            #expect(secondHeaders["sec-websocket-extensions"]
                    == "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
            // The client keeps its context too: the second message refers back to the first.
            let deflater = try MessageDeflater(windowBits: 12, level: 6, resetsPerMessage: false)
            let inflater = try MessageInflater(windowBits: 15, resetsPerMessage: false)
            let payload = ByteBuffer(string: "{\"type\":\"chat\",\"room\":\"lobby\",\"text\":\"the same words again and again\"}")
            var sizes: [Int] = []
            for _ in 0..<2 {
                let bytes = Array(buffer: try #require(deflater.deflate(payload, allocator: allocator)))
                try await first.send(Wire.frame(Wire.text, bytes, rsv: Self.rsv1))
                let echo = try await first.readFrame()
                #expect(echo.rsv == Self.rsv1)
                sizes.append(echo.payload.count)
                #expect(try inflater.inflate(ByteBuffer(bytes: echo.payload), limit: 1_000, allocator: allocator).get() == payload)
            }
            #expect(sizes[1] < sizes[0] / 2, "\(sizes)")
            // Closing the first gives its context back: a new connection gets one.
            first.close()
            try await eventually("the context to be given back") { server.compressionContexts.load(ordering: .relaxed) == 0 }
            let third = try await RawClient.connect(port: port)
            #expect(try await third.upgrade(extra: [Self.offer])["sec-websocket-extensions"]
                    == "permessage-deflate; client_max_window_bits=12")
            second.close()
            third.close()
        }
    }
}
