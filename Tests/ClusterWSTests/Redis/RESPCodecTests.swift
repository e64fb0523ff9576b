@testable import ClusterWS
import NIOCore
import NIOEmbedded
import Testing

@Suite("RESP codec", .timeLimit(.minutes(2)))
struct RESPCodecTests {
    @Test func encodesCommandsAsBulkArrays() {
        let command = RedisCommand("SET", "key", .bytes(ByteBuffer(bytes: [0, 1, 0xFF])), .integer(1234567890))
        #expect(command.bytes.readableBytesView.elementsEqual(
                Array("*4\r\n$3\r\nSET\r\n$3\r\nkey\r\n$3\r\n".utf8) + [0, 1, 0xFF] + Array("\r\n$10\r\n1234567890\r\n".utf8)))
        #expect(RedisCommand("PING").bytes.readableBytesView.elementsEqual("*1\r\n$4\r\nPING\r\n".utf8))
    }

    @Test func encodesMultiByteText() {
        let command = RedisCommand("ECHO", "héllo")
        #expect(command.bytes.readableBytesView.elementsEqual("*2\r\n$4\r\nECHO\r\n$6\r\nhéllo\r\n".utf8))
    }

    @Test func writesDecimals() {
        for value in [0, 9, 10, 99, 100, 65_535, Int.max, -1, -10, Int.min] {
            var buffer = ByteBuffer()
            buffer.writeDecimal(value)
            #expect(String(buffer: buffer) == String(value))
        }
    }

    @Test func negativeIntegerArgumentsAreEncoded() {
        let command = RedisCommand("LRANGE", "k", 0, -1)
        #expect(command.bytes.readableBytesView.elementsEqual("*4\r\n$6\r\nLRANGE\r\n$1\r\nk\r\n$1\r\n0\r\n$2\r\n-1\r\n".utf8))
    }

    /// A reply that grows past the budget before it completes (a bogus bulk
    /// length, trickled) closes the channel with a typed error instead of
    /// letting hiredis buffer it.
    @Test func aReplyPastTheBudgetClosesTheChannel() throws {
        let decoder = try #require(HiredisReplyDecoder(maxReplyBytes: 1_024))
        let channel = EmbeddedChannel(handler: decoder)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        try channel.writeInbound(ByteBuffer(string: "$1000000000\r\n" + String(repeating: "x", count: 1_000)))
        #expect(channel.isActive)
        #expect(throws: RedisError.self) { try channel.writeInbound(ByteBuffer(string: String(repeating: "x", count: 100))) }
        #expect(!channel.isActive)
        // Complete replies reset the count: many small ones in a row are fine.
        let fresh = EmbeddedChannel(handler: try #require(HiredisReplyDecoder(maxReplyBytes: 1_024)))
        try fresh.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        for _ in 0..<100 { try fresh.writeInbound(ByteBuffer(string: "$500\r\n" + String(repeating: "y", count: 500) + "\r\n")) }
        #expect(fresh.isActive)
    }

    private func decode(_ chunks: [String]) throws -> [RedisValue] {
        let channel = EmbeddedChannel(handler: try #require(HiredisReplyDecoder()))
        var values: [RedisValue] = []
        for chunk in chunks {
            try channel.writeInbound(ByteBuffer(string: chunk))
            while let value = try channel.readInbound(as: RedisValue.self) { values.append(value) }
        }
        return values
    }

    @Test func decodesEveryReplyType() throws {
        let values = try decode(["+OK\r\n-ERR bad\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n*-1\r\n"])
        #expect(values == [
            .simpleString("OK"), .error("ERR bad"), .integer(42), .bulkString(ByteBuffer(string: "abc")), .null,
            .array([.integer(1), .array([.bulkString(ByteBuffer())])]), .null,
        ])
    }

    @Test func decodesRepliesSplitAcrossReads() throws {
        let wire = "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n:7\r\n"
        let chunks = wire.map { String($0) }  // one byte at a time
        let values = try decode(chunks)
        #expect(values.count == 2)
        #expect(RedisPubSubMessage(push: values[0])?.channel == "ch")
        #expect(values[1] == .integer(7))
    }

    @Test func protocolErrorIsTypedAndClosesTheChannel() throws {
        let channel = EmbeddedChannel(handler: HiredisReplyDecoder())
        #expect(throws: RedisError.self) {
            try channel.writeInbound(ByteBuffer(string: "?garbage\r\n"))
        }
        #expect(!channel.isActive)
    }

    @Test func recognisesOnlyPubSubPushes() {
        let message = RedisValue.array([.bulkString(ByteBuffer(string: "message")), .bulkString(ByteBuffer(string: "c")),
                                        .bulkString(ByteBuffer(bytes: [0, 0]))])
        #expect(RedisPubSubMessage(push: message)?.payload == ByteBuffer(bytes: [0, 0]))
        let pmessage = RedisValue.array([.bulkString(ByteBuffer(string: "pmessage")), .bulkString(ByteBuffer(string: "c*")),
                                         .bulkString(ByteBuffer(string: "cx")), .bulkString(ByteBuffer(string: "p"))])
        #expect(RedisPubSubMessage(push: pmessage) == nil)  // never pattern-subscribed: not ours
        let confirmation = RedisValue.array([.bulkString(ByteBuffer(string: "subscribe")), .bulkString(ByteBuffer(string: "c")), .integer(1)])
        #expect(RedisPubSubMessage(push: confirmation) == nil)
        #expect(RedisPubSubMessage(push: .simpleString("OK")) == nil)
    }
    /// A subscriber's decoder hands `message`/`smessage` pushes to its sink
    /// directly (built from hiredis's callbacks, never as a RedisValue), split
    /// across reads or not; every other reply, including arrays that only look
    /// like a push, still goes down the pipeline in order.
    @Test func aSubscribersDecoderHandsMessagePushesToItsSink() throws {
        let pushes = Pushes()
        let sink: @Sendable (RedisPubSubMessage) -> Void = { message in pushes.items.append(message) }
        let decoder = try #require(HiredisReplyDecoder(pushSink: sink))
        let channel = EmbeddedChannel(handler: decoder)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        let wire = "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhel\u{0}o\r\n"
            + "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
            + "*3\r\n$8\r\nsmessage\r\n$3\r\n{s}\r\n$0\r\n\r\n"
            + "*2\r\n$7\r\nmessage\r\n$1\r\nx\r\n"  // two elements: not a push
            + ":7\r\n"
        var values: [RedisValue] = []
        for byte in wire.utf8 {  // one byte at a time, then all at once below
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
            while let value = try channel.readInbound(as: RedisValue.self) { values.append(value) }
        }
        try channel.writeInbound(ByteBuffer(string: wire))
        while let value = try channel.readInbound(as: RedisValue.self) { values.append(value) }
        let received = pushes.items
        #expect(received.map(\.channel) == ["ch", "{s}", "ch", "{s}"])
        #expect(received.map { Array($0.payload.readableBytesView) } == [Array("hel\u{0}o".utf8), [], Array("hel\u{0}o".utf8), []])
        let expected: [RedisValue] = [
            .array([.bulkString(ByteBuffer(string: "subscribe")), .bulkString(ByteBuffer(string: "ch")), .integer(1)]),
            .array([.bulkString(ByteBuffer(string: "message")), .bulkString(ByteBuffer(string: "x"))]),
            .integer(7),
        ]
        #expect(values == expected + expected)
        #expect(channel.isActive)
    }

    /// A push whose parts are not all bulk strings is a protocol error (a
    /// typed error, the channel closed), and a declared array length reserves
    /// a bounded amount up front: `*2147483647` with nothing behind it is fine.
    @Test func malformedPushesAndHugeDeclaredArraysAreBounded() throws {
        for wire in ["*3\r\n$7\r\nmessage\r\n*1\r\n:1\r\n", "*3\r\n$7\r\nmessage\r\n:5\r\n", "*3\r\n$7\r\nmessage\r\n+OK\r\n"] {
            let ignore: @Sendable (RedisPubSubMessage) -> Void = { _ in }
            let channel = EmbeddedChannel(handler: try #require(HiredisReplyDecoder(pushSink: ignore)))
            #expect(throws: RedisError.self) { try channel.writeInbound(ByteBuffer(string: wire)) }
            #expect(!channel.isActive)
        }
        let channel = EmbeddedChannel(handler: try #require(HiredisReplyDecoder(maxReplyBytes: 1_024)))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        try channel.writeInbound(ByteBuffer(string: "*2147483647\r\n:1\r\n:2\r\n"))
        #expect(try channel.readInbound(as: RedisValue.self) == nil)
        #expect(channel.isActive)
    }
}

/// What a decoder on an EmbeddedChannel (one thread) handed its push sink.
private final class Pushes: @unchecked Sendable {
    var items: [RedisPubSubMessage] = []
}
