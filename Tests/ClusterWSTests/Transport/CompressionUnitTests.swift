@testable import ClusterWS
import NIOCore
import NIOHTTP1
import NIOWebSocket
import Testing

/// permessage-deflate without sockets: the offer parser and the choice
/// (RFC 7692 §7.1), the codecs (§7.2) with the RFC's own example bytes, the
/// inflate budget, and the frame rules of the connection machine (§6).
@Suite("permessage-deflate: negotiation, codecs, frame rules", .timeLimit(.minutes(1)))
struct CompressionUnitTests {
    private func negotiate(_ offers: String..., configuration: WebSocketCompression = .noContextTakeover,
                           admit: Bool = true) -> PerMessageDeflateParameters? {
        var headers = HTTPHeaders()
        for offer in offers { headers.add(name: "Sec-WebSocket-Extensions", value: offer) }
        return PerMessageDeflateNegotiation.negotiate(headers, configuration: configuration) { admit }
    }

    // MARK: Negotiation

    @Test func noContextTakeoverIsAskedOfBothSides() throws {
        let chosen = try #require(negotiate("permessage-deflate; client_max_window_bits"))
        #expect(chosen.responseHeader == "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        #expect(chosen.serverNoContextTakeover && chosen.clientNoContextTakeover)
        #expect(chosen.serverWindowBits == 15)
    }

    @Test func aServerWindowIsHonouredAndEightIsServedWithNine() throws {
        let ten = try #require(negotiate("permessage-deflate; server_max_window_bits=10"))
        #expect(ten.responseHeader.contains("server_max_window_bits=10"))
        #expect(ten.serverWindowBits == 10)
        let eight = try #require(negotiate("permessage-deflate; server_max_window_bits=\"8\""))
        #expect(eight.responseHeader.contains("server_max_window_bits=8"))
        #expect(eight.serverWindowBits == 9)
    }

    @Test(arguments: [
        "permessage-deflate; server_max_window_bits",          // the value is required
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; unknown_parameter",
        "permessage-deflate; ;",
        "x-webkit-deflate-frame",
    ])
    func aMalformedOrUnknownOfferIsDeclined(offer: String) {
        #expect(negotiate(offer) == nil)
    }

