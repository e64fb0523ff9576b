@testable import ClusterWS
import NIOCore
import NIOEmbedded
import Testing

/// The command handler on an embedded channel: requests out, replies in, time
/// advanced by hand.
@Suite("Redis command handler (embedded channel)", .timeLimit(.minutes(2)))
struct RedisCommandHandlerTests {
    private func channel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(handler: RedisCommandHandler())
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        return channel
    }

    private func request(_ channel: EmbeddedChannel, _ command: RedisCommand, timeout: TimeAmount = .seconds(5))
        -> EventLoopFuture<RedisValue> {
        let promise = channel.eventLoop.makePromise(of: RedisValue.self)
        channel.writeAndFlush(RedisRequest(command: command, promise: promise, deadline: channel.eventLoop.now + timeout), promise: nil)
        return promise.futureResult
    }

    @Test func repliesMeetTheirCommandsInOrderAndTheBytesGoOut() throws {
        let channel = try channel()
        let first = request(channel, RedisCommand("GET", "a"))
        let second = request(channel, RedisCommand("GET", "b"))
        let written = try channel.readOutbound(as: ByteBuffer.self)
        #expect(written.map { String(buffer: $0) } == "*2\r\n$3\r\nGET\r\n$1\r\na\r\n")
        try channel.writeInbound(RedisValue.bulkString(ByteBuffer(string: "A")))
        try channel.writeInbound(RedisValue.error("ERR no"))
        #expect(try first.wait() == .bulkString(ByteBuffer(string: "A")))
        #expect(throws: RedisError.reply("ERR no")) { try second.wait() }
    }

    @Test func aLateCommandTimesOutButItsReplyIsStillMatchedAndDropped() throws {
        let channel = try channel()
        let slow = request(channel, RedisCommand("DEBUG", "SLEEP", "1"), timeout: .milliseconds(100))
        let next = request(channel, RedisCommand("PING"))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(150))
        #expect(throws: RedisError.timeout) { try slow.wait() }
        try channel.writeInbound(RedisValue.simpleString("OK"))    // the slow one's late reply
        try channel.writeInbound(RedisValue.simpleString("PONG"))
        #expect(try next.wait() == .simpleString("PONG"))
    }

    @Test func everythingPendingFailsWhenTheChannelCloses() throws {
        let channel = try channel()
        let pending = (0..<3).map { request(channel, RedisCommand("GET", .string("k\($0)"))) }
        try channel.close().wait()
        for future in pending { #expect(throws: RedisError.connectionLost) { try future.wait() } }
        let after = request(channel, RedisCommand("PING"))  // written after the close: fails at once
        #expect(throws: RedisError.self) { try after.wait() }
    }

    @Test func pushesGoToTheSinkAndAnUnexpectedReplyClosesTheChannel() throws {
        let received = Recorder<String>()
        let channel = EmbeddedChannel(handler: RedisCommandHandler(pushSink: { received.append($0.channel) }))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        try channel.writeInbound(RedisValue.array([.bulkString(ByteBuffer(string: "message")),
                                                   .bulkString(ByteBuffer(string: "news")),
                                                   .bulkString(ByteBuffer(string: "x"))]))
        #expect(received.all == ["news"])
        #expect(throws: RedisError.self) { try channel.writeInbound(RedisValue.simpleString("OK")) }  // nobody asked
        #expect(!channel.isActive)
    }
}
