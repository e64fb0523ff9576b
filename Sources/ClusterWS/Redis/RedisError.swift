/// What can go wrong between ClusterWS and Redis.
///
/// Every failure of the Redis layer is one of these cases, so callers can
/// tell a Redis-side error reply from a transport problem.
package enum RedisError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The TCP connection could not be made (nothing listens, or it was reset).
    /// The associated text names the address and the system's reason.
    case connectionRefused(String)
    /// The TCP connection was not established within `connectTimeout`.
    case connectTimeout(String)
    /// `AUTH` was refused: wrong password, unknown user, or no password set.
    case authenticationFailed(String)
    /// The client is between connections (or was never started) and the
    /// command could not wait any longer for a new one.
    case notConnected
    /// The connection dropped after the command was written and before its
    /// reply arrived. Redis may or may not have executed it.
    case connectionLost
    /// Redis answered with an error reply, for example `ERR unknown command`
    /// or `WRONGTYPE ...`. The text is Redis's own message.
    case reply(String)
    /// The bytes from the server were not valid RESP, or a reply arrived that
    /// no command was waiting for. The connection is closed and re-established.
    case protocolError(String)
    /// No reply arrived within the command's timeout. The connection stays
    /// up; the late reply, if it ever comes, is discarded.
    case timeout
    /// The client was shut down; it accepts no more commands.
    case shutdown
    /// A Redis URL or configuration value could not be understood.
    case invalidConfiguration(String)
    /// On a Redis Cluster: the slot's master is unreachable and no reachable
    /// master took it over within the failover wait (see
    /// ``RedisConfiguration/failoverWait``), or the bytes already waiting for
    /// that shard reached their bound. The command was not sent.
    case shardUnavailable(slot: Int)
    /// A post was refused: the bytes of posts written and not yet answered
    /// reached ``RedisConfiguration/maxPostBytesInFlight`` (Redis is not
    /// keeping up). Nothing was sent.
    case backlogFull

    package var description: String {
        switch self {
        case .connectionRefused(let why): return "Redis connection refused: \(why)"
        case .connectTimeout(let address): return "Redis connect timed out: \(address)"
        case .authenticationFailed(let message): return "Redis authentication failed: \(message)"
        case .notConnected: return "Redis is not connected"
        case .connectionLost: return "Redis connection lost before the reply arrived"
        case .reply(let message): return "Redis error reply: \(message)"
        case .protocolError(let message): return "Redis protocol error: \(message)"
        case .timeout: return "Redis command timed out"
        case .shutdown: return "Redis client is shut down"
        case .invalidConfiguration(let message): return "Invalid Redis configuration: \(message)"
        case .shardUnavailable(let slot): return "no reachable Redis master for slot \(slot) (a failover is under way)"
        case .backlogFull: return "Redis is not keeping up: the posts awaiting its answer reached their byte bound"
        }
    }
}
