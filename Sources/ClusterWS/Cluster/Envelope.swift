package import NIOCore

/// What travels on the cluster's Redis channels: a small, versioned binary
/// format, length-checked on decode.
///
/// ```
/// "CW" | version u8 | kind u8 | opcode u8 | origin node (u16 len + bytes) | origin epoch u64
///      | kind fields | payload (u32 len + bytes)      — nothing may follow
/// kind 1 fds:   target epoch u64, count u32, count × fd u64
/// kind 2 user:  uid (u16 len + bytes)
/// kind 3 room:  room (u16 len + bytes)
/// kind 4 all:   except count u32, count × (node u16 len + bytes, epoch u64, fd u64)
/// ```
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
    }

    package var target: Target
    package var kind: WebSocketMessage.Kind
    package var originNode: String
    package var originEpoch: UInt64
    package var payload: ByteBuffer

    static let magic: (UInt8, UInt8) = (UInt8(ascii: "C"), UInt8(ascii: "W"))
    static let version: UInt8 = 1

    package init(target: Target, kind: WebSocketMessage.Kind, originNode: String, originEpoch: UInt64, payload: ByteBuffer) {
        self.target = target
        self.kind = kind
        self.originNode = originNode
        self.originEpoch = originEpoch
        self.payload = payload
    }

    package func encoded() -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(32 + originNode.utf8.count + payload.readableBytes)
        buffer.writeInteger(Self.magic.0)
        buffer.writeInteger(Self.magic.1)
        buffer.writeInteger(Self.version)
        switch target {
        case .fds: buffer.writeInteger(UInt8(1))
        case .user: buffer.writeInteger(UInt8(2))
        case .room: buffer.writeInteger(UInt8(3))
        case .all: buffer.writeInteger(UInt8(4))
        }
        buffer.writeInteger(kind.rawValue)
        buffer.writeShortString(originNode)
        buffer.writeInteger(originEpoch)
        switch target {
        case .fds(let epoch, let fds):
            buffer.writeInteger(epoch)
            buffer.writeInteger(UInt32(fds.count))
            for fd in fds { buffer.writeInteger(fd) }
        case .user(let name), .room(let name):
            buffer.writeShortString(name)
        case .all(let except):
            buffer.writeInteger(UInt32(except.count))
            for fd in except {
                buffer.writeShortString(fd.node)
                buffer.writeInteger(fd.epoch)
                buffer.writeInteger(fd.fd)
            }
        }
        buffer.writeInteger(UInt32(payload.readableBytes))
        buffer.writeImmutableBuffer(payload)
        return buffer
    }

    /// Decodes one envelope; every length is checked against what is there.
    package init(decoding bytes: ByteBuffer) throws(EnvelopeError) {
        var buffer = bytes
        guard buffer.readInteger(as: UInt8.self) == Self.magic.0, buffer.readInteger(as: UInt8.self) == Self.magic.1 else {
            throw .notAnEnvelope
        }
        guard let version = buffer.readInteger(as: UInt8.self) else { throw .truncated }
        guard version == Self.version else { throw .unsupportedVersion(version) }
        guard let kindByte = buffer.readInteger(as: UInt8.self), let opcode = buffer.readInteger(as: UInt8.self) else {
            throw .truncated
        }
        guard let kind = WebSocketMessage.Kind(rawValue: opcode) else { throw .invalidField("opcode \(opcode)") }
        let origin = try buffer.readShortString()
        guard let originEpoch = buffer.readInteger(as: UInt64.self) else { throw .truncated }
        let target: Target
        switch kindByte {
        case 1:
            guard let epoch = buffer.readInteger(as: UInt64.self), let count = buffer.readInteger(as: UInt32.self) else {
                throw .truncated
            }
            guard Int(count) * 8 <= buffer.readableBytes else { throw .truncated }
            var fds: [UInt64] = []
            fds.reserveCapacity(Int(count))
            for _ in 0..<count { fds.append(buffer.readInteger()!) }
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
        default:
            throw .invalidField("kind \(kindByte)")
        }
        guard let length = buffer.readInteger(as: UInt32.self) else { throw .truncated }
        guard let payload = buffer.readSlice(length: Int(length)) else { throw .truncated }
        guard buffer.readableBytes == 0 else { throw .trailingBytes(buffer.readableBytes) }
        self.init(target: target, kind: kind, originNode: origin, originEpoch: originEpoch, payload: payload)
    }
}

/// Why bytes on a cluster channel are not a valid envelope.
package enum EnvelopeError: Error, Equatable {
    case notAnEnvelope
    case unsupportedVersion(UInt8)
    case truncated
    case invalidField(String)
    case trailingBytes(Int)
}

extension ByteBuffer {
    fileprivate mutating func writeShortString(_ text: String) {
        let bytes = text.utf8
        precondition(bytes.count <= UInt16.max, "name too long for an envelope")
        writeInteger(UInt16(bytes.count))
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
