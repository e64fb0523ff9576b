import NIOCore

/// One message to many users, at a cost that grows with payload + number of
/// users, never payload × users: the message is encoded once, as one
/// envelope naming every user (``Envelope/Target/users(_:)``), and goes once
/// to each node that has any of them (its node channel with pub/sub, its
/// stream with the queue driver). Each receiving node delivers to its own
/// connections of those users.
///
/// On one Redis server this is one script run: it reads the users' fds,
/// groups them by node, and publishes (or `XADD`s) the same bytes once per
/// node. On a Redis Cluster the users' keys live in different slots, so the
/// node reads them first (pipelined per master) and then writes once per node.
enum MultiUserScript {
    /// ARGV: namespace, self node, transport (publish|xadd), maxlen, envelope,
    /// then one user key per user. Returns, per user, how many other nodes got it.
    static let script = LuaScript("""
    local ns, self, transport, maxlen, env = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
    local nodesOf, epochs = {}, {}
    for i = 6, #ARGV do
      local set = {}
      for _, fd in ipairs(redis.call('SMEMBERS', ARGV[i])) do
        local node, epoch = string.match(fd, '^(.*)#(%x+)#%d+$')
        if node and node ~= self then set[node] = true; epochs[node] = epoch end
      end
      nodesOf[#nodesOf + 1] = set
    end
    local reached = {}
    for node, epoch in pairs(epochs) do
      if transport == 'publish' then
        reached[node] = redis.call('PUBLISH', ns .. ':node:' .. node, env) > 0
      else
        redis.call('XADD', ns .. ':queue:' .. node, 'MAXLEN', '~', maxlen, '*', 'epoch', epoch, 'env', env)
        reached[node] = true
      end
    end
    local counts = {}
    for i, set in ipairs(nodesOf) do
      local n = 0
      for node in pairs(set) do if reached[node] then n = n + 1 end end
      counts[i] = n
    end
    return counts
    """)
}

extension ClusterNode {
    /// Sends `message` to the other nodes' connections of `uids` (distinct,
    /// validated); returns, per uid, how many other nodes had it.
    func sendRemote(users uids: [String], _ message: WebSocketMessage) async throws -> [Int] {
        let envelope = try encode(.users(uids), message)
        if redisConfiguration.isCluster { return try await sendRemoteAcrossSlots(users: uids, envelope) }
        let transport = configuration.driver == .queue ? "xadd" : "publish"
        let reply = try await evaluate(MultiUserScript.script, [
            .string(keys.namespace), .string(id), .string(transport), .integer(configuration.queue.maxLength),
            .bytes(envelope),
        ] + uids.map { .string(keys.user($0)) })
        let counts = reply.array?.map { $0.int ?? 0 } ?? []
        return counts.count == uids.count ? counts : Array(repeating: 0, count: uids.count)
    }

    /// The same on a Redis Cluster: the users' fds in one pipelined read (split
    /// per master), then one write per node that has any of them.
    private func sendRemoteAcrossSlots(users uids: [String], _ envelope: ByteBuffer) async throws -> [Int] {
        let sets = try await redis.send(batch: uids.map { RedisCommand("SMEMBERS", .string(keys.user($0))) })
        var nodesOf: [Set<String>] = []
        var epochs: [String: UInt64] = [:]
        for result in sets {
            var nodes = Set<String>()
            for case let fd? in (try result.get().array ?? []).map({ $0.string.flatMap(DistributedFD.init) })
            where fd.node != id {
                nodes.insert(fd.node)
                epochs[fd.node] = fd.epoch
            }
            nodesOf.append(nodes)
        }
        var reached = Set<String>()
        if !epochs.isEmpty {
            let nodes = Array(epochs.keys)
            if configuration.driver == .queue {
                let written = try await appendToStreams(envelope, epochs: epochs)
                reached = Set(written)
            } else {
                let replies = try await redis.send(batch: nodes.map { node in
                    RedisCommand("SPUBLISH", .string(keys.nodeChannel(node)), .bytes(envelope))
                })
                for (node, reply) in zip(nodes, replies) where (try? reply.get().int ?? 0) ?? 0 > 0 { reached.insert(node) }
            }
        }
        return nodesOf.map { $0.intersection(reached).count }
    }
}
