import Foundation
import Synchronization

/// Runs blocking work (a child process, a file read) on its own thread, so it
/// never occupies a thread of Swift's cooperative pool.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try body() })
        }
        thread.start()
    }
}

/// Counts events from any thread and wakes one waiter when a target is reached.
final class TargetCounter: Sendable {
    private struct State {
        var count = 0
        var target = Int.max
        var waiter: CheckedContinuation<Void, Never>?
        var countBeforeTimeout = 0
    }

    private let state = Mutex(State())

    /// Starts a new round: the count goes back to zero.
    func reset(target: Int) {
        state.withLock { $0 = State(count: 0, target: target, waiter: nil) }
    }

    func increment(by amount: Int = 1) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.count += amount
            guard state.count >= state.target, let waiter = state.waiter else { return nil }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    var count: Int { state.withLock { $0.count } }

    /// The count when ``reached(within:)`` last gave up.
    var countBeforeTimeout: Int { state.withLock { $0.countBeforeTimeout } }

    /// Returns once the count reaches the target.
    func reached() async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state -> Bool in
                if state.count >= state.target { return true }
                state.waiter = continuation
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Returns `true` once the target is reached, `false` after `limit`.
    func reached(within limit: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { await self.reached(); return true }
            group.addTask { try? await Task.sleep(for: limit); return false }
            let first = await group.next() ?? false
            if !first {
                state.withLock { $0.countBeforeTimeout = $0.count }
                self.increment(by: Int.max / 2)  // release the waiter
            }
            group.cancelAll()
            return first
        }
    }
}

extension Duration {
    /// The duration in (fractional) seconds.
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