    @Test func theFirstAcceptableOfferWins() throws {
        let chosen = try #require(negotiate(
            "permessage-deflate; server_max_window_bits=99, permessage-deflate; server_max_window_bits=12, permessage-deflate"))
        #expect(chosen.serverWindowBits == 12)
        let acrossLines = try #require(negotiate("foo; bar=\"a,b\"", "permessage-deflate; client_no_context_takeover"))
        #expect(acrossLines.clientNoContextTakeover)
    }

    @Test func offIsDeclinedAndContextTakeoverIsBoundedByItsAdmission() throws {
        #expect(negotiate("permessage-deflate", configuration: .off) == nil)
        let context = try #require(negotiate("permessage-deflate; client_max_window_bits", configuration: .contextTakeover))
        #expect(!context.serverNoContextTakeover && !context.clientNoContextTakeover)
        #expect(context.serverWindowBits == 12 && context.clientWindowBits == 12)
        #expect(context.responseHeader == "permessage-deflate; client_max_window_bits=12")
        // Past the limit: the same offer gets no context takeover, still compressed.
        let downgraded = try #require(negotiate("permessage-deflate; client_max_window_bits",
                                                configuration: .contextTakeover, admit: false))
        #expect(downgraded.serverNoContextTakeover && downgraded.clientNoContextTakeover)
        #expect(!downgraded.responseHeader.contains("client_max_window_bits"))
    }

    // MARK: Codecs

    private let allocator = ByteBufferAllocator()

    @Test func theRFCsHelloInflatesAndRoundTrips() throws {
        // RFC 7692 §7.2.3.1: "Hello" compressed with no context takeover.
        let inflater = try MessageInflater(windowBits: 15, resetsPerMessage: true)
        let hello = ByteBuffer(bytes: [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
        #expect(try inflater.inflate(hello, limit: 100, allocator: allocator).get() == ByteBuffer(string: "Hello"))
        // §7.2.3.3: the same with a BFINAL block, and our tail after it.
        let final = ByteBuffer(bytes: [0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00])
        #expect(try inflater.inflate(final, limit: 100, allocator: allocator).get() == ByteBuffer(string: "Hello"))
        let deflater = try MessageDeflater(windowBits: 15, level: 6, resetsPerMessage: true)
        let payload = ByteBuffer(string: String(repeating: "{\"type\":\"chat\",\"text\":\"hello\"}", count: 20))
        let compressed = try #require(deflater.deflate(payload, allocator: allocator))
        #expect(compressed.readableBytes < payload.readableBytes / 5)
        #expect(try inflater.inflate(compressed, limit: 10_000, allocator: allocator).get() == payload)
        // No context: the same message compresses to the same bytes every time (shareable).
        #expect(deflater.deflate(payload, allocator: allocator) == compressed)
    }

    @Test func contextTakeoverRefersBackAcrossMessages() throws {
        let deflater = try MessageDeflater(windowBits: 12, level: 6, memoryLevel: 5, resetsPerMessage: false)
        let inflater = try MessageInflater(windowBits: 12, resetsPerMessage: false)
        let payload = ByteBuffer(string: "{\"type\":\"chat\",\"room\":\"lobby\",\"text\":\"the same words again\"}")
        let first = try #require(deflater.deflate(payload, allocator: allocator))
        let second = try #require(deflater.deflate(payload, allocator: allocator))
        #expect(second.readableBytes < first.readableBytes / 2)  // a back-reference to the first
        #expect(try inflater.inflate(first, limit: 1_000, allocator: allocator).get() == payload)
        #expect(try inflater.inflate(second, limit: 1_000, allocator: allocator).get() == payload)
    }

    @Test func aBombStopsAtTheLimitAndCorruptDataIsRefused() throws {
        let deflater = try MessageDeflater(windowBits: 15, level: 9, resetsPerMessage: true)
        let inflater = try MessageInflater(windowBits: 15, resetsPerMessage: true)
        // 16 MiB of zeros deflate to about 16 KiB.
        let bomb = try #require(deflater.deflate(ByteBuffer(repeating: 0, count: 16 << 20), allocator: allocator))
        #expect(bomb.readableBytes < 20_000)
        #expect(inflater.inflate(bomb, limit: 64 << 10, allocator: allocator) == .failure(.tooBig))
        // The shared inflater is reset after a failure: the next message inflates.
        #expect(try inflater.inflate(ByteBuffer(bytes: [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]), limit: 10,
                                     allocator: allocator).get() == ByteBuffer(string: "Hello"))
        #expect(inflater.inflate(ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0x00, 0x12]), limit: 100, allocator: allocator)
                == .failure(.corrupt))
        // Exactly at the limit is fine, one byte over is not.
        let five = try #require(deflater.deflate(ByteBuffer(string: "12345"), allocator: allocator))
        #expect(try inflater.inflate(five, limit: 5, allocator: allocator).get() == ByteBuffer(string: "12345"))
        #expect(inflater.inflate(five, limit: 4, allocator: allocator) == .failure(.tooBig))
    }

    // MARK: Frame rules

    private let key = WebSocketMaskingKey([9, 8, 7, 6] as [UInt8])!

    private func frame(_ opcode: WebSocketOpcode, _ bytes: [UInt8], fin: Bool = true, rsv1: Bool = false) -> WebSocketFrame {
        var data = ByteBuffer(bytes: bytes)
        data.webSocketMask(key)
        return WebSocketFrame(fin: fin, rsv1: rsv1, opcode: opcode, maskKey: key, data: data)
    }

    @Test func rsv1WithoutTheExtensionOrOnControlAndContinuationFramesIsAProtocolError() {
        var plain = WebSocketStateMachine(maxMessageSize: 100)
        #expect(plain.receive(frame(.text, [0xF2, 0x00], rsv1: true))
                == .sendClose(.protocolError, reason: "RSV1 without permessage-deflate", thenCloseTCP: true))
        #expect(plain.closeLimit == .reservedBits)
        var control = WebSocketStateMachine(maxMessageSize: 100, deflate: true)
        #expect(control.receive(frame(.ping, [], rsv1: true))
                == .sendClose(.protocolError, reason: "RSV1 on a control or continuation frame", thenCloseTCP: true))
        var continuation = WebSocketStateMachine(maxMessageSize: 100, deflate: true)
        #expect(continuation.receive(frame(.text, [0xF2], fin: false, rsv1: true)) == .none)
        #expect(continuation.receive(frame(.continuation, [0x48], rsv1: true))
                == .sendClose(.protocolError, reason: "RSV1 on a control or continuation frame", thenCloseTCP: true))
    }

    @Test func aCompressedMessageIsJoinedThenInflatedAndItsTextChecked() {
        var machine = WebSocketStateMachine(maxMessageSize: 100, deflate: true)
        #expect(machine.receive(frame(.text, [0xF2, 0x48, 0xCD], fin: false, rsv1: true)) == .none)
        let ping = machine.receive(frame(.ping, [1]))
        #expect(ping == .pong(ByteBuffer(bytes: [1])))
        let end = machine.receive(frame(.continuation, [0xC9, 0xC9, 0x07, 0x00]))
        #expect(end == .inflate(.text, ByteBuffer(bytes: [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])))
        #expect(machine.inflated(.success(ByteBuffer(string: "Hello")), kind: .text) == .deliver(.text("Hello")))
        // Uncompressed messages still flow on the same connection.
        #expect(machine.receive(frame(.text, Array("plain".utf8))) == .deliver(.text("plain")))
        #expect(machine.receive(frame(.text, [0x00], rsv1: true)) == .inflate(.text, ByteBuffer(bytes: [0x00])))
        #expect(machine.inflated(.success(ByteBuffer(bytes: [0xC0, 0xAF])), kind: .text)
                == .sendClose(.invalidPayload, reason: "invalid UTF-8", thenCloseTCP: true))
    }

    @Test func inflateFailuresGetTheirCodes() {
        var bomb = WebSocketStateMachine(maxMessageSize: 100, deflate: true)
        #expect(bomb.inflated(.failure(.tooBig), kind: .binary)
                == .sendClose(.messageTooBig, reason: "message too big", thenCloseTCP: true))
        #expect(bomb.closeLimit == .inflatedSize)
        var corrupt = WebSocketStateMachine(maxMessageSize: 100, deflate: true)
        #expect(corrupt.inflated(.failure(.corrupt), kind: .binary)
                == .sendClose(.invalidPayload, reason: "invalid compressed data", thenCloseTCP: true))
        #expect(corrupt.closeLimit == .corruptCompression)
    }
}
