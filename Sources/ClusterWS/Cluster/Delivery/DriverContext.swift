import Logging

/// What every driver needs to know about its node.
struct DriverContext: Sendable {
    let id: String
    let epoch: UInt64
    let keys: ClusterKeys
    let queue: ClusterConfiguration.Queue
    var history = ClusterConfiguration.History()
    let counters: NodeCounters
    let logger: Logger

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
