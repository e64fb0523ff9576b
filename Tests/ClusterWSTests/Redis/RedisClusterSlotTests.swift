@testable import ClusterWS
import NIOCore
import Testing

@Suite("Redis Cluster key slots (CRC16 with hash tags)", .timeLimit(.minutes(5)))
struct RedisClusterSlotTests {
    /// The check value of CRC16/XMODEM, as in Redis's crc16.c test ("123456789" → 0x31C3).
    @Test func crc16MatchesTheReferenceCheckValue() {
        #expect(RedisClusterSlot.crc16(Array("123456789".utf8)) == 0x31C3)
    }

    /// Reference slots, as `CLUSTER KEYSLOT` answers them.
    @Test(arguments: [("foo", 12182), ("bar", 5061), ("hello", 866), ("", 0), ("a", 15495), ("user:1000", 1649)])
    func slotsMatchRedis(key: String, slot: Int) {
        #expect(RedisClusterSlot.of(key) == slot)
    }

    @Test func hashTagsFollowRedisRules() {
        #expect(RedisClusterSlot.of("{user1000}.following") == RedisClusterSlot.of("{user1000}.followers"))
        #expect(RedisClusterSlot.of("{user1000}.following") == RedisClusterSlot.of("user1000"))
        // Only the first { and the first } after it count.
        #expect(RedisClusterSlot.of("foo{bar}{zap}") == RedisClusterSlot.of("bar"))
        #expect(RedisClusterSlot.of("foo{{bar}}zap") == RedisClusterSlot.of("{bar"))
        // An empty tag or no closing brace: the whole key is hashed.
        #expect(RedisClusterSlot.of("foo{}{bar}") == Int(RedisClusterSlot.crc16(Array("foo{}{bar}".utf8)) % 16_384))
        #expect(RedisClusterSlot.of("foo{bar") == Int(RedisClusterSlot.crc16(Array("foo{bar".utf8)) % 16_384))
    }
}

@Suite("Redis Cluster replies from a peer we do not trust", .timeLimit(.minutes(5)))
struct RedisClusterReplyParsingTests {
    private let seed = RedisConfiguration.Address(host: "seed", port: 7000)

    @Test func redirectsOutsideTheSlotRangeAreNotRedirects() {
        #expect(Redirect(.reply("MOVED 3999 127.0.0.1:6381")) == .moved(slot: 3999, .init(host: "127.0.0.1", port: 6381)))
        #expect(Redirect(.reply("MOVED 16384 127.0.0.1:6381")) == nil)
        #expect(Redirect(.reply("MOVED -1 127.0.0.1:6381")) == nil)
        #expect(Redirect(.reply("ASK 1 127.0.0.1:70000")) == nil)
    }

    @Test func slotRangesThatMakeNoSenseAreSkipped() throws {
        func range(_ start: Int64, _ end: Int64, port: Int64 = 7001) -> RedisValue {
            .array([.integer(start), .integer(end), .array([.bulkString(ByteBuffer(string: "10.0.0.1")), .integer(port)])])
        }
        let map = try #require(RedisClusterClient.slotMap(
            from: .array([range(10, -5), range(0, 99_999), range(5, 2), range(0, 9, port: 0), range(100, 200)]),
            answeredBy: seed))
        #expect(map.slots.count == 16_384)
        #expect(map.slots.compactMap { $0 }.count == 101)
        #expect(map.slots[100] == .init(host: "10.0.0.1", port: 7001))
        #expect(RedisClusterClient.slotMap(from: .array([range(-1, -1)]), answeredBy: seed) == nil)
        #expect(RedisClusterClient.slotMap(from: .simpleString("OK"), answeredBy: seed) == nil)
    }
}
