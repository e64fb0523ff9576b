/// A budget that refused something: `clusterws_limit_hits_total{limit}`.
package enum LimitKind: String, CaseIterable, Sendable {
    /// A connection's unread messages reached their budget: reading paused.
    case inboundBuffer = "inbound_buffer"
    /// Too many connections in the handshake: a new one was closed.
    case pendingHandshakes = "pending_handshakes"
    /// An HTTP request head over `maxRequestHeadBytes`: 431.
    case requestHead = "request_head"
    /// An HTTP request body over `maxRequestBodyBytes`: 413.
    case requestBody = "request_body"
    /// The node's connection limit: 503.
    case connections
    /// A user's connection limit across the cluster: 429.
    case connectionsPerUser = "connections_per_user"
    /// A name that breaks the naming rules, refused.
    case names
    /// A call with more targets than `maxTargetsPerCall`, refused.
    case targetsPerCall = "targets_per_call"
    /// A `join` past `maxRoomsPerConnection`, refused.
    case roomsPerConnection = "rooms_per_connection"
    /// A Redis reply bigger than `maxRedisReplyBytes`: the link was reset.
    case redisReply = "redis_reply"
    /// A recovering connection held more live messages than
    /// `history.maxRecoveryBufferBytes`: closed with 1013.
    case recoveryBuffer = "recovery_buffer"
    /// A connection asked for a permessage-deflate context past
    /// `compression.maxContextTakeoverConnections`: it got none (no context takeover).
    case compressionContexts = "compression_contexts"
    /// A compressed message would inflate past `maxMessageSize` (a deflate bomb): 1009.
    case inflatedSize = "inflated_size"
    /// A compressed message that is not valid deflate data: 1007.
    case corruptCompression = "corrupt_compression"
    /// A frame with RSV bits the connection did not negotiate (RSV1 without
    /// permessage-deflate, on a control or continuation frame; RSV2, RSV3): 1002.
    case reservedBits = "reserved_bits"
}
