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
    /// With the queue driver the script appends the message to its history
    /// and to the queue of every node of the user or room (this node's too);
    /// on a Redis Cluster that is two steps (history, then the queues), and
    /// client-protocol connections put what arrives out of order back in
    /// offset order (`gapRepairDelay`).
    ///
    /// Costs: one script per message instead of one `PUBLISH`, memory in
    /// Redis for the history, and this node's own connections get a
    /// stream's messages through Redis (in offset order) rather than directly.
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
        /// How long a live client-protocol connection waits for a missing
        /// offset (a message still on its way: the queue driver with several
        /// consumers, or a Redis Cluster, may deliver out of order) before
        /// the node reads it from history. Messages after it wait too (held
        /// within `maxRecoveryBufferBytes`), so the client always gets them in order.
        public var gapRepairDelay: Duration

        /// Creates history settings; off by default (1,000 messages, 5 min,
        /// epochs kept 24 h, 4 MiB held per recovering stream, gaps repaired after 200 ms).
        public init(users: Bool = false, rooms: Bool = false, maxLength: Int = 1_000, maxAge: Duration = .seconds(300),
                    epochLifetime: Duration = .seconds(86_400), maxRecoveryBufferBytes: Int = 4 << 20,
                    gapRepairDelay: Duration = .milliseconds(200)) {
            self.gapRepairDelay = gapRepairDelay
            self.users = users
            self.rooms = rooms
            self.maxLength = maxLength
            self.maxAge = maxAge
            self.epochLifetime = epochLifetime
            self.maxRecoveryBufferBytes = maxRecoveryBufferBytes
        }

        /// Whether history is kept for any stream.
        public var isEnabled: Bool { users || rooms }

        func validate() throws(ClusterError) {
            guard isEnabled else { return }
            guard maxLength > 0, maxLength <= 1_000_000 else {
                throw .invalidConfiguration("history.maxLength must be between 1 and 1,000,000")
            }
            guard maxAge >= .seconds(1), epochLifetime >= maxAge else {
                throw .invalidConfiguration("history.maxAge must be at least 1 s, and epochLifetime at least maxAge")
            }
            guard maxRecoveryBufferBytes > 0 else {
                throw .invalidConfiguration("history.maxRecoveryBufferBytes must be positive")
            }
            guard gapRepairDelay >= .zero, gapRepairDelay <= .seconds(60) else {
                throw .invalidConfiguration("history.gapRepairDelay must be between 0 and 60 s")
            }
        }
    }
}
