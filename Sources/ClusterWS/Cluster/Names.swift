/// Why a name was refused.
///
/// Names (uids, rooms, node ids, the namespace) become Redis keys and channel
/// names and travel in every envelope, so they are checked once where they
/// enter the API: not empty, at most a configured number of **bytes** (UTF-8,
/// not characters: `"👩‍👩‍👧‍👧"` is 25 bytes), and no control characters
/// (U+0000–U+001F, U+007F–U+009F), which would make logs and keys ambiguous.
public struct NameError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of name it was.
    public enum Kind: String, Sendable, Hashable {
        /// A user id.
        case uid
        /// A room name.
        case room
        /// A node id (``ClusterConfiguration/serverID``, or the node of a ``DistributedFD``).
        case serverID = "server id"
        /// An idempotency key (``Sender/publish(_:to:idempotencyKey:)``).
        case idempotencyKey = "idempotency key"
        /// ``ClusterConfiguration/namespace``.
        case namespace
    }

    /// What is wrong with it.
    public enum Problem: Sendable, Hashable {
        /// The name is empty.
        case empty
        /// The name is longer than the limit, in UTF-8 bytes.
        case tooLong(bytes: Int, limit: Int)
        /// The name holds a control character.
        case controlCharacter
        /// The name holds a character its kind may not hold (`#` in a server id).
        case reservedCharacter(Character)
    }

    /// What kind of name it was.
    public var kind: Kind
    /// What is wrong with it.
    public var problem: Problem

    /// Creates an error.
    public init(kind: Kind, problem: Problem) {
        self.kind = kind
        self.problem = problem
    }

    public var description: String {
        switch problem {
        case .empty: "the \(kind.rawValue) is empty"
        case .tooLong(let bytes, let limit): "the \(kind.rawValue) is \(bytes) bytes long; the limit is \(limit)"
        case .controlCharacter: "the \(kind.rawValue) contains a control character"
        case .reservedCharacter(let character): "the \(kind.rawValue) contains '\(character)'"
        }
    }
}

/// The naming rules, in one place.
enum Names {
    /// Longest node id or namespace, in bytes (they prefix every key and channel).
    static let maxIdentifierBytes = 64

    /// Checks `name`; throws ``ClusterError/invalidName(_:)``.
    static func check(_ name: String, _ kind: NameError.Kind, maxBytes: Int) throws(ClusterError) {
        if let problem = problem(name, maxBytes: maxBytes) {
            throw .invalidName(NameError(kind: kind, problem: problem))
        }
        if kind == .serverID, name.utf8.contains(UInt8(ascii: "#")) {
            throw .invalidName(NameError(kind: kind, problem: .reservedCharacter("#")))
        }
    }

    /// Checks many names of one kind, and their number.
    static func check(_ names: [String], _ kind: NameError.Kind, maxBytes: Int, maxCount: Int) throws(ClusterError) {
        guard names.count <= maxCount else { throw .tooManyTargets(count: names.count, limit: maxCount) }
        for name in names { try check(name, kind, maxBytes: maxBytes) }
    }

    /// What is wrong with `name`, or `nil`. The length is known without a scan;
    /// the scan for control characters stops at the first one.
    static func problem(_ name: String, maxBytes: Int) -> NameError.Problem? {
        let count = name.utf8.count
        if count == 0 { return .empty }
        if count > maxBytes { return .tooLong(bytes: count, limit: maxBytes) }
        var previous: UInt8 = 0
        for byte in name.utf8 {
            // C0 controls and DEL; C1 controls are U+0080–U+009F, encoded C2 80 … C2 9F.
            if byte < 0x20 || byte == 0x7F || (previous == 0xC2 && (0x80...0x9F).contains(byte)) {
                return .controlCharacter
            }
            previous = byte
        }
        return nil
    }
}
