import NIOCore

/// Conversions of `Duration`, every one saturating: a configuration value of
/// `.seconds(.max)` means "practically forever", never an overflow trap.
extension Duration {
    /// The duration in (fractional) seconds.
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) / 1e18
    }

    /// Whole milliseconds, rounded down, clamped to `0...Int.max`.
    var milliseconds: Int { Int(units(perSecond: 1_000)) }

    /// Whole seconds, rounded down, clamped to `0...Int.max`.
    var wholeSeconds: Int { Int(units(perSecond: 1)) }

    /// Whole nanoseconds, clamped to `0...Int64.max`.
    var nanoseconds: Int64 { units(perSecond: 1_000_000_000) }

    /// The duration in units of `1 / perSecond` seconds, rounded down,
    /// clamped to `0...Int64.max` (negative durations are 0).
    private func units(perSecond: Int64) -> Int64 {
        let (seconds, attoseconds) = components
        guard seconds >= 0 else { return 0 }
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: perSecond)
        guard !overflow else { return .max }
        let (sum, overflowAgain) = whole.addingReportingOverflow(attoseconds / (1_000_000_000_000_000_000 / perSecond))
        return overflowAgain ? .max : sum
    }

    /// The duration as a NIO `TimeAmount` (saturating).
    var timeAmount: TimeAmount { .nanoseconds(nanoseconds) }

    /// A duration from fractional seconds, clamped to `0...Int64.max` nanoseconds.
    static func seconds(saturating value: Double) -> Duration {
        guard value.isFinite, value > 0 else { return .zero }
        let nanoseconds = value * 1e9
        return nanoseconds >= 9.2e18 ? .nanoseconds(Int64.max) : .nanoseconds(Int64(nanoseconds))
    }
}
