import NIOCore

/// Reads a stream's history: its current position, and the messages a client
/// missed since the position it last saw.
struct HistoryReader: Sendable {
    let redis: any RedisCommands
    let keys: ClusterKeys
    let history: ClusterConfiguration.History

    /// Whether a client at some position can recover.
    enum Check: Sendable, Equatable {
        /// Messages `first…now.offset` are to be replayed (none when `first > now.offset`).
        case replay(first: UInt64, now: StreamPosition)
        /// The client cannot have what it missed; it starts again from the position.
        case failed(ClusterProtocol.Reason, StreamPosition)
    }

    /// Messages read per history page: a page is at most this many messages
    /// (each at most `maxMessageSize`), so one reply stays far below
    /// `maxRedisReplyBytes` whatever the history holds.
    static let pageSize = 64

    func channel(of stream: HistoryStream) -> String {
        switch stream {
        case .user(let uid): keys.userChannel(uid)
        case .room(let room): keys.roomChannel(room)
        }
    }

    /// The stream's last position (offset 0 of a new epoch for a stream that has none).
    func current(_ stream: HistoryStream) async throws -> StreamPosition {
        let meta = HistoryKeys(channel: channel(of: stream)).meta
        let reply = try await redis.evaluate(HistoryScript.current, keys: [meta], [
            .integer(history.epochLifetime.milliseconds), .string(HistoryScript.newEpoch()),
        ])
        guard let parts = reply.array, parts.count == 2, let top = parts[0].int, top >= 0, let epoch = parts[1].string else {
            throw RedisError.protocolError("unexpected reply to the history position script")
        }
        return StreamPosition(offset: UInt64(top), epoch: epoch)
    }

    /// Whether `stream` still holds every message after `position`.
    func check(_ stream: HistoryStream, after position: StreamPosition) async throws -> Check {
        let now = try await current(stream)
        guard now.epoch == position.epoch else { return .failed(.epochChanged, now) }
        guard position.offset <= now.offset else { return .failed(.invalidOffset, now) }
        let missing = now.offset - position.offset
        guard missing > 0 else { return .replay(first: position.offset + 1, now: now) }
        guard missing <= UInt64(history.maxLength) else { return .failed(.trimmed, now) }
        // The first missing message must still be there (trimmed by length, or expired with the stream).
        let key = HistoryKeys(channel: channel(of: stream)).stream
        let first = try await redis.send(RedisCommand("XRANGE", .string(key), .string("\(position.offset + 1)-0"), "+", "COUNT", 1))
        guard let entry = first.array?.first else { return .failed(.expired, now) }
        guard Self.offset(of: entry) == position.offset + 1 else { return .failed(.trimmed, now) }
        return .replay(first: position.offset + 1, now: now)
    }

    /// Up to ``pageSize`` messages of `stream` from offset `first` to `last`;
    /// `nil` when the history no longer starts at `first` (trimmed meanwhile).
    func page(_ stream: HistoryStream, from first: UInt64, to last: UInt64) async throws
        -> [(offset: UInt64, message: WebSocketMessage)]? {
        let key = HistoryKeys(channel: channel(of: stream)).stream
        let reply = try await redis.send(RedisCommand("XRANGE", .string(key), .string("\(first)-0"), .string("\(last)-0"),
                                                      "COUNT", .integer(Self.pageSize)))
        var messages: [(offset: UInt64, message: WebSocketMessage)] = []
        var expected = first
        for entry in reply.array ?? [] {
            guard Self.offset(of: entry) == expected, let parts = entry.array, parts.count == 2,
                  let fields = parts[1].array, fields.count >= 2, case .bulkString(let bytes) = fields[1],
                  let envelope = try? Envelope(decoding: bytes) else { return nil }
            messages.append((expected, WebSocketMessage(kind: envelope.kind, data: envelope.payload)))
            expected += 1
        }
        return messages.isEmpty ? nil : messages
    }

    /// The offset of a stream entry (`<offset>-0`).
    private static func offset(of entry: RedisValue) -> UInt64? {
        entry.array?.first?.string?.split(separator: "-").first.flatMap { UInt64($0) }
    }
}
