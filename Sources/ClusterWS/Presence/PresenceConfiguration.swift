extension ClusterConfiguration {
    /// Room presence: who is in each room, cluster-wide, and per-user join
    /// and leave events (``ClusterNode/presence(room:)``,
    /// ``ClusterNode/presenceEvents(room:)``). Off by default.
    ///
    /// Costs: a script per `join`/`leave` (and per room of a closing
    /// connection) that updates the room's member hash and publishes the
    /// event when a user's first connection joins or its last leaves.
    public struct Presence: Sendable {
        /// Track room members and publish joins and leaves.
        public var rooms: Bool
        /// Also deliver every join and leave to the room's members, as a JSON
        /// text frame `{"type":"presence","event":"join",…}`.
        public var notifyMembers: Bool
        /// Events a `presenceEvents` stream keeps for a slow reader (the newest).
        public var eventBuffer: Int

        /// Creates presence settings; off by default.
        public init(rooms: Bool = false, notifyMembers: Bool = false, eventBuffer: Int = 1_000) {
            self.rooms = rooms
            self.notifyMembers = notifyMembers
            self.eventBuffer = eventBuffer
        }

        func validate() throws(ClusterError) {
            guard !notifyMembers || rooms else { throw .invalidConfiguration("presence.notifyMembers needs presence.rooms") }
            guard eventBuffer > 0 else { throw .invalidConfiguration("presence.eventBuffer must be positive") }
        }
    }
}
