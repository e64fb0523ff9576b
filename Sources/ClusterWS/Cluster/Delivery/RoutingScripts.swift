import NIOCore

// The routing scripts of one Redis server: the queue driver's, and one message to many users.

/// The queue driver's routing on one Redis server. Every node has a durable inbox, a Redis Stream read
/// through a consumer group. Sends route to the streams of the nodes that
/// need them in one round trip (a Lua script, loaded once and run with
/// EVALSHA); consumers acknowledge an entry only after it was handed to the
/// sockets. At-least-once: an entry read but not acknowledged when a
/// consumer's connection drops is read again (so duplicates are bounded by
/// consumers × concurrency per outage).
enum QueueScript {
    /// The target nodes and their epochs (`epochs`), from the locals `ns`,
    /// `mode` (user|room|all|node), `target` (room or node), `userKey` and
    /// `targetEpoch` (node mode): a user's nodes from its connections, a
    /// room's from the room's node set, everyone's from the node set (live ones).
    static let targets = """
    local epochs = {}
    if mode == 'user' then
      for _, fd in ipairs(redis.call('SMEMBERS', userKey)) do
        local node, nodeEpoch = string.match(fd, '^(.*)#(%x+)#%d+$')
        if node then epochs[node] = nodeEpoch end
      end
    elseif mode == 'node' then
      epochs[target] = targetEpoch
    else
      local set = (mode == 'room') and (ns .. ':room-nodes:' .. target) or (ns .. ':nodes')
      for _, node in ipairs(redis.call('SMEMBERS', set)) do
        local nodeEpoch = redis.call('GET', ns .. ':alive:' .. node)
        if nodeEpoch then epochs[node] = nodeEpoch end
      end
    end
    """

    /// ARGV: namespace, mode (user|room|all|node), target, self node, maxlen,
    /// envelope, user key, target epoch (node mode).
    /// Returns how many node streams got the entry.
    static let script = LuaScript("""
    local ns, mode, target, self, maxlen, env = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
    local userKey, targetEpoch = ARGV[7], ARGV[8]
    \(targets)
    local count = 0
    for node, epoch in pairs(epochs) do
      if node ~= self then
        redis.call('XADD', ns .. ':queue:' .. node, 'MAXLEN', '~', maxlen, '*', 'epoch', epoch, 'env', env)
        count = count + 1
      end
    end
    return count
    """)
}

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

extension MultiUserScript {
    /// The script's arguments for `uids` (distinct), with `transport` `publish` or `xadd`.
    static func arguments(_ uids: [String], envelope: ByteBuffer, transport: String,
                          context: DriverContext) -> [RedisArgument] {
        [.string(context.keys.namespace), .string(context.id), .string(transport), .integer(context.queue.maxLength),
         .bytes(envelope)] + uids.map { .string(context.keys.user($0)) }
    }

    /// Per uid, how many other nodes got it (zeros if Redis answered something else).
    static func counts(_ reply: RedisValue, expected: Int) -> [Int] {
        let counts = reply.array?.map { $0.int ?? 0 } ?? []
        return counts.count == expected ? counts : Array(repeating: 0, count: expected)
    }
}

extension QueueScript {
    /// The routing script's arguments for a destination other than `.users`.
    static func arguments(_ delivery: RemoteDelivery, context: DriverContext) -> [RedisArgument] {
        let keys = context.keys
        let (mode, name, userKey, targetEpoch): (String, String, String, String) = switch delivery.destination {
        case .user(let uid): ("user", uid, keys.user(uid), "")
        case .room(let room): ("room", room, "", "")
        case .everyone, .users: ("all", "", "", "")
        case .connections(let node, let epoch, _): ("node", node, "", DistributedFD.hex(epoch: epoch))
        }
        return [.string(keys.namespace), .string(mode), .string(name), .string(context.id),
                .integer(context.queue.maxLength), .bytes(delivery.envelope), .string(userKey), .string(targetEpoch)]
    }
}
