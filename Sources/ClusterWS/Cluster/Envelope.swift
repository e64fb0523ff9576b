package import NIOCore

/// What travels on the cluster's Redis channels: a small, versioned binary
/// format, length-checked on decode.
///
/// ```
/// "CW" | version u8 | kind u8 | opcode u8 | origin node (u16 len + bytes) | origin epoch u64
///      | sequence u64 (version 2 only) | kind fields | payload (u32 len + bytes)
///      | history (version 2, optional): offset u64, epoch (u16 len + bytes)      — nothing may follow
/// kind 1 fds:   target epoch u64, count u32, count × fd u64
/// kind 2 user:  uid (u16 len + bytes)
/// kind 3 room:  room (u16 len + bytes)
/// kind 4 all:   except count u32, count × (node u16 len + bytes, epoch u64, fd u64)
/// kind 5 users: count u32, count × uid (u16 len + bytes)
/// ```
///
/// The history block is appended by the Redis script that wrote the message
/// to its user's or room's history stream (see ``HistoryScript``): the
/// message's offset in that stream and the stream's epoch.
///
/// Version 2 adds `sequence`: with the origin node and epoch it names the
/// message, so a node that receives it twice (subscribed on two nodes of a
/// Redis Cluster shard) delivers it once. Version 1 (no sequence: 0) is still
/// read; 0 means "no id" and is never de-duplicated.
///
/// Encoding never traps: a name longer than 65,535 bytes or a list longer
/// than 2³²−1 is an ``EnvelopeError`` (the API's own limits are far below).
package struct Envelope: Sendable, Equatable {
    package enum Target: Sendable, Equatable {
        /// These connections on the receiving node, if its epoch is `epoch`.
        case fds(epoch: UInt64, [UInt64])
        /// Every local connection of this user.
        case user(String)
        /// Every local member of this room.
        case room(String)
        /// Every connection, except these.
        case all(except: [DistributedFD])
        /// Every local connection of any of these users (one message for many
        /// users: the payload travels once per node, not once per user).
        case users([String])
    }

    package var target: Target
    package var kind: WebSocketMessage.Kind
    package var originNode: String
    package var originEpoch: UInt64
    /// The message's number among its origin's messages (0: none, never de-duplicated).
    package var sequence: UInt64
    package var payload: ByteBuffer
    /// Where the message is in its stream's history, when it was written there.
    package var history: StreamPosition?

    static let magic: (UInt8, UInt8) = (UInt8(ascii: "C"), UInt8(ascii: "W"))
    static let version: UInt8 = 2

    package init(target: Target, kind: WebSocketMessage.Kind, originNode: String, originEpoch: UInt64,
                 sequence: UInt64 = 0, payload: ByteBuffer, history: StreamPosition? = nil) {
        self.target = target
        self.kind = kind
        self.originNode = originNode
        self.originEpoch = originEpoch
        self.sequence = sequence
        self.payload = payload
        self.history = history
    }

    /// What names this message cluster-wide, or `nil` when it has no sequence.
    package var id: MessageID? {
        sequence == 0 ? nil : MessageID(originNode: originNode, originEpoch: originEpoch, sequence: sequence)
    }

    package func encoded() throws(EnvelopeError) -> ByteBuffer {
        try validate()
        return encodedValidated()
    }

    /// The encoding of an envelope ``validate()`` accepted: one allocation of
    /// exactly ``encodedSize`` bytes.
    package func encodedValidated() -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(encodedSize)
        write(to: &buffer)
        return buffer
    }

    /// Throws when a name or a list does not fit its length field; after that,
    /// ``write(to:)`` and ``encodedValidated()`` write exactly ``encodedSize`` bytes.
    package func validate() throws(EnvelopeError) {
        func name(_ text: String) throws(EnvelopeError) {
            guard text.utf8.count <= Int(UInt16.max) else { throw .tooLong("a name of \(text.utf8.count) bytes") }
        }
        func count(_ value: Int) throws(EnvelopeError) {
            guard value <= Int(UInt32.max) else { throw .tooLong("a count of \(value)") }
        }
        try name(originNode)
        switch target {
        case .fds(_, let fds): try count(fds.count)
        case .user(let text), .room(let text): try name(text)
        case .all(let except):
            try count(except.count)
            for fd in except { try name(fd.node) }
        case .users(let uids):
            try count(uids.count)
            for uid in uids { try name(uid) }
        }
        try count(payload.readableBytes)
        if let history { try name(history.epoch) }
    }

    /// Bytes ``write(to:)`` writes.
    package var encodedSize: Int {
        var size = 3 + 2 + 2 + originNode.utf8.count + 8 + 8 + 4 + payload.readableBytes
        switch target {
        case .fds(_, let fds): size += 8 + 4 + 8 * fds.count
        case .user(let text), .room(let text): size += 2 + text.utf8.count
        case .all(let except): size += 4 + except.reduce(0) { $0 + 2 + $1.node.utf8.count + 16 }
        case .users(let uids): size += 4 + uids.reduce(0) { $0 + 2 + $1.utf8.count }
        }
        if let history { size += 8 + 2 + history.epoch.utf8.count }
        return size
    }

    /// Writes the envelope at the end of `buffer`; only for an envelope
    /// ``validate()`` accepted (lengths are written as they are).
    package func write(to buffer: inout ByteBuffer) {
        buffer.writeInteger(Self.magic.0)
        buffer.writeInteger(Self.magic.1)
        buffer.writeInteger(Self.version)
        switch target {
        case .fds: buffer.writeInteger(UInt8(1))
        case .user: buffer.writeInteger(UInt8(2))
        case .room: buffer.writeInteger(UInt8(3))
        case .all: buffer.writeInteger(UInt8(4))
        case .users: buffer.writeInteger(UInt8(5))
        }
        buffer.writeInteger(kind.rawValue)
        buffer.writeValidatedShortString(originNode)
        buffer.writeInteger(originEpoch)
        buffer.writeInteger(sequence)
        switch target {
        case .fds(let epoch, let fds):
            buffer.writeInteger(epoch)
            buffer.writeInteger(UInt32(truncatingIfNeeded: fds.count))
            for fd in fds { buffer.writeInteger(fd) }
        case .user(let name), .room(let name):
            buffer.writeValidatedShortString(name)
        case .all(let except):
            buffer.writeInteger(UInt32(truncatingIfNeeded: except.count))
            for fd in except {
                buffer.writeValidatedShortString(fd.node)
                buffer.writeInteger(fd.epoch)
                buffer.writeInteger(fd.fd)
            }
        case .users(let uids):
            buffer.writeInteger(UInt32(truncatingIfNeeded: uids.count))
            for uid in uids { buffer.writeValidatedShortString(uid) }
        }
        buffer.writeInteger(UInt32(truncatingIfNeeded: payload.readableBytes))
        buffer.writeImmutableBuffer(payload)
        if let history {
            buffer.writeInteger(history.offset)
            buffer.writeValidatedShortString(history.epoch)
        }
    }

    /// Appends a history block to an encoded envelope that has none (what
    /// the history scripts do on Redis; the queue driver on a Redis Cluster
    /// does it on the node).
    static func appendHistory(_ position: StreamPosition, to encoded: inout ByteBuffer) throws(EnvelopeError) {
        encoded.writeInteger(position.offset)
        try encoded.writeShortString(position.epoch)
    }

    /// Decodes one envelope; every length is checked against what is there.
    package init(decoding bytes: ByteBuffer) throws(EnvelopeError) {
        var buffer = bytes
        guard buffer.readInteger(as: UInt8.self) == Self.magic.0, buffer.readInteger(as: UInt8.self) == Self.magic.1 else {
            throw .notAnEnvelope
        }
        guard let version = buffer.readInteger(as: UInt8.self) else { throw .truncated }
        guard version == 1 || version == Self.version else { throw .unsupportedVersion(version) }
        guard let kindByte = buffer.readInteger(as: UInt8.self), let opcode = buffer.readInteger(as: UInt8.self) else {
            throw .truncated
        }
        guard let kind = WebSocketMessage.Kind(rawValue: opcode) else { throw .invalidField("opcode \(opcode)") }
        let origin = try buffer.readShortString()
        guard let originEpoch = buffer.readInteger(as: UInt64.self) else { throw .truncated }
        var sequence: UInt64 = 0
        if version >= 2 {
            guard let value = buffer.readInteger(as: UInt64.self) else { throw .truncated }
            sequence = value
        }
        let target: Target
        switch kindByte {
        case 1:
            guard let epoch = buffer.readInteger(as: UInt64.self), let count = buffer.readInteger(as: UInt32.self) else {
                throw .truncated
            }
            guard Int(count) * 8 <= buffer.readableBytes else { throw .truncated }
            var fds: [UInt64] = []
            fds.reserveCapacity(Int(count))
            for _ in 0..<count {
                guard let fd = buffer.readInteger(as: UInt64.self) else { throw .truncated }
                fds.append(fd)
            }
            target = .fds(epoch: epoch, fds)
        case 2: target = .user(try buffer.readShortString())
        case 3: target = .room(try buffer.readShortString())
        case 4:
            guard let count = buffer.readInteger(as: UInt32.self) else { throw .truncated }
            guard Int(count) * 18 <= buffer.readableBytes else { throw .truncated }
            var except: [DistributedFD] = []
            for _ in 0..<count {
                let node = try buffer.readShortString()
                guard let epoch = buffer.readInteger(as: UInt64.self), let fd = buffer.readInteger(as: UInt64.self) else {
                    throw .truncated
                }
                except.append(DistributedFD(node: node, epoch: epoch, fd: fd))
            }
            target = .all(except: except)
        case 5:
            guard let count = buffer.readInteger(as: UInt32.self) else { throw .truncated }
            guard Int(count) * 2 <= buffer.readableBytes else { throw .truncated }  // each uid is at least its length
            var uids: [String] = []
            uids.reserveCapacity(Int(count))
            for _ in 0..<count { uids.append(try buffer.readShortString()) }
            target = .users(uids)
        default:
            throw .invalidField("kind \(kindByte)")
        }
        guard let length = buffer.readInteger(as: UInt32.self) else { throw .truncated }
        guard let payload = buffer.readSlice(length: Int(length)) else { throw .truncated }
        var history: StreamPosition?
        if version >= 2, buffer.readableBytes > 0 {
            guard let offset = buffer.readInteger(as: UInt64.self) else { throw .truncated }
            history = StreamPosition(offset: offset, epoch: try buffer.readShortString())
        }
        guard buffer.readableBytes == 0 else { throw .trailingBytes(buffer.readableBytes) }
        self.init(target: target, kind: kind, originNode: origin, originEpoch: originEpoch, sequence: sequence,
                  payload: payload, history: history)
    }
}

