import Synchronization

/// Posts that need Redis's answers before they can be written (routing read
/// first, on a Redis Cluster) run one after another in call order: each waits
/// for the previous one, none waits for the caller.
final class PostChain: Sendable {
    private let last = Mutex<Task<Void, Never>?>(nil)

    /// Runs `work` after every earlier one has finished.
    func append(_ work: @escaping @Sendable () async -> Void) {
        last.withLock { previous in
            previous = Task { [previous] in
                await previous?.value
                await work()
            }
        }
    }
}
