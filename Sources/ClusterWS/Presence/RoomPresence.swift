import NIOCore

/// Room presence in Redis (with `presence.rooms` on): the scripts that add
/// and remove members and publish per-user events, and the member list.
struct RoomPresence: Sendable {
    let redis: any RedisCommands
    let keys: ClusterKeys
    /// `SPUBLISH` on a Redis Cluster, `PUBLISH` on one server.
    let publishVerb: String

    private func call(_ script: LuaScript, room: String, _ arguments: [RedisArgument])
        -> (LuaScript, [String], [RedisArgument]) {
        let presence = PresenceKeys(roomChannel: keys.roomChannel(room))
        return (script, [presence.members, presence.users],
                [.string(presence.events), .string(publishVerb), .string(room)] + arguments)
    }

    /// `fd` (of `uid`) joined `room`; `true` if it is the user's first connection there.
    func join(_ fd: DistributedFD, uid: String, room: String, metadata: String?) async throws -> Bool {
        let (script, keys, arguments) = call(PresenceScripts.join, room: room,
                                             [.string(fd.description), .string(uid), .string(metadata ?? "")])
        return try await redis.evaluate(script, keys: keys, arguments).int == 1
    }

    /// `fd` left `room`; `true` if it was the user's last connection there.
    func leave(_ fd: DistributedFD, room: String) async throws -> Bool {
        let (script, keys, arguments) = call(PresenceScripts.leave, room: room, [.string(fd.description)])
        return try await redis.evaluate(script, keys: keys, arguments).int == 1
    }

    /// Closed connections leave their rooms (posted: nobody waits; failures go to `onFailure`).
    func leave(_ memberships: [(fd: DistributedFD, rooms: [String])], onFailure: @escaping @Sendable (RedisError) -> Void) {
        for (fd, rooms) in memberships {
            for room in rooms {
                let (script, keys, arguments) = call(PresenceScripts.leave, room: room, [.string(fd.description)])
                redis.post(script, keys: keys, arguments, onFailure: onFailure)
            }
        }
    }

    /// Every member `node` has in `rooms` leaves (except those of `keepEpoch`).
    func removeMembers(ofNode node: String, keepEpoch: UInt64?, rooms: [String]) async throws {
        for room in rooms {
            let (script, keys, arguments) = call(PresenceScripts.leaveNode, room: room, [
                .string(node), .string(keepEpoch.map { DistributedFD.hex(epoch: $0) } ?? ""),
            ])
            _ = try await redis.evaluate(script, keys: keys, arguments)
        }
    }

    /// Every member of `room`, on every node (members of dead nodes are
    /// removed by the janitors within the liveness window).
    func members(of room: String) async throws -> [PresenceMember] {
        let presence = PresenceKeys(roomChannel: keys.roomChannel(room))
        let reply = try await redis.send(RedisCommand("HGETALL", .string(presence.members))).array ?? []
        var members: [PresenceMember] = []
        var index = 0
        while index + 1 < reply.count {
            defer { index += 2 }
            guard let fd = reply[index].string.flatMap(DistributedFD.init),
                  case .bulkString(let value) = reply[index + 1] else { continue }
            let bytes = value.readableBytesView
            let cut = bytes.firstIndex(of: 0) ?? bytes.endIndex
            let uid = String(decoding: bytes[..<cut], as: UTF8.self)
            let metadata = cut < bytes.endIndex ? String(decoding: bytes[bytes.index(after: cut)...], as: UTF8.self) : ""
            members.append(PresenceMember(uid: uid, fd: fd, metadata: metadata.isEmpty ? nil : metadata))
        }
        return members.sorted { ($0.uid, $0.fd.description) < ($1.uid, $1.fd.description) }
    }
}
