extension ClusterConfiguration {
    /// Message history per user and per room, for clients that reconnect
    /// (the `clusterws.v1` client protocol). Off by default.
    ///
    /// With history on for a kind of stream, every `send`/`post` to such a
    /// stream is one Redis script that appends the message to the stream's
    /// history (a Redis Stream, `maxLength` messages, gone `maxAge` after its
    /// last message) and publishes it with its position, so every node
    /// delivers in offset order. A client that negotiated `clusterws.v1`
    /// gets each message with its offset and, on reconnecting to any node
    /// with what it last saw, the messages it missed (or the reason it
    /// cannot have them). Raw clients are unaffected.
    ///
    /// Costs: one script per message instead of one `PUBLISH`, memory in
    /// Redis for the history, and this node's own connections get a
    /// stream's messages through Redis (in offset order) rather than
    /// directly. Needs the pub/sub driver.
    public struct History: Sendable {
        /// Keep history of messages to users (`send(uid:)`, `post(uid:)`).
        public var users: Bool
        /// Keep history of messages to rooms.
        public var rooms: Bool
        /// Messages kept per stream; older ones are trimmed.
        public var maxLength: Int
        /// A stream's history is removed this long after its last message.
        public var maxAge: Duration
        /// A stream's epoch (and last offset) is kept this long after its
        /// last message, so a client away longer than `maxAge` learns that
        /// its messages expired rather than that the stream changed.
        public var epochLifetime: Duration
        /// Live messages held per stream for a connection while its history
        /// is read; a connection that outgrows them is closed with 1013
        /// (try again later) and recovers on its next connection.
        public var maxRecoveryBufferBytes: Int

        /// Creates history settings; off by default (1,000 messages, 5 min,
        /// epochs kept 24 h, 4 MiB held per recovering stream).
        public init(users: Bool = false, rooms: Bool = false, maxLength: Int = 1_000, maxAge: Duration = .seconds(300),
                    epochLifetime: Duration = .seconds(86_400), maxRecoveryBufferBytes: Int = 4 << 20) {
            self.users = users
            self.rooms = rooms
            self.maxLength = maxLength
            self.maxAge = maxAge
            self.epochLifetime = epochLifetime
            self.maxRecoveryBufferBytes = maxRecoveryBufferBytes
        }

        /// Whether history is kept for any stream.
        public var isEnabled: Bool { users || rooms }

        func validate(driver: Driver) throws(ClusterError) {
            guard isEnabled else { return }
            guard driver == .pubSub else {
                throw .invalidConfiguration("history needs the pub/sub driver (the queue driver does not keep history yet)")
            }
            guard maxLength > 0, maxLength <= 1_000_000 else {
                throw .invalidConfiguration("history.maxLength must be between 1 and 1,000,000")
            }
            guard maxAge >= .seconds(1), epochLifetime >= maxAge else {
                throw .invalidConfiguration("history.maxAge must be at least 1 s, and epochLifetime at least maxAge")
            }
            guard maxRecoveryBufferBytes > 0 else {
                throw .invalidConfiguration("history.maxRecoveryBufferBytes must be positive")
            }
        }
    }
}
