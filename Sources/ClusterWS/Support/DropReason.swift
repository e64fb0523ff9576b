package import Logging

/// Why a message or a connection was dropped: `clusterws_drops_total{reason}`.
package enum DropReason: String, CaseIterable, Sendable {
    /// Bytes on a cluster channel or stream that are not an envelope.
    case garbage
    /// A message for a connection of an earlier run of this node.
    case stale
    /// A client that read too slowly, closed with 1008.
    case slowConsumer = "slow_consumer"
    /// A client over `maxMessagesPerSecond`, closed with 1008.
    case rateLimit = "rate_limit"
    /// A client over `maxBytesPerSecond`, closed with 1008.
    case byteRateLimit = "byte_rate_limit"
    /// A client that answered no keepalive ping, closed with 1008.
    case keepaliveTimeout = "keepalive_timeout"
    /// A posted message whose Redis part failed.
    case postFailed = "post_failed"
    /// A posted message for a Redis Cluster shard without a reachable master (a failover).
    case shardUnavailable = "shard_unavailable"
    /// A message from Redis the router's buffer had no room for.
    case subscriberOverflow = "subscriber_overflow"
    /// A message an event loop's fan-out queue had no room for.
    case fanOutOverflow = "fanout_overflow"
    /// Messages a client-protocol connection missed live that history no
    /// longer had; the client was told (`recovered: false`).
    case historyGap = "history_gap"
    /// A posted message refused because Redis was not keeping up (the posts
    /// awaiting its answer reached their byte bound).
    case redisBacklog = "redis_backlog"

    /// What the log says when it happens.
    var logMessage: String {
        switch self {
        case .garbage: "dropped bytes on a cluster channel or stream that are not an envelope"
        case .stale: "dropped a message for a connection of an earlier run of this node"
        case .slowConsumer: "closed a client that reads too slowly (1008)"
        case .rateLimit: "closed a client over its message rate (1008)"
        case .byteRateLimit: "closed a client over its byte rate (1008)"
        case .keepaliveTimeout: "closed a client that answered no keepalive ping (1008)"
        case .postFailed: "a posted message did not reach Redis; other nodes miss it"
        case .shardUnavailable: "a posted message's Redis Cluster shard has no reachable master (failover); dropped"
        case .subscriberOverflow: "the router's buffer is full; dropping messages from Redis"
        case .fanOutOverflow: "an event loop's fan-out queue is full; dropping messages for it"
        case .historyGap: "a client-protocol connection missed messages that history no longer has; the client was told"
        case .redisBacklog: "Redis is not keeping up with posts; dropping them (their bytes awaiting an answer reached the bound)"
        }
    }

    /// How loud: drops that mean lost messages warn, routine client policing is informational.
    var logLevel: Logger.Level {
        switch self {
        case .stale, .slowConsumer, .rateLimit, .byteRateLimit, .keepaliveTimeout: .info
        case .garbage, .postFailed, .shardUnavailable, .subscriberOverflow, .fanOutOverflow, .historyGap, .redisBacklog: .warning
        }
    }
}
