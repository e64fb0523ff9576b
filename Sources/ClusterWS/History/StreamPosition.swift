/// Where a message is in the history of its stream (a user's or a room's):
/// its offset, counted from 1 by the stream, and the stream's epoch.
///
/// The epoch names one life of the stream: when Redis loses it (a restart
/// without persistence, a failover that lost the last writes, the stream
/// expired after `history.maxAge` without messages) the next message starts
/// a new epoch at offset 1, and a client that remembers the old epoch learns
/// that it cannot recover and must reload its state.
public struct StreamPosition: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The message's number in its stream (1, 2, 3, … with no gaps).
    public var offset: UInt64
    /// The stream's epoch (short random text).
    public var epoch: String

    /// A position; `offset` 0 means "before the first message".
    public init(offset: UInt64, epoch: String) {
        self.offset = offset
        self.epoch = epoch
    }

    public var description: String { "\(offset)@\(epoch)" }
}

/// A stream with history: every message to one user, or to one room.
public enum HistoryStream: Sendable, Hashable, CustomStringConvertible {
    case user(String)
    case room(String)

    /// `user:<uid>` or `room:<name>`: how the client protocol names it.
    public var description: String {
        switch self {
        case .user(let uid): "user:\(uid)"
        case .room(let room): "room:\(room)"
        }
    }

    /// Parses ``description``; `nil` for anything else.
    public init?(_ text: String) {
        if text.hasPrefix("user:") {
            self = .user(String(text.dropFirst(5)))
        } else if text.hasPrefix("room:") {
            self = .room(String(text.dropFirst(5)))
        } else {
            return nil
        }
    }
}
