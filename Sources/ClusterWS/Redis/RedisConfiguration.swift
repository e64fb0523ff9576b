import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How to reach Redis and how to behave when it goes away.
///
/// ```swift
/// var redis = try RedisConfiguration(url: "redis://app:secret@127.0.0.1:6379/2")
/// redis.commandTimeout = .seconds(2)
/// redis.disconnectedCommandWait = .zero   // fail fast while reconnecting
/// ```
package struct RedisConfiguration: Sendable, Hashable {
    /// Host name or IP address of the Redis server.
    package var host: String
    /// TCP port of the Redis server.
    package var port: Int
    /// ACL user name for `AUTH user password`; `nil` uses `AUTH password`.
    package var username: String?
    /// Password for `AUTH`; `nil` skips authentication.
    package var password: String?
    /// Database selected with `SELECT` after every (re)connect.
    package var database: Int
    /// How long one TCP connect (plus `AUTH`/`SELECT`) may take.
    package var connectTimeout: Duration
    /// How long a command waits for its reply before it fails with
    /// ``RedisError/timeout``.
    package var commandTimeout: Duration
    /// How long a command issued while the client is between connections waits
    /// for the next connection before it fails. `.zero` fails fast with
    /// ``RedisError/notConnected`` (or the last connect error, such as
    /// ``RedisError/connectionRefused(_:)``).
    package var disconnectedCommandWait: Duration
    /// Delay between reconnect attempts.
    package var reconnectBackoff: Backoff
    /// Redis Cluster seed nodes (`redis+cluster://h1:p1,h2:p2`); empty for a
    /// single server. The client reads the slot map from any of them.
    package var clusterSeeds: [Address] = []
    /// Largest reply accepted while it is being parsed (bytes received since
    /// the last complete reply). A peer that sends more, such as a bogus bulk
    /// length it never completes, has its connection closed and re-opened.
    package var maxReplyBytes = 256 << 20
    /// Most bytes of posts (commands nobody awaits) written to one
    /// connection and not yet answered; past it a post fails at once with
    /// ``RedisError/backlogFull`` (counted by the caller) instead of queueing
    /// without bound while Redis falls behind.
    package var maxPostBytesInFlight = 32 << 20
    /// Past this many bytes of unanswered posts on a connection, a caller
    /// that paces (``RedisConnection/waitForPostRoom()``: `sender.post`)
    /// waits for Redis's answers before it posts, instead of running into
    /// ``maxPostBytesInFlight``.
    package var postPacingBytes = 8 << 20
    /// How often an idle link is checked with `PING` (also in subscribe mode,
    /// where Redis allows it); `nil` turns checks off. A link whose peer has
    /// vanished without a FIN or RST is only noticed this way.
    package var healthCheckInterval: Duration? = .seconds(1)
    /// How long a health-check `PING` may wait for its reply before the link
    /// is declared dead, closed and re-opened. It queues behind the commands
    /// in flight, so keep it above the longest blocking command.
    package var healthCheckTimeout: Duration = .seconds(2)
    /// On a Redis Cluster: how long a command whose slot's master is
    /// unreachable waits for a reachable master (the replica promoted, or the
    /// master back) before it fails with ``RedisError/shardUnavailable(slot:)``.
    /// `.zero` fails at once; a wait longer than the cluster's promotion time
    /// (`cluster-node-timeout` plus about a second) delivers late instead.
    package var failoverWait: Duration = .milliseconds(500)
    /// On a Redis Cluster: most command bytes waiting for one unreachable
    /// shard; past it, commands for that shard fail at once.
    package var failoverWaitBytes = 4 << 20
    /// Called when a limit of this configuration bites (for metrics).
    package var hooks = Hooks()

    /// Callbacks for metrics; they take no part in equality.
    package struct Hooks: Sendable, Hashable {
        /// A reply grew past ``RedisConfiguration/maxReplyBytes``.
        package var replyTooLarge: (@Sendable () -> Void)?
        /// The link became ready (`true`) or, having been ready, dropped (`false`).
        package var linkChanged: (@Sendable (_ up: Bool) -> Void)?

        package init(replyTooLarge: (@Sendable () -> Void)? = nil, linkChanged: (@Sendable (_ up: Bool) -> Void)? = nil) {
            self.replyTooLarge = replyTooLarge
            self.linkChanged = linkChanged
        }

        package static func == (lhs: Hooks, rhs: Hooks) -> Bool { true }
        package func hash(into hasher: inout Hasher) {}
    }

    /// A Redis server's host and port.
    package struct Address: Sendable, Hashable, CustomStringConvertible {
        package var host: String
        package var port: Int
        package init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
        package var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    /// Whether this configuration names a Redis Cluster.
    package var isCluster: Bool { !clusterSeeds.isEmpty }

    /// The same configuration for one node of the cluster.
    package func node(_ address: Address) -> RedisConfiguration {
        var configuration = self
        configuration.host = address.host
        configuration.port = address.port
        configuration.clusterSeeds = []
        return configuration
    }

    /// Capped exponential backoff with jitter: attempt `n` waits
    /// `min(initial * multiplier^n, maximum)`, randomly shortened by up to `jitter`.
    package struct Backoff: Sendable, Hashable {
        /// Delay before the first reconnect attempt.
        package var initial: Duration
        /// Longest delay between attempts.
        package var maximum: Duration
        /// Growth factor per failed attempt.
        package var multiplier: Double
        /// Fraction (0...1) of each delay that is randomised away, so many
        /// nodes do not reconnect in lockstep.
        package var jitter: Double

        /// Creates a backoff policy.
        package init(
            initial: Duration = .milliseconds(50),
            maximum: Duration = .seconds(3),
            multiplier: Double = 2,
            jitter: Double = 0.2
        ) {
            self.initial = initial
            self.maximum = maximum
            self.multiplier = multiplier
            self.jitter = min(max(jitter, 0), 1)
        }

        /// The delay before reconnect attempt `attempt` (0-based).
        package func delay(attempt: Int) -> Duration {
            let base = initial.seconds * pow(multiplier, Double(min(attempt, 62)))
            let capped = min(base, maximum.seconds)
            let factor = 1 - jitter * Double.random(in: 0...1)
            return .seconds(saturating: capped * factor)
        }
    }

    /// Creates a configuration from its parts; every timing has a safe default.
    package init(
        host: String = "127.0.0.1",
        port: Int = 6379,
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        connectTimeout: Duration = .seconds(5),
        commandTimeout: Duration = .seconds(5),
        disconnectedCommandWait: Duration = .seconds(2),
        reconnectBackoff: Backoff = Backoff()
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.disconnectedCommandWait = disconnectedCommandWait
        self.reconnectBackoff = reconnectBackoff
    }

    /// Parses `redis://[[user]:password@]host[:port][/db]`, or
    /// `redis+cluster://[[user]:password@]host[:port],host[:port]…` for a
    /// Redis Cluster (its seed nodes; database 0 only).
    ///
    /// User and password may be percent-encoded; an IPv6 host is written in
    /// brackets (`redis://[::1]:6379`). The port defaults to 6379, the
    /// database to 0.
    /// - Throws: ``RedisError/invalidConfiguration(_:)`` for anything else.
    package init(url: String) throws {
        self.init()
        let cluster = url.hasPrefix("redis+cluster://")
        guard url.hasPrefix("redis://") || cluster else {
            throw RedisError.invalidConfiguration("URL must start with redis:// or redis+cluster://: \(url)")
        }
        var rest = Substring(url.drop(while: { $0 != "/" }).dropFirst(2))
        if let query = rest.firstIndex(of: "?") { rest = rest[..<query] }
        var path: Substring = ""
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                let user = try Self.percentDecoded(userInfo[..<colon])
                username = user.isEmpty ? nil : user
                password = try Self.percentDecoded(userInfo[userInfo.index(after: colon)...])
            } else if !userInfo.isEmpty {
                // redis://password@host, as redis-cli and most clients accept it.
                password = try Self.percentDecoded(userInfo)
            }
        }
        let addresses = try (cluster ? rest.split(separator: ",", omittingEmptySubsequences: false) : [rest])
            .map { try Self.address($0, in: url) }
        host = addresses[0].host
        port = addresses[0].port
        if cluster { clusterSeeds = addresses }
        if !path.isEmpty {
            guard let db = Int(path), db >= 0 else {
                throw RedisError.invalidConfiguration("bad database '\(path)' in \(url)")
            }
            guard !cluster || db == 0 else {
                throw RedisError.invalidConfiguration("Redis Cluster has only database 0: \(url)")
            }
            database = db
        }
    }

    /// Parses `host[:port]` or `[ipv6][:port]`.
    private static func address(_ text: Substring, in url: String) throws -> Address {
        var host: String
        var portText: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw RedisError.invalidConfiguration("unterminated IPv6 host in \(url)")
            }
            host = String(text[text.index(after: text.startIndex)..<close])
            let after = text[text.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw RedisError.invalidConfiguration("bad host in \(url)") }
                portText = after.dropFirst()
            }
        } else if let colon = text.firstIndex(of: ":") {
            host = String(text[..<colon])
            portText = text[text.index(after: colon)...]
        } else {
            host = String(text)
        }
        guard !host.isEmpty else { throw RedisError.invalidConfiguration("missing host in \(url)") }
        var port = 6379
        if let portText {
            guard let value = Int(portText), (1...65535).contains(value) else {
                throw RedisError.invalidConfiguration("bad port '\(portText)' in \(url)")
            }
            port = value
        }
        return Address(host: host, port: port)
    }

    /// `host:port`, for logs and errors.
    package var address: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    private static func percentDecoded(_ text: Substring) throws -> String {
        guard let decoded = PercentDecoding.decode(text, plusAsSpace: false) else {
            throw RedisError.invalidConfiguration("bad percent-encoding in '\(text)'")
        }
        return decoded
    }
}
