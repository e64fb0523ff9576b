import Synchronization

/// The node's own connections: fd → socket, uid → fds, room → fds.
///
/// It decides when the node must subscribe to a user's or a room's channel
/// (first local member) or may unsubscribe (last one gone), and makes those
/// subscriber calls itself, in the order it decides them, so the channel set
/// in Redis always ends where the tables are.
///
/// Every change goes through the actor; the tables themselves sit behind a
/// lock, so the hot paths (a send looking up its local targets, the router
/// resolving an envelope) read them from any thread without an actor hop.
package actor LocalRegistry {
    private struct Entry {
        let socket: WebSocket
        var uid: String?
        var rooms: Set<String> = []
        /// Set for a connection that speaks the client protocol (`clusterws.v1`).
        var session: ProtocolSession?
    }

    private struct Tables {
        var entries: [UInt64: Entry] = [:]
        var users: [String: Set<UInt64>] = [:]
        /// Each user's sockets, kept beside `users` (a user has a few devices): a send
        /// to a user returns this array as it is, no lookup per fd and no new array.
        var userSockets: [String: [WebSocket]] = [:]
        var rooms: [String: Set<UInt64>] = [:]

        mutating func addSocket(_ socket: WebSocket, user uid: String) {
            userSockets[uid, default: []].append(socket)
        }

        mutating func removeSocket(_ fd: UInt64, user uid: String) {
            guard var sockets = userSockets[uid] else { return }
            sockets.removeAll { $0.id == fd }
            userSockets[uid] = sockets.isEmpty ? nil : sockets
        }

        func sockets(_ fds: Set<UInt64>?) -> [WebSocket] {
            fds.map { $0.compactMap { entries[$0]?.socket } } ?? []
        }
    }

    private let tables = Mutex(Tables())
    private let subscriber: any RedisPubSub
    private let keys: ClusterKeys

    init(subscriber: any RedisPubSub, keys: ClusterKeys) {
        self.subscriber = subscriber
        self.keys = keys
    }

    package nonisolated var count: Int { tables.withLock { $0.entries.count } }

    func add(_ fd: UInt64, _ socket: WebSocket, session: ProtocolSession? = nil) {
        tables.withLock { $0.entries[fd] = Entry(socket: socket, session: session) }
    }

    /// The client-protocol session of `fd`, if it has one.
    nonisolated func session(_ fd: UInt64) -> ProtocolSession? {
        tables.withLock { $0.entries[fd]?.session }
    }

    /// Every client-protocol session on this node.
    nonisolated func sessions() -> [ProtocolSession] {
        tables.withLock { $0.entries.values.compactMap(\.session) }
    }

    /// A stream's local connections: raw ones, and those that speak the client protocol.
    nonisolated func targets(of stream: HistoryStream) -> (raw: [WebSocket], sessions: [ProtocolSession]) {
        tables.withLock { tables in
            let fds: Set<UInt64>?
            switch stream {
            case .user(let uid): fds = tables.users[uid]
            case .room(let room): fds = tables.rooms[room]
            }
            var raw: [WebSocket] = []
            var sessions: [ProtocolSession] = []
            for fd in fds ?? [] {
                guard let entry = tables.entries[fd] else { continue }
                if let session = entry.session { sessions.append(session) } else { raw.append(entry.socket) }
            }
            return (raw, sessions)
        }
    }

    /// Removes closed connections (unknown ones are skipped); returns the
    /// bound ones with their uids, and the rooms that lost their last local
    /// member. Channels no longer needed are unsubscribed in one go.
    func remove(_ fds: [UInt64]) async
        -> (bound: [(fd: UInt64, uid: String)], emptiedRooms: [String], memberships: [(fd: UInt64, rooms: [String])]) {
        let keys = self.keys
        let (bound, gone, emptied, memberships) = tables.withLock { tables in
            var gone: [String] = []
            var emptied: [String] = []
            var bound: [(fd: UInt64, uid: String)] = []
            var memberships: [(fd: UInt64, rooms: [String])] = []
            for fd in fds {
                guard let entry = tables.entries.removeValue(forKey: fd) else { continue }
                if !entry.rooms.isEmpty { memberships.append((fd, Array(entry.rooms))) }
                if let uid = entry.uid {
                    bound.append((fd, uid))
                    tables.removeSocket(fd, user: uid)
                    if Self.detach(fd, from: &tables.users, key: uid) { gone.append(keys.userChannel(uid)) }
                }
                for room in entry.rooms where Self.detach(fd, from: &tables.rooms, key: room) {
                    gone.append(keys.roomChannel(room))
                    emptied.append(room)
                }
            }
            return (bound, gone, emptied, memberships)
        }
        if !gone.isEmpty { try? await subscriber.unsubscribe(gone) }
        return (bound, emptied, memberships)
    }

    /// The uid `fd` is bound to, if any.
    nonisolated func uid(of fd: UInt64) -> String? {
        tables.withLock { $0.entries[fd]?.uid }
    }

    /// Binds `fd` to `uid` (replacing an earlier uid). Returns the earlier uid,
    /// or `nil`; throws ``ClusterError/unknownConnection(_:)`` for an fd that is not open here.
    func bind(_ fd: UInt64, uid: String) async throws -> String? {
        let keys = self.keys
        let (previous, gone, first) = try tables.withLock { tables -> (String?, [String], Bool) in
            guard var entry = tables.entries[fd] else { throw ClusterError.unknownConnection(String(fd)) }
            let previous = entry.uid
            guard previous != uid else { return (previous, [], false) }
            entry.uid = uid
            tables.entries[fd] = entry
            var gone: [String] = []
            if let previous {
                tables.removeSocket(fd, user: previous)
                if Self.detach(fd, from: &tables.users, key: previous) { gone.append(keys.userChannel(previous)) }
            }
            tables.addSocket(entry.socket, user: uid)
            return (previous, gone, Self.attach(fd, to: &tables.users, key: uid))
        }
        if !gone.isEmpty { try await subscriber.unsubscribe(gone) }
        if first { try await subscriber.subscribe([keys.userChannel(uid)]) }
        return previous
    }

    /// Unbinds `fd`; returns the uid it had.
    func unbind(_ fd: UInt64) async throws -> String? {
        let (uid, last) = tables.withLock { tables -> (String?, Bool) in
            guard var entry = tables.entries[fd], let uid = entry.uid else { return (nil, false) }
            entry.uid = nil
            tables.entries[fd] = entry
            tables.removeSocket(fd, user: uid)
            return (uid, Self.detach(fd, from: &tables.users, key: uid))
        }
        if let uid, last { try await subscriber.unsubscribe([keys.userChannel(uid)]) }
        return uid
    }

    /// Adds `fd` to `room`; `true` if it is the room's first local member.
    /// - Throws: ``ClusterError/tooManyRooms(limit:)`` when `fd` is in `maxRooms` rooms already.
    func join(_ fd: UInt64, room: String, maxRooms: Int) async throws -> Bool {
        let first = try tables.withLock { tables -> Bool in
            guard var entry = tables.entries[fd] else { throw ClusterError.unknownConnection(String(fd)) }
            guard !entry.rooms.contains(room) else { return false }
            guard entry.rooms.count < maxRooms else { throw ClusterError.tooManyRooms(limit: maxRooms) }
            entry.rooms.insert(room)
            tables.entries[fd] = entry
            return Self.attach(fd, to: &tables.rooms, key: room)
        }
        guard first else { return false }
        try await subscriber.subscribe([keys.roomChannel(room)])
        return true
    }

    /// Removes `fd` from `room`; `true` if it was the room's last local member.
    func leave(_ fd: UInt64, room: String) async throws -> Bool {
        let last = tables.withLock { tables -> Bool in
            guard var entry = tables.entries[fd], entry.rooms.remove(room) != nil else { return false }
            tables.entries[fd] = entry
            return Self.detach(fd, from: &tables.rooms, key: room)
        }
        guard last else { return false }
        try await subscriber.unsubscribe([keys.roomChannel(room)])
        return true
    }

    /// The rooms with at least one local member.
    nonisolated func localRooms() -> [String] { tables.withLock { Array($0.rooms.keys) } }


    nonisolated func sockets(user uid: String) -> [WebSocket] {
        tables.withLock { $0.userSockets[uid] ?? [] }
    }

    nonisolated func sockets(room: String) -> [WebSocket] {
        tables.withLock { $0.sockets($0.rooms[room]) }
    }

    /// The local connections of any of `uids` (each connection has one uid, so no repeats).
    nonisolated func sockets(users uids: [String]) -> [WebSocket] {
        tables.withLock { tables in uids.flatMap { tables.userSockets[$0] ?? [] } }
    }

    nonisolated func sockets(fds: [UInt64]) -> [WebSocket] {
        tables.withLock { tables in fds.compactMap { tables.entries[$0]?.socket } }
    }

    nonisolated func allSockets(except: Set<UInt64>) -> [WebSocket] {
        tables.withLock { $0.entries.compactMap { except.contains($0.key) ? nil : $0.value.socket } }
    }

    /// Every bound connection and its uid (for TTL refresh and shutdown).
    nonisolated func bindings() -> [(fd: UInt64, uid: String)] {
        tables.withLock { $0.entries.compactMap { fd, entry in entry.uid.map { (fd, $0) } } }
    }

    /// Adds `fd` under `key`; `true` if it is the first.
    private static func attach(_ fd: UInt64, to table: inout [String: Set<UInt64>], key: String) -> Bool {
        let first = table[key]?.isEmpty ?? true
        table[key, default: []].insert(fd)
        return first
    }

    /// Removes `fd` from `key`; `true` if that emptied it.
    private static func detach(_ fd: UInt64, from table: inout [String: Set<UInt64>], key: String) -> Bool {
        guard var members = table[key], members.remove(fd) != nil else { return false }
        if members.isEmpty {
            table[key] = nil
            return true
        }
        table[key] = members
        return false
    }
}
