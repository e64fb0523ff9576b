@testable import ClusterWS
import NIOCore
import NIOHTTP1
import Testing

@Suite("Transport building blocks", .timeLimit(.minutes(2)))
struct TransportUnitTests {
    @Test func acceptValueMatchesRFC6455Example() {
        // RFC 6455 §1.3.
        #expect(WebSocketAccept.value(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        #expect(SHA1.base64(Array("foobar".utf8)) == "Zm9vYmFy")
        #expect(SHA1.base64(Array("fooba".utf8)) == "Zm9vYmE=")
        #expect(SHA1.base64(Array("foob".utf8)) == "Zm9vYg==")
    }

    @Test(arguments: [
        ([0x48, 0x69], true), ([0xC3, 0xA9], true), ([0xE2, 0x82, 0xAC], true), ([0xF0, 0x9F, 0x98, 0x80], true),
        ([0xF4, 0x8F, 0xBF, 0xBF], true), ([0xED, 0x9F, 0xBF], true),
        ([0x80], false), ([0xC0, 0xAF], false), ([0xC1, 0xBF], false), ([0xE0, 0x80, 0xAF], false),
        ([0xED, 0xA0, 0x80], false), ([0xF4, 0x90, 0x80, 0x80], false), ([0xF5, 0x80, 0x80, 0x80], false),
        ([0xFF], false), ([0xC3], false), ([0xE2, 0x82], false), ([0xCE, 0xBA, 0xE1, 0xBD], false),
    ] as [([UInt8], Bool)])
    func utf8Validation(bytes: [UInt8], valid: Bool) {
        #expect(bytes.withUnsafeBytes { UTF8Validator.isValid($0) } == valid)
    }

    @Test func utf8ValidationAcrossChunks() {
        let euro: [UInt8] = [0xE2, 0x82, 0xAC]
        var validator = UTF8Validator()
        #expect(euro[..<1].withUnsafeBytes { validator.feed($0) })
        #expect(!validator.isComplete)
        #expect(euro[1...].withUnsafeBytes { validator.feed($0) })
        #expect(validator.isComplete)
        var broken = UTF8Validator()
        let partial: [UInt8] = [0xE2, 0x82], ascii: [UInt8] = [0x41]
        #expect(partial.withUnsafeBytes { broken.feed($0) })
        #expect(!ascii.withUnsafeBytes { broken.feed($0) })
        let longASCII = Array(repeating: UInt8(ascii: "a"), count: 1_000) + [0xC3, 0xA9] + Array(repeating: UInt8(ascii: "b"), count: 37)
        #expect(longASCII.withUnsafeBytes { UTF8Validator.isValid($0) })
        let badTail: [UInt8] = longASCII + [0xFE]
        #expect(!badTail.withUnsafeBytes { UTF8Validator.isValid($0) })
    }

    @Test func handshakeKeyValidation() {
        #expect(HandshakeValidator.isValidKey("dGhlIHNhbXBsZSBub25jZQ=="))
        #expect(!HandshakeValidator.isValidKey("dGhlIHNhbXBsZSBub25jZQ="))
        #expect(!HandshakeValidator.isValidKey("short=="))
        #expect(!HandshakeValidator.isValidKey("dGhlIHNhbXBsZSBub25j*Q=="))
    }

    @Test func frameHeaders() {
        for (length, header) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            #expect(WebSocketFrameEncoding.headerLength(payload: length) == header)
            let frame = WebSocketFrameEncoding.frame(opcode: 2, payload: ByteBuffer(repeating: 7, count: length),
                                                     allocator: ByteBufferAllocator())
            #expect(frame.readableBytes == header + length)
            #expect(frame.getInteger(at: 0, as: UInt8.self) == 0x82)
        }
        let close = WebSocketFrameEncoding.closeFrame(code: .goingAway, reason: String(repeating: "é", count: 100),
                                                      allocator: ByteBufferAllocator())
        #expect(close.readableBytes <= 127)
        #expect(close.getInteger(at: 2, as: UInt16.self) == 1001)
    }
}

@Suite("Duration conversions saturate instead of trapping", .timeLimit(.minutes(2)))
struct DurationConversionTests {
    @Test func conversionsRoundDownAndClamp() {
        #expect(Duration.milliseconds(1_500).milliseconds == 1_500)
        #expect(Duration.milliseconds(1_500).wholeSeconds == 1)
        #expect(Duration.microseconds(2_500).milliseconds == 2)
        #expect(Duration.seconds(3).nanoseconds == 3_000_000_000)
        #expect(Duration.seconds(Int64.max).milliseconds == Int.max)
        #expect(Duration.seconds(Int64.max).nanoseconds == Int64.max)
        #expect(Duration.seconds(-5).milliseconds == 0)
        #expect(Duration.seconds(saturating: .infinity) == .zero)
        #expect(Duration.seconds(saturating: 1e30) == .nanoseconds(Int64.max))
        #expect(Duration.seconds(Int64.max).timeAmount == .nanoseconds(Int64.max))
    }
}
