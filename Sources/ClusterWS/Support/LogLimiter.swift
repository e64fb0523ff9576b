package import Logging
import Synchronization

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
