/// The checks of an application's arguments, once, where they enter the API
/// (counted in `clusterws_limit_hits_total` when they refuse).
struct ArgumentChecks: Sendable {
    let limits: ClusterConfiguration.Limits
    let counters: NodeCounters

    func check(_ destination: Destination) throws(ClusterError) {
        switch destination {
        case .user(let uid): try check(uid: uid)
        case .room(let room): try check(room: room)
        case .users(let uids):
            try counted { () throws(ClusterError) in
                try Names.check(uids, .uid, maxBytes: limits.maxNameBytes, maxCount: limits.maxTargetsPerCall)
            }
        case .connections(let node, _, _): try check(node: node)
        case .everyone(let except):
            try counted { () throws(ClusterError) in
                guard except.count <= limits.maxTargetsPerCall else {
                    throw .tooManyTargets(count: except.count, limit: limits.maxTargetsPerCall)
                }
                for fd in except { try Names.check(fd.node, .serverID, maxBytes: Names.maxIdentifierBytes) }
            }
        }
    }

    func check(uid: String) throws(ClusterError) {
        try counted { () throws(ClusterError) in try Names.check(uid, .uid, maxBytes: limits.maxNameBytes) }
    }

    func check(room: String) throws(ClusterError) {
        try counted { () throws(ClusterError) in try Names.check(room, .room, maxBytes: limits.maxNameBytes) }
    }

    /// A node id the application gave (in a ``DistributedFD``).
    func check(node: String) throws(ClusterError) {
        try counted { () throws(ClusterError) in try Names.check(node, .serverID, maxBytes: Names.maxIdentifierBytes) }
    }

    /// Counts a refusal once, under the limit it hit.
    func counted(_ body: () throws(ClusterError) -> Void) throws(ClusterError) {
        do {
            try body()
        } catch {
            switch error {
            case .tooManyTargets: counters.hit(.targetsPerCall)
            case .tooManyRooms: counters.hit(.roomsPerConnection)
            default: counters.hit(.names)
            }
            throw error
        }
    }
}
