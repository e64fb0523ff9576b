@testable import ClusterWS
import NIOCore
import Testing

@Suite("Envelope encoding: exact sizes, one buffer per PUBLISH", .timeLimit(.minutes(1)))
struct EnvelopeEncodingTests {
    static let samples: [Envelope] = [
        Envelope(target: .fds(epoch: 9, [1, 2, 3]), kind: .binary, originNode: "a", originEpoch: 5, payload: ByteBuffer(bytes: [0, 1])),
        Envelope(target: .user("ü"), kind: .text, originNode: "n", originEpoch: 1, sequence: 7, payload: ByteBuffer(string: "hi")),
        Envelope(target: .room("r"), kind: .text, originNode: "n", originEpoch: 1, payload: ByteBuffer()),
        Envelope(target: .users(["a", "bé", ""]), kind: .binary, originNode: "n", originEpoch: 1, payload: ByteBuffer(string: "x")),
        Envelope(target: .all(except: [DistributedFD(node: "n2", epoch: 3, fd: 4)]), kind: .text, originNode: "n",
                 originEpoch: 1, sequence: 2, payload: ByteBuffer(repeating: 1, count: 300)),
        Envelope(target: .user("u"), kind: .text, originNode: "n", originEpoch: 1, sequence: 1, payload: ByteBuffer(string: "h"),
                 history: StreamPosition(offset: 42, epoch: "e-1")),
    ]

    /// `encodedSize` is what `write(to:)` writes, and what it writes decodes
    /// back to the same envelope (the RESP length prefix of a PUBLISH relies on it).
    @Test(arguments: samples)
    func theSizeIsExactAndTheBytesRoundTrip(_ envelope: Envelope) throws {
        let bytes = try envelope.encoded()
        #expect(bytes.readableBytes == envelope.encodedSize)
        #expect(try Envelope(decoding: bytes) == envelope)
    }

    /// The in-place PUBLISH is byte for byte the generic command with the
    /// envelope as an argument, and routes to the same slot.
    @Test(arguments: samples)
    func aPublishWritesTheEnvelopeInPlace(_ envelope: Envelope) throws {
        for verb in ["PUBLISH", "SPUBLISH"] {
            let direct = RedisCommand(publish: verb, channel: "cws:{u}:user", envelope: envelope)
            let generic = RedisCommand(verb, .string("cws:{u}:user"), .bytes(try envelope.encoded()))
            #expect(direct.bytes == generic.bytes)
            #expect(direct.slot == generic.slot)
            #expect(direct.replyCount == 1)
        }
    }

    /// What cannot be encoded is refused before anything is written.
    @Test func namesAndListsPastTheirLengthFieldsAreRefused() {
        let long = String(repeating: "x", count: 65_536)
        let bad = [
            Envelope(target: .user(long), kind: .text, originNode: "n", originEpoch: 1, payload: ByteBuffer()),
            Envelope(target: .room("r"), kind: .text, originNode: long, originEpoch: 1, payload: ByteBuffer()),
            Envelope(target: .users(["a", long]), kind: .text, originNode: "n", originEpoch: 1, payload: ByteBuffer()),
        ]
        for envelope in bad {
            #expect(throws: EnvelopeError.self) { try envelope.validate() }
            #expect(throws: EnvelopeError.self) { try envelope.encoded() }
        }
    }
}
