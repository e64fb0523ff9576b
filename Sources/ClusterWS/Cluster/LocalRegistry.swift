/// The node's own connections: fd → socket, uid → fds, room → fds.
///
/// It decides when the node must subscribe to a user's or a room's channel
/// (first local member) or may unsubscribe (last one gone), and makes those
/// subscriber calls itself, in the order it decides them, so the channel set
/// in Redis always ends where the tables are.
package actor LocalRegistry {
    private struct Entry {
        let socket: WebSocket
        var uid: String?
        var rooms: Set<String> = []
    }

    private var entries: [UInt64: Entry] = [:]
    private var users: [String: Set<UInt64>] = [:]
    private var rooms: [String: Set<UInt64>] = [:]
    private let subscriber: RedisSubscriber
    private let keys: ClusterKeys

    init(subscriber: RedisSubscriber, keys: ClusterKeys) {
        self.subscriber = subscriber
        self.keys = keys
    }

    package var count: Int { entries.count }

    func add(_ fd: UInt64, _ socket: WebSocket) {
        entries[fd] = Entry(socket: socket)
    }

    /// Removes closed connections (unknown ones are skipped); returns the
    /// bound ones with their uids, and the rooms that lost their last local
    /// member. Channels no longer needed are unsubscribed in one go.
    func remove(_ fds: [UInt64]) async -> (bound: [(fd: UInt64, uid: String)], emptiedRooms: [String]) {
        var gone: [String] = []
        var emptied: [String] = []
        var bound: [(fd: UInt64, uid: String)] = []
        for fd in fds {
            guard let entry = entries.removeValue(forKey: fd) else { continue }
            if let uid = entry.uid {
                bound.append((fd, uid))
                if detach(fd, from: &users, key: uid) { gone.append(keys.userChannel(uid)) }
            }
            for room in entry.rooms where detach(fd, from: &rooms, key: room) {
                gone.append(keys.roomChannel(room))
                emptied.append(room)
            }
        }
        if !gone.isEmpty { try? await subscriber.unsubscribe(gone) }
        return (bound, emptied)
    }

    /// Binds `fd` to `uid` (replacing an earlier uid). Returns the earlier uid,
    /// or `nil`; throws ``ClusterError/unknownConnection(_:)`` for an fd that is not open here.
    func bind(_ fd: UInt64, uid: String) async throws -> String? {
        guard var entry = entries[fd] else { throw ClusterError.unknownConnection(String(fd)) }
        let previous = entry.uid
        guard previous != uid else { return previous }
        entry.uid = uid
        entries[fd] = entry
        var gone: [String] = []
        if let previous, detach(fd, from: &users, key: previous) { gone.append(keys.userChannel(previous)) }
        let first = attach(fd, to: &users, key: uid)
        if !gone.isEmpty { try await subscriber.unsubscribe(gone) }
        if first { try await subscriber.subscribe([keys.userChannel(uid)]) }
        return previous
    }

    /// Unbinds `fd`; returns the uid it had.
    func unbind(_ fd: UInt64) async throws -> String? {
        guard var entry = entries[fd], let uid = entry.uid else { return nil }
        entry.uid = nil
        entries[fd] = entry
        if detach(fd, from: &users, key: uid) { try await subscriber.unsubscribe([keys.userChannel(uid)]) }
        return uid
    }

    /// Adds `fd` to `room`; `true` if it is the room's first local member.
    func join(_ fd: UInt64, room: String) async throws -> Bool {
        guard var entry = entries[fd] else { throw ClusterError.unknownConnection(String(fd)) }
        guard entry.rooms.insert(room).inserted else { return false }
        entries[fd] = entry
        guard attach(fd, to: &rooms, key: room) else { return false }
        try await subscriber.subscribe([keys.roomChannel(room)])
        return true
    }

    /// Removes `fd` from `room`; `true` if it was the room's last local member.
    func leave(_ fd: UInt64, room: String) async throws -> Bool {
        guard var entry = entries[fd], entry.rooms.remove(room) != nil else { return false }
        entries[fd] = entry
        guard detach(fd, from: &rooms, key: room) else { return false }
        try await subscriber.unsubscribe([keys.roomChannel(room)])
        return true
    }

    /// The rooms with at least one local member.
    func localRooms() -> [String] { Array(rooms.keys) }

    func uid(of fd: UInt64) -> String? { entries[fd]?.uid }

    func sockets(user uid: String) -> [WebSocket] {
        users[uid].map { $0.compactMap { entries[$0]?.socket } } ?? []
    }

    func sockets(room: String) -> [WebSocket] {
        rooms[room].map { $0.compactMap { entries[$0]?.socket } } ?? []
    }

    func sockets(fds: [UInt64]) -> [WebSocket] {
        fds.compactMap { entries[$0]?.socket }
    }

    func allSockets(except: Set<UInt64>) -> [WebSocket] {
        entries.compactMap { except.contains($0.key) ? nil : $0.value.socket }
    }

    /// Every bound connection and its uid (for TTL refresh and shutdown).
    func bindings() -> [(fd: UInt64, uid: String)] {
        entries.compactMap { fd, entry in entry.uid.map { (fd, $0) } }
    }

    /// Adds `fd` under `key`; `true` if it is the first.
    private func attach(_ fd: UInt64, to table: inout [String: Set<UInt64>], key: String) -> Bool {
        let first = table[key]?.isEmpty ?? true
        table[key, default: []].insert(fd)
        return first
    }

    /// Removes `fd` from `key`; `true` if that emptied it.
    private func detach(_ fd: UInt64, from table: inout [String: Set<UInt64>], key: String) -> Bool {
        guard var members = table[key], members.remove(fd) != nil else { return false }
        if members.isEmpty {
            table[key] = nil
            return true
        }
        table[key] = members
        return false
    }
}

/// Errors of the cluster runtime's API.
public enum ClusterError: Error, Sendable, Hashable {
    /// The connection is not open on this node (closed, or it lives on another node).
    case unknownConnection(String)
    /// The node has not started, or has shut down.
    case notRunning
    /// A configuration value is not usable.
    case invalidConfiguration(String)
}
