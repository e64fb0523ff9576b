package import CoreMetrics
package import Logging
import Synchronization

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
    /// A message from Redis the router's buffer had no room for.
    case subscriberOverflow = "subscriber_overflow"
    /// A message an event loop's fan-out queue had no room for.
    case fanOutOverflow = "fanout_overflow"

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
        case .subscriberOverflow: "the router's buffer is full; dropping messages from Redis"
        case .fanOutOverflow: "an event loop's fan-out queue is full; dropping messages for it"
        }
    }

    /// How loud: drops that mean lost messages warn, routine client policing is informational.
    var logLevel: Logger.Level {
        switch self {
        case .stale, .slowConsumer, .rateLimit, .byteRateLimit, .keepaliveTimeout: .info
        case .garbage, .postFailed, .subscriberOverflow, .fanOutOverflow: .warning
        }
    }
}

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
}

/// Counters of drops and limit hits, for metrics (through the configured
/// factory, with the node's dimensions) and for direct reads in tests and
/// statistics. Drops and limit hits are rare: the totals sit behind one lock.
/// Every drop is also logged, at most once per reason per 10 s (with how many
/// were left out), so a flood shows in the log without flooding it.
package final class NodeCounters: Sendable {
    private let drops: [DropReason: Counter]
    private let limits: [LimitKind: Counter]
    private let totals = Mutex<(drops: [DropReason: Int], limits: [LimitKind: Int])>(([:], [:]))
    /// `clusterws_messages_in_total{kind="text"}`.
    package let textIn: Counter
    /// `clusterws_messages_in_total{kind="binary"}`.
    package let binaryIn: Counter
    /// Keeps repeated warnings (a garbage flood, a starved loop) to one line per key and interval.
    package let logLimiter = LogLimiter()
    private let logger: Logger

    /// Counters under `dimensions` (the node's, for a cluster node) through `factory`; drops are logged to `logger`.
    package init(dimensions: [(String, String)] = [], factory: any MetricsFactory = MetricsSystem.factory,
                 logger: Logger = Logger(label: "clusterws")) {
        self.logger = logger
        drops = Dictionary(uniqueKeysWithValues: DropReason.allCases.map {
            ($0, Counter(label: "clusterws_drops_total", dimensions: dimensions + [("reason", $0.rawValue)], factory: factory))
        })
        limits = Dictionary(uniqueKeysWithValues: LimitKind.allCases.map {
            ($0, Counter(label: "clusterws_limit_hits_total", dimensions: dimensions + [("limit", $0.rawValue)],
                         factory: factory))
        })
        textIn = Counter(label: "clusterws_messages_in_total", dimensions: dimensions + [("kind", "text")], factory: factory)
        binaryIn = Counter(label: "clusterws_messages_in_total", dimensions: dimensions + [("kind", "binary")], factory: factory)
    }

    /// Counts `count` drops of `reason`, and logs it (rate-limited) with `metadata`.
    package func drop(_ reason: DropReason, count: Int = 1, metadata: @autoclosure () -> Logger.Metadata = [:]) {
        guard count > 0 else { return }
        totals.withLock { $0.drops[reason, default: 0] += count }
        drops[reason]?.increment(by: count)
        var fields = metadata()
        if count > 1 { fields["count"] = "\(count)" }
        logLimiter.log(logger, reason.logLevel, "\(reason.logMessage)", key: reason.rawValue, metadata: fields)
    }

    /// Counts one hit of `limit`.
    package func hit(_ limit: LimitKind) {
        totals.withLock { $0.limits[limit, default: 0] += 1 }
        limits[limit]?.increment()
    }

    /// Drops of `reason` so far.
    package func dropped(_ reason: DropReason) -> Int { totals.withLock { $0.drops[reason, default: 0] } }

    /// Hits of `limit` so far.
    package func hits(_ limit: LimitKind) -> Int { totals.withLock { $0.limits[limit, default: 0] } }
}

/// Logs one kind of event at most once per interval, with how many were left
/// out meanwhile: a peer that floods garbage or a starved event loop must not
/// flood the log as well.
package final class LogLimiter: Sendable {
    private let interval: Duration
    private let state = Mutex<[String: (last: ContinuousClock.Instant, suppressed: Int)]>([:])

    package init(interval: Duration = .seconds(10)) {
        self.interval = interval
    }

    /// Logs `message` at `level` unless an event of `key` was logged less than
    /// an interval ago (then it is only counted, and reported with the next one).
    package func log(_ logger: Logger, _ level: Logger.Level, _ message: @autoclosure () -> Logger.Message,
                     key: String, metadata: @autoclosure () -> Logger.Metadata = [:]) {
        let now = ContinuousClock.now
        let suppressed = state.withLock { state -> Int? in
            if let entry = state[key], now - entry.last < interval {
                state[key]?.suppressed += 1
                return nil
            }
            defer { state[key] = (now, 0) }
            return state[key]?.suppressed ?? 0
        }
        guard let suppressed else { return }
        var fields = metadata()
        if suppressed > 0 { fields["suppressed"] = "\(suppressed)" }
        logger.log(level: level, message(), metadata: fields)
    }
}
