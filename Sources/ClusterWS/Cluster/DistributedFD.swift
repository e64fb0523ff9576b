/// A connection anywhere in the cluster: the node it is on, that node's
/// epoch (drawn at every start), and the node-local connection number.
///
/// The epoch means a node restarted with the same id never delivers a message
/// addressed to an old connection to a new one that got the same number.
/// Local numbers are never reused within an epoch.
///
/// The string form is `<node>#<epoch as 16 hex digits>#<fd>`, e.g.
/// `server1#9f86d081884c7d65#42`; ``init(_:)`` parses it back and rejects
/// anything else.
public struct DistributedFD: Hashable, Sendable, Codable, LosslessStringConvertible {
    /// The node id (`DISTRIBUTE_SERVER_ID`).
    public let node: String
    /// The node's epoch when the connection opened.
    public let epoch: UInt64
    /// The connection number on that node.
    public let fd: UInt64

    /// Creates an address.
    public init(node: String, epoch: UInt64, fd: UInt64) {
        self.node = node
        self.epoch = epoch
        self.fd = fd
    }

    /// The string form, `node#epoch#fd` (epoch as 16 lowercase hex digits).
    public var description: String {
        "\(node)#\(Self.hex(epoch: epoch))#\(fd)"
    }

    /// An epoch as 16 lowercase hex digits, as in the string form and in Redis.
    static func hex(epoch: UInt64) -> String {
        let hex = String(epoch, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// Parses the string form; `nil` for anything malformed.
    public init?(_ description: String) {
        guard let last = description.lastIndex(of: "#") else { return nil }
        let head = description[..<last]
        guard let middle = head.lastIndex(of: "#") else { return nil }
        let node = head[..<middle]
        let epochText = head[head.index(after: middle)...]
        let fdText = description[description.index(after: last)...]
        guard !node.isEmpty, epochText.count == 16, epochText.allSatisfy(\.isHexDigit),
              epochText.allSatisfy({ !$0.isUppercase }),
              let epoch = UInt64(epochText, radix: 16),
              !fdText.isEmpty, fdText.allSatisfy({ $0.isASCII && $0.isNumber }), let fd = UInt64(fdText),
              String(fd) == fdText
        else { return nil }
        self.init(node: String(node), epoch: epoch, fd: fd)
    }

    /// Decodes the string form; malformed text is a `DecodingError`.
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let parsed = DistributedFD(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a DistributedFD: \(text)"))
        }
        self = parsed
    }

    /// Encodes the string form.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
