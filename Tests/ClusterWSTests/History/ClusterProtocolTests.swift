@testable import ClusterWS
import Foundation
import NIOCore
import NIOHTTP1
import Testing

/// The client protocol's codec, without a network.
@Suite("Client protocol codec")
struct ClusterProtocolTests {
    private func json(_ message: WebSocketMessage) throws -> [String: Any] {
        #expect(message.kind == .text)
        return try #require(try JSONSerialization.jsonObject(with: Data(message.data.readableBytesView)) as? [String: Any])
    }

    /// Whatever the payload (quotes, backslashes, control characters, non-ASCII),
    /// the frame is valid JSON that gives it back.
    @Test(arguments: ["plain", "quote \" backslash \\ slash /", "tab\tnew\nline\r", "\u{0}\u{1}\u{1F}", "ümlaut 🚀", ""])
    func textMessagesRoundTripThroughJSON(text: String) throws {
        let frame = try json(ClusterProtocol.message(.text(text), stream: .user("a\"b"), at: StreamPosition(offset: 7, epoch: "e")))
        #expect(frame["type"] as? String == "message")
        #expect(frame["data"] as? String == text)
        #expect(frame["stream"] as? String == "user:a\"b")
        #expect((frame["offset"] as? NSNumber)?.uint64Value == 7)
        #expect(frame["binary"] == nil)
    }

    @Test func binaryMessagesAreBase64() throws {
        let bytes: [UInt8] = [0, 1, 2, 254, 255]
        let frame = try json(ClusterProtocol.message(.binary(ByteBuffer(bytes: bytes))))
        #expect(frame["binary"] as? Bool == true)
        #expect(frame["stream"] == nil && frame["offset"] == nil)
        #expect(Data(base64Encoded: frame["data"] as? String ?? "").map(Array.init) == bytes)
    }

    @Test func recoveryOutcomes() throws {
        let yes = try json(ClusterProtocol.recovered(.room("r"), replayed: 3, reason: nil, at: StreamPosition(offset: 9, epoch: "x")))
        #expect(yes["recovered"] as? Bool == true && (yes["replayed"] as? NSNumber)?.intValue == 3 && yes["reason"] == nil)
        let no = try json(ClusterProtocol.recovered(.room("r"), replayed: 0, reason: .epochChanged, at: StreamPosition(offset: 0, epoch: "y")))
        #expect(no["recovered"] as? Bool == false && no["reason"] as? String == "epoch_changed" && no["epoch"] as? String == "y")
    }

    @Test func positionsParseFromTheQueryAndBadOnesAreSkipped() {
        let valid = "12.k3f9.user%3Aal%2Eice"  // a uid with a dot
        var query = ["uid=x", "clusterws-position=\(valid)", "clusterws-position=3.e.room%3Alobby"]
        query += ["clusterws-position=x.e.user%3Ab", "clusterws-position=1..user%3Ac", "clusterws-position=1.e.other%3Ad",
                  "clusterws-position=%zz", "clusterws-position"]
        let request = WebSocketRequest(path: "/ws", uri: "/ws?" + query.joined(separator: "&"), headers: HTTPHeaders(),
                                       remoteAddress: nil, connectionID: 1)
        let positions = ClusterProtocol.positions(in: request)
        #expect(positions == [.user("al.ice"): StreamPosition(offset: 12, epoch: "k3f9"),
                              .room("lobby"): StreamPosition(offset: 3, epoch: "e")])
        // At most 64 are taken, whatever the request carries.
        let many = (0..<500).map { "clusterws-position=1.e.user%3Au\($0)" }.joined(separator: "&")
        let flood = WebSocketRequest(path: "/ws", uri: "/ws?" + many, headers: HTTPHeaders(), remoteAddress: nil, connectionID: 1)
        #expect(ClusterProtocol.positions(in: flood).count == ClusterProtocol.maxPositions)
    }

    @Test func envelopesCarryTheirHistoryPosition() throws {
        let envelope = Envelope(target: .room("r"), kind: .text, originNode: "n", originEpoch: 1, sequence: 3,
                                payload: ByteBuffer(string: "hi"), history: StreamPosition(offset: 41, epoch: "ep"))
        let bytes = try envelope.encoded()
        #expect(try Envelope(decoding: bytes) == envelope)
        var long = bytes
        long.writeInteger(UInt8(0))
        #expect(throws: EnvelopeError.trailingBytes(1)) { try Envelope(decoding: long) }
    }

    /// Every slot has a tag, and a history key hashes to its channel's slot
    /// whatever braces the channel's name holds.
    @Test(arguments: ["ns:user:alice", "ns:user:a{b}c", "ns:user:a{}b", "ns:room:{", "ns:room:}{x", "ns:user:"])
    func historyKeysShareTheirChannelsSlot(channel: String) {
        let keys = HistoryKeys(channel: channel)
        #expect(RedisClusterSlot.of(keys.stream) == RedisClusterSlot.of(channel))
        #expect(RedisClusterSlot.of(keys.meta) == RedisClusterSlot.of(channel))
    }
}
