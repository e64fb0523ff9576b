@testable import ClusterWS
import Testing

@Suite("Redis Cluster key slots (CRC16 with hash tags)")
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
