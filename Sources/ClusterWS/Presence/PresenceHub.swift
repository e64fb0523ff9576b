import Logging
import NIOCore
import Synchronization

/// This node's side of presence events: the `presenceEvents(room:)`
/// streams, and (with `presence.notifyMembers`) the rooms whose local
/// members get the events. A room's event channel is subscribed while
/// anything here needs it.
final class PresenceHub: Sendable {
    private struct State {
        var listeners: [String: [UInt64: AsyncStream<PresenceEvent>.Continuation]] = [:]
        /// Why each room's channel is subscribed: listeners + local members (when notifying).
        var uses: [String: Int] = [:]
        /// Subscribed event channel → room.
        var channels: [String: String] = [:]
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())
    private let subscriber: any RedisPubSub
    private let keys: ClusterKeys
    /// Delivers an event to the room's local members (`presence.notifyMembers`), or nil.
    private let notify: (@Sendable (PresenceEvent) -> Void)?

    init(subscriber: any RedisPubSub, keys: ClusterKeys, notify: (@Sendable (PresenceEvent) -> Void)?) {
        self.subscriber = subscriber
        self.keys = keys
        self.notify = notify
    }

    /// Whether local members get events (they keep the room's channel subscribed).
    var notifiesMembers: Bool { notify != nil }

    /// A stream of `room`'s events from now on; ends when the caller stops iterating.
    func events(room: String, buffer: Int) async throws -> AsyncStream<PresenceEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: PresenceEvent.self, bufferingPolicy: .bufferingNewest(buffer))
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            state.listeners[room, default: [:]][state.nextID] = continuation
            return state.nextID
        }
        continuation.onTermination = { [weak self] _ in
            guard let self else { return }
            state.withLock { state in
                state.listeners[room]?[id] = nil
                if state.listeners[room]?.isEmpty == true { state.listeners[room] = nil }
            }
            Task { await self.release(room) }
        }
        try await retain(room)
        return stream
    }

    /// One more use of `room`'s event channel (subscribed on the first).
    func retain(_ room: String) async throws {
        let channel = PresenceKeys(roomChannel: keys.roomChannel(room)).events
        let first = state.withLock { state -> Bool in
            state.uses[room, default: 0] += 1
            state.channels[channel] = room
            return state.uses[room] == 1
        }
        if first { try await subscriber.subscribe([channel]) }
    }

    /// One use fewer (unsubscribed after the last).
    func release(_ room: String) async {
        let channel = PresenceKeys(roomChannel: keys.roomChannel(room)).events
        let last = state.withLock { state -> Bool in
            guard let uses = state.uses[room] else { return false }
            if uses > 1 {
                state.uses[room] = uses - 1
                return false
            }
            state.uses[room] = nil
            state.channels[channel] = nil
            return true
        }
        if last { try? await subscriber.unsubscribe([channel]) }
    }

    /// A message from Redis: `true` if it was on a presence channel (then
    /// handled here: to the listeners, and to the room's members).
    func handle(channel: String, payload: ByteBuffer, counters: NodeCounters) -> Bool {
        guard channel.utf8.first == UInt8(ascii: "{") else { return false }
        let (room, listeners) = state.withLock { state -> (String?, [AsyncStream<PresenceEvent>.Continuation]) in
            guard let room = state.channels[channel] else { return (nil, []) }
            return (room, Array(state.listeners[room, default: [:]].values))
        }
        guard let room else { return false }
        guard let event = PresenceEvent(payload: payload), event.room == room else {
            counters.drop(.garbage, metadata: ["channel": "\(channel)", "error": "not a presence event"])
            return true
        }
        for listener in listeners { listener.yield(event) }
        notify?(event)
        return true
    }
}
