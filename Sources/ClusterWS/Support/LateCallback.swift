import Synchronization

/// A callback handed to something made before what the callback reaches
/// (a Redis hook set up before the registry exists); a no-op until set.
final class LateCallback: Sendable {
    private let action = Mutex<(@Sendable () -> Void)?>(nil)

    /// Sets what a call does.
    func set(_ action: @escaping @Sendable () -> Void) {
        self.action.withLock { $0 = action }
    }

    /// Runs the callback, if one is set.
    func callAsFunction() {
        action.withLock { $0 }?()
    }
}
