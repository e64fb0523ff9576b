import CoreMetrics
import NIOCore

/// The reconnect phases of one Redis connection, as a plain value: events
/// in (a connect attempt started, succeeded, failed; the channel closed; a
/// shutdown was asked), the phase and the waiters to wake out. The loop in
/// ``RedisReconnecting`` does the I/O; tests drive this directly.
///
/// `Waiter` is whatever a caller waiting for a connection parks with (a
/// continuation in production).
struct RedisLinkState<Waiter> {
    /// Where the connection is. Each phase carries what only it knows.
    enum Phase {
        /// Never started.
        case idle
        /// Attempt `attempt` (0-based since the last success) is connecting;
        /// `lastError` is why the previous one failed, if one did.
        case connecting(attempt: Int, lastError: RedisError?)
        /// Connected; setup (a subscriber's re-subscribe, scripts) is running.
        case preparing(any Channel, attempt: Int)
        /// Connected and set up.
        case ready(any Channel)
        /// Waiting out the backoff before attempt `attempt`.
        case backingOff(attempt: Int, lastError: RedisError)
        /// A shutdown was asked while connected: commands written still get
        /// their replies (`QUIT` is queued behind them), new ones are refused.
        case draining(any Channel)
        /// Stopped for good.
        case shutdown
    }

    /// What a caller that wants to send now should do.
    enum Readiness {
        case send(any Channel)
        case wait
        case fail(RedisError)
    }

    private(set) var phase: Phase = .idle
    /// Bumped on every successful (re)connect, once the connection is set up.
    private(set) var generation = 0
    /// Counts reconnects (every connect after the first), if set.
    var reconnects: Counter?
    private var waiters: [Int: (after: Int, waiter: Waiter)] = [:]
    private var nextWaiterID = 0

    /// The live channel (while preparing or ready).
    var channel: (any Channel)? {
        switch phase {
        case .preparing(let channel, _), .ready(let channel): channel
        default: nil
        }
    }

    /// Set up and its channel active.
    var isReady: Bool {
        if case .ready(let channel) = phase { return channel.isActive }
        return false
    }

    /// A shutdown was asked (draining or stopped).
    var isShuttingDown: Bool {
        switch phase {
        case .draining, .shutdown: true
        default: false
        }
    }

    /// Why the last connect attempt failed, for callers that give up waiting.
    var lastError: RedisError? {
        switch phase {
        case .connecting(_, let error): error
        case .backingOff(_, let error): error
        default: nil
        }
    }

    /// Whether a caller can send now, must wait for a connection, or must fail.
    /// Commands may go out while preparing once a first connection was made
    /// (setup commands are written first, so they stay ahead).
    var readiness: Readiness {
        switch phase {
        case .draining, .shutdown: return .fail(.shutdown)
        case .ready(let channel) where channel.isActive: return .send(channel)
        case .preparing(let channel, _) where channel.isActive && generation > 0: return .send(channel)
        default: return .wait
        }
    }

    // MARK: Events

    /// The loop starts an attempt; `false` when it must stop instead (shutdown asked).
    mutating func connectStarted() -> Bool {
        switch phase {
        case .idle: phase = .connecting(attempt: 0, lastError: nil)
        case .backingOff(let attempt, let error): phase = .connecting(attempt: attempt, lastError: error)
        case .connecting, .preparing, .ready: break
        case .draining, .shutdown: return false
        }
        return true
    }

    /// The TCP connection (and AUTH/SELECT) succeeded.
    mutating func connected(_ channel: any Channel) {
        guard case .connecting(let attempt, _) = phase else { return }
        phase = .preparing(channel, attempt: attempt)
    }

    /// Setup finished: the link is ready; returns the waiters to resume.
    mutating func prepared() -> [Waiter] {
        guard case .preparing(let channel, _) = phase else { return [] }
        phase = .ready(channel)
        generation += 1
        if generation > 1 { reconnects?.increment() }
        let ready = waiters.filter { $0.value.after < generation }
        for id in ready.keys { waiters.removeValue(forKey: id) }
        return ready.values.map(\.waiter)
    }

    /// The attempt failed (connect or setup); returns the attempt to back off for.
    mutating func failed(_ error: RedisError) -> Int {
        let attempt: Int
        switch phase {
        case .connecting(let current, _), .preparing(_, let current): attempt = current
        default: attempt = 0
        }
        if !isShuttingDown { phase = .backingOff(attempt: attempt + 1, lastError: error) }
        return attempt
    }

    /// A ready connection closed; returns the attempt to back off for (0: the
    /// shortest delay; a failure of the next attempt backs off longer).
    mutating func closed() -> Int {
        guard !isShuttingDown else { return 0 }
        phase = .backingOff(attempt: 1, lastError: .notConnected)
        return 0
    }

    /// A shutdown was asked; returns the channel to drain with `QUIT`, if connected.
    mutating func shutdownRequested() -> (drain: (any Channel)?, fail: [Waiter]) {
        let failing = removeAllWaiters()
        switch phase {
        case .preparing(let channel, _), .ready(let channel):
            phase = .draining(channel)
            return (channel, failing)
        case .draining:
            return (nil, failing)
        default:
            phase = .shutdown
            return (nil, failing)
        }
    }

    /// The loop has stopped; returns the channel to close (if any) and waiters to fail.
    mutating func stopped() -> (close: (any Channel)?, fail: [Waiter]) {
        let close: (any Channel)? = switch phase {
        case .preparing(let channel, _), .ready(let channel), .draining(let channel): channel
        default: nil
        }
        phase = .shutdown
        return (close, removeAllWaiters())
    }

    // MARK: Waiters

    /// Parks a waiter until a connection newer than `generation` is ready.
    mutating func addWaiter(after generation: Int, _ waiter: Waiter) -> Int {
        nextWaiterID += 1
        waiters[nextWaiterID] = (generation, waiter)
        return nextWaiterID
    }

    /// Takes a waiter back (its deadline passed); `nil` if it was already resumed.
    mutating func removeWaiter(_ id: Int) -> Waiter? {
        waiters.removeValue(forKey: id)?.waiter
    }

    private mutating func removeAllWaiters() -> [Waiter] {
        defer { waiters.removeAll() }
        return waiters.values.map(\.waiter)
    }
}
extension RedisLinkState: Sendable where Waiter: Sendable {}
