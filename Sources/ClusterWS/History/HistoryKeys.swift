/// Redis keys of a stream's history, next to its pub/sub channel.
///
/// On a Redis Cluster the script that writes history also publishes on the
/// channel, so the history keys must hash to the channel's slot whatever the
/// channel's name (a uid may contain `{` or `}`): they start with a short
/// hash tag chosen for that slot, `{<tag>}:<channel>:history`.
struct HistoryKeys: Sendable {
    /// The stream of messages (entries `<offset>-0`, field `m`: the envelope).
    let stream: String
    /// A hash: `epoch`, and `top` (the last offset given).
    let meta: String

    init(channel: String) {
        let tag = SlotTags.tag(forSlot: RedisClusterSlot.of(channel))
        stream = "{\(tag)}:\(channel):history"
        meta = "{\(tag)}:\(channel):history-meta"
    }
}

/// For every Redis Cluster slot, a short text that hashes to it (base-36
/// numbers, tried in order; built once, ≈ 160,000 CRC16s, a few ms).
enum SlotTags {
    private static let table: [String] = {
        var table = [String?](repeating: nil, count: RedisClusterSlot.count)
        var missing = RedisClusterSlot.count
        var candidate = 0
        while missing > 0 {
            let tag = String(candidate, radix: 36)
            let slot = RedisClusterSlot.of(tag)
            if table[slot] == nil {
                table[slot] = tag
                missing -= 1
            }
            candidate += 1
        }
        return table.map { $0 ?? "" }
    }()

    /// A tag that hashes to `slot` (0..<16384).
    static func tag(forSlot slot: Int) -> String { table[slot] }
}
