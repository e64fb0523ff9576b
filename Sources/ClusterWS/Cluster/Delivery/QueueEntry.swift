package import NIOCore

/// One stream entry of a node's queue.
package struct QueueEntry {
    package var id: String
    package var epoch: String?
    package var envelope: ByteBuffer

    /// `XREADGROUP` reply: [[stream, [[id, [field, value, …]], …]]].
    package static func parse(streamReply reply: RedisValue) -> [QueueEntry] {
        guard let streams = reply.array, let first = streams.first?.array, first.count == 2 else { return [] }
        return parse(first[1])
    }

    /// A list of [id, [field, value, …]] (deleted entries have a nil field list).
    package static func parse(_ list: RedisValue) -> [QueueEntry] {
        (list.array ?? []).compactMap { item in
            guard let pair = item.array, pair.count == 2, let id = pair[0].string else { return nil }
            let fields = pair[1].array ?? []
            var entry = QueueEntry(id: id, epoch: nil, envelope: ByteBuffer())
            for index in stride(from: 0, to: fields.count - 1, by: 2) {
                switch fields[index].string {
                case "epoch": entry.epoch = fields[index + 1].string
                case "env": entry.envelope = fields[index + 1].buffer ?? ByteBuffer()
                default: break
                }
            }
            return entry
        }
    }
}
