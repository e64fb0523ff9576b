extension ClusterNode {
    /// Checks a uid against the naming rules (counted when refused).
    func check(uid: String) throws(ClusterError) {
        try counted { () throws(ClusterError) in try Names.check(uid, .uid, maxBytes: configuration.limits.maxNameBytes) }
    }

    /// Checks a room name against the naming rules (counted when refused).
    func check(room: String) throws(ClusterError) {
        try counted { () throws(ClusterError) in try Names.check(room, .room, maxBytes: configuration.limits.maxNameBytes) }
    }

    /// Checks a list of uids: their number, then each.
    func check(uids: [String]) throws(ClusterError) {
        try counted { () throws(ClusterError) in
            try Names.check(uids, .uid, maxBytes: configuration.limits.maxNameBytes,
                            maxCount: configuration.limits.maxTargetsPerCall)
        }
    }

    /// Checks a connection address made by the application (its node id).
    func check(fd: DistributedFD) throws(ClusterError) {
        try counted { () throws(ClusterError) in try Names.check(fd.node, .serverID, maxBytes: Names.maxIdentifierBytes) }
    }

    /// Checks an `except:` list: its length, then each address.
    func check(except: [DistributedFD]) throws(ClusterError) {
        try counted { () throws(ClusterError) in
            guard except.count <= configuration.limits.maxTargetsPerCall else {
                throw .tooManyTargets(count: except.count, limit: configuration.limits.maxTargetsPerCall)
            }
            for fd in except { try Names.check(fd.node, .serverID, maxBytes: Names.maxIdentifierBytes) }
        }
    }

    private func counted(_ body: () throws(ClusterError) -> Void) throws(ClusterError) {
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
