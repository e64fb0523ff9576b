import NIOCore

/// A member of a room, cluster-wide: one connection.
public struct PresenceMember: Sendable, Hashable {
    /// The uid the connection had when it joined (its fd's text for a connection with none).
    public var uid: String
    /// The connection, on whichever node it is.
    public var fd: DistributedFD
    /// The metadata the application gave at `join` (for example a display name as JSON), if any.
    public var metadata: String?
    /// The node the connection is on.
    public var node: String { fd.node }

    /// A member.
    public init(uid: String, fd: DistributedFD, metadata: String? = nil) {
        self.uid = uid
        self.fd = fd
        self.metadata = metadata
    }
}

/// A user joined a room (its first connection there) or left it (its last
/// connection there left, closed, or its node died).
public struct PresenceEvent: Sendable, Hashable {
    /// Joined or left.
    public enum Kind: String, Sendable, Hashable {
        case join
        case leave
    }

    public var kind: Kind
    public var room: String
    public var uid: String
    /// The connection that joined first, or left last.
    public var fd: DistributedFD
    /// The joining connection's metadata (none on a leave).
    public var metadata: String?

    /// An event.
    public init(kind: Kind, room: String, uid: String, fd: DistributedFD, metadata: String? = nil) {
        self.kind = kind
        self.room = room
        self.uid = uid
        self.fd = fd
        self.metadata = metadata
    }

    /// Parses what the presence scripts publish: `join|leave` NUL room NUL
    /// uid NUL fd NUL metadata; `nil` for anything else.
    init?(payload: ByteBuffer) {
        let bytes = payload.readableBytesView
        var parts: [Substring] = []
        var start = bytes.startIndex
        for index in bytes.indices where bytes[index] == 0 && parts.count < 4 {
            parts.append(Substring(decoding: bytes[start..<index], as: UTF8.self))
            start = bytes.index(after: index)
        }
        guard parts.count == 4, let kind = Kind(rawValue: String(parts[0])),
              let fd = DistributedFD(String(parts[3])) else { return nil }
        let metadata = String(decoding: bytes[start...], as: UTF8.self)
        self.init(kind: kind, room: String(parts[1]), uid: String(parts[2]), fd: fd,
                  metadata: metadata.isEmpty ? nil : metadata)
    }

    /// How room members see it (with `presence.notifyMembers`): a JSON text
    /// frame `{"type":"presence","event":"join","room":…,"uid":…,"fd":…,"metadata":…}`.
    var frame: WebSocketMessage {
        var json = JSONWriter()
        json.field("type", "presence")
        json.field("event", kind.rawValue)
        json.field("room", room)
        json.field("uid", uid)
        json.field("fd", fd.description)
        if let metadata { json.field("metadata", metadata) }
        return json.message()
    }
}