/// Why bytes on a cluster channel are not a valid envelope.
package enum EnvelopeError: Error, Equatable {
    case notAnEnvelope
    case unsupportedVersion(UInt8)
    case truncated
    case invalidField(String)
    case trailingBytes(Int)
    /// Encoding: a name or a list does not fit its length field.
    case tooLong(String)
}

extension ByteBuffer {
    fileprivate mutating func writeShortString(_ text: String) throws(EnvelopeError) {
        guard let length = UInt16(exactly: text.utf8.count) else { throw .tooLong("a name of \(text.utf8.count) bytes") }
        writeInteger(length)
        writeString(text)
    }

    /// A name ``Envelope/validate()`` checked: its length fits 16 bits.
    fileprivate mutating func writeValidatedShortString(_ text: String) {
        writeInteger(UInt16(truncatingIfNeeded: text.utf8.count))
        writeString(text)
    }

    fileprivate mutating func readShortString() throws(EnvelopeError) -> String {
        guard let length = readInteger(as: UInt16.self) else { throw .truncated }
        guard let bytes = readSlice(length: Int(length)) else { throw .truncated }
        let valid = bytes.withUnsafeReadableBytes { UTF8Validator.isValid($0) }
        guard valid else { throw .invalidField("name is not UTF-8") }
        return String(buffer: bytes)
    }
}
