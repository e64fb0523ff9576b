/// Redis Cluster's key → hash slot mapping: CRC16 (XMODEM) of the key, or of
/// its hash tag, modulo 16,384.
///
/// A hash tag is the part between the first `{` and the first `}` after it,
/// when that part is not empty: `{user:42}:fds` and `{user:42}:meta` share a
/// slot, so one node holds both and a script may touch them together.
package enum RedisClusterSlot {
    package static let count = 16_384

    /// The slot of `key` (bytes as Redis sees them).
    package static func of(_ key: some Collection<UInt8>) -> Int {
        Int(crc16(hashTag(key)) % UInt16(count))
    }

    /// The slot of a UTF-8 key.
    package static func of(_ key: String) -> Int { of(Array(key.utf8)) }

    /// The bytes Redis hashes: the hash tag if there is a non-empty one, else the whole key.
    package static func hashTag<Key: Collection<UInt8>>(_ key: Key) -> Key.SubSequence {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")) else { return key[...] }
        let afterOpen = key.index(after: open)
        guard let close = key[afterOpen...].firstIndex(of: UInt8(ascii: "}")), close != afterOpen else { return key[...] }
        return key[afterOpen..<close]
    }

    /// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as in Redis's `crc16.c`.
    package static func crc16(_ bytes: some Sequence<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc = (crc << 8) ^ table[Int(UInt8(crc >> 8) ^ byte)]
        }
        return crc
    }

    private static let table: [UInt16] = (0..<256).map { index in
        var crc = UInt16(index) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }
}
