/// Redis keys and channel of one room's presence, in the slot of the room's
/// channel (a hash tag chosen for that slot, as history does), so the
/// scripts that change them can publish their events there on a Redis Cluster.
struct PresenceKeys: Sendable {
    /// A hash: a member connection (distributed fd) → its uid, NUL, its metadata.
    let members: String
    /// A hash: uid → how many of its connections are members.
    let users: String
    /// Where join and leave events are published.
    let events: String

    init(roomChannel: String) {
        let tag = SlotTags.tag(forSlot: RedisClusterSlot.of(roomChannel))
        members = "{\(tag)}:\(roomChannel):presence"
        users = "{\(tag)}:\(roomChannel):presence-users"
        events = "{\(tag)}:\(roomChannel):presence-events"
    }
}
