package import CoreMetrics
package import Logging
import Synchronization

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
    package let logger: Logger

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
