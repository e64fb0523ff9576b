import Foundation

/// Where the demo and the benchmarks find Redis: `REDIS_URL` when it is set,
/// otherwise a fresh embedded `redis-server` on a free loopback port.
public struct RedisEndpoint: Sendable {
    /// The URL to connect to.
    public let url: String
    /// The embedded server, when one was started (stop it when done).
    public let embedded: RedisServerProcess?

    /// An endpoint at `url` (`embedded`: a server to stop when done).
    public init(url: String, embedded: RedisServerProcess? = nil) {
        self.url = url
        self.embedded = embedded
    }

    /// Uses `REDIS_URL` if set (and non-empty), else starts an embedded server.
    public static func fromEnvironment(arguments: [String] = []) async throws -> RedisEndpoint {
        if let url = ProcessInfo.processInfo.environment["REDIS_URL"], !url.isEmpty {
            return RedisEndpoint(url: url, embedded: nil)
        }
        let server = try await RedisServerProcess.start(arguments: arguments)
        return RedisEndpoint(url: server.url, embedded: server)
    }
}
