import NIOCore

/// A token bucket: `rate` tokens a second, holding up to twice as many. Time
/// is passed in, so the bucket is a plain value that tests drive with any clock.
///
/// An item bigger than the whole bucket passes when the bucket is full and
/// leaves it in debt, so a single large frame is allowed and the average still
/// holds to `rate`.
struct TokenBucket: Sendable {
    let rate: Double
    let capacity: Double
    private(set) var tokens: Double
    private var refilled: NIODeadline

    /// A full bucket of `2 × rate` tokens.
    init(perSecond rate: Int, now: NIODeadline) {
        self.rate = Double(max(rate, 1))
        self.capacity = self.rate * 2
        self.tokens = capacity
        self.refilled = now
    }

    /// Takes `amount` tokens; `false` (and nothing taken) when there are not enough.
    mutating func take(_ amount: Int, now: NIODeadline) -> Bool {
        let elapsed = Double(max((now - refilled).nanoseconds, 0)) / 1e9
        refilled = now
        tokens = min(capacity, tokens + elapsed * rate)
        let needed = min(Double(amount), capacity)
        guard tokens >= needed else { return false }
        tokens -= Double(amount)
        return true
    }
}
