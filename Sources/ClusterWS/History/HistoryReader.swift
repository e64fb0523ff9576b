import NIOCore

/// Reads a stream's history: its current position, and the messages a client
/// missed since the position it last saw.
struct HistoryReader: Sendable {
    let redis: any RedisCommands
    let keys: ClusterKeys
    let history: ClusterConfiguration.History

    /// What a recovery found.
    enum Outcome: Sendable {
        /// Every message after the client's position, in order, and the position after them.
        case recovered([(offset: UInt64, message: WebSocketMessage)], StreamPosition)
        /// The client cannot have what it missed; it starts again from the position.
        case failed(ClusterProtocol.Reason, StreamPosition)
    }

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

    /// The messages of `stream` after `position`, up to its current one.
    func recover(_ stream: HistoryStream, after position: StreamPosition) async throws -> Outcome {
        let now = try await current(stream)
        guard now.epoch == position.epoch else { return .failed(.epochChanged, now) }
        guard position.offset <= now.offset else { return .failed(.invalidOffset, now) }
        let missing = now.offset - position.offset
        guard missing > 0 else { return .recovered([], now) }
        guard missing <= UInt64(history.maxLength) else { return .failed(.trimmed, now) }
        let key = HistoryKeys(channel: channel(of: stream)).stream
        let reply = try await redis.send(RedisCommand("XRANGE", .string(key), .string("\(position.offset + 1)-0"),
                                                      .string("\(now.offset)-0")))
        var messages: [(offset: UInt64, message: WebSocketMessage)] = []
        var expected = position.offset + 1
        for entry in reply.array ?? [] {
            guard let parts = entry.array, parts.count == 2, let id = parts[0].string,
                  let offset = id.split(separator: "-").first.flatMap({ UInt64($0) }),
                  let fields = parts[1].array, fields.count >= 2, case .bulkString(let bytes) = fields[1],
                  let envelope = try? Envelope(decoding: bytes) else { continue }
            // A gap: something in between was trimmed (or the stream was cut short).
            guard offset == expected else { return .failed(.trimmed, now) }
            messages.append((offset, WebSocketMessage(kind: envelope.kind, data: envelope.payload)))
            expected += 1
        }
        guard UInt64(messages.count) == missing else {
            return .failed(messages.isEmpty ? .expired : .trimmed, now)
        }
        return .recovered(messages, now)
    }
}
