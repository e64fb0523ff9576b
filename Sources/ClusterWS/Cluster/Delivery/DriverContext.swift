import Logging

/// What every driver needs to know about its node. A class: posts capture it
/// (one reference to retain, not each of its fields).
final class DriverContext: Sendable {
    let id: String
    let epoch: UInt64
    let keys: ClusterKeys
    let queue: ClusterConfiguration.Queue
    let history: ClusterConfiguration.History
    let counters: NodeCounters
    let logger: Logger

    init(id: String, epoch: UInt64, keys: ClusterKeys, queue: ClusterConfiguration.Queue,
         history: ClusterConfiguration.History = .init(), counters: NodeCounters, logger: Logger) {
        self.id = id
        self.epoch = epoch
        self.keys = keys
        self.queue = queue
        self.history = history
        self.counters = counters
        self.logger = logger
    }

    /// A post's Redis part failed: counted and logged (rate-limited).
    func postFailed(_ error: any Error) {
        if case RedisError.shardUnavailable = error {
            counters.drop(.shardUnavailable, metadata: ["error": "\(error)"])
        } else if case RedisError.backlogFull = error {
            counters.drop(.redisBacklog)
        } else {
            counters.drop(.postFailed, metadata: ["error": "\(error)"])
        }
    }
}
