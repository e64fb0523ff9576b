@testable import ClusterWS
import Foundation
import NIOCore
import Synchronization
import Testing

/// Collects a room's presence events from a node, in order.
final class PresenceRecorder: Sendable {
    private final class Log: Sendable {
        let events = Mutex<[PresenceEvent]>([])
    }

    private let log = Log()
    private let task: Task<Void, Never>

    init(_ stream: AsyncStream<PresenceEvent>) {
        let log = self.log
        task = Task { for await event in stream { log.events.withLock { $0.append(event) } } }
    }

    var seen: [PresenceEvent] { log.events.withLock { $0 } }

    /// `kind uid` for each event, e.g. `["join u1", "leave u1"]`.
    var summary: [String] { seen.map { "\($0.kind.rawValue) \($0.uid)" } }

    func stop() { task.cancel() }
}

@Suite("Room presence: members and per-user join/leave events across nodes", .serialized, .timeLimit(.minutes(3)))
struct PresenceTests {
    static func presenceOn(_ configuration: inout ClusterConfiguration) {
        configuration.presence.rooms = true
    }

    /// Members on two nodes, with metadata, are listed from any node; a
    /// connection that leaves or closes is gone from the list.
    @Test(arguments: [ClusterConfiguration.Driver.pubSub, .queue])
    func membersAcrossNodesWithMetadata(driver: ClusterConfiguration.Driver) async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: driver, backend: .single), configure: Self.presenceOn) { cluster in
            let alice = try await ClusterClient.connect(cluster["a"], uid: "alice")
            let bob = try await ClusterClient.connect(cluster["b"], uid: "bob")
            let anonymous = try await ClusterClient.connect(cluster["b"], uid: nil)
            try await cluster["a"].join(alice.fd, room: "lobby", metadata: #"{"name":"Alice"}"#)
            try await cluster["b"].join(bob.fd, room: "lobby")
            try await cluster["b"].join(anonymous.fd, room: "lobby")
            for node in ["a", "b"] {
                let members = try await cluster[node].presence(room: "lobby")
                #expect(members.count == 3)
                #expect(members.first { $0.uid == "alice" } == PresenceMember(uid: "alice", fd: alice.fd, metadata: #"{"name":"Alice"}"#))
                #expect(members.first { $0.uid == "bob" }?.fd == bob.fd)
                #expect(members.first { $0.uid == "bob" }?.node == "b")
                #expect(members.contains { $0.uid == anonymous.fd.description && $0.fd == anonymous.fd })
            }
            try await cluster["b"].leave(bob.fd, room: "lobby")
            alice.close()
            try await eventually("alice's closed connection to leave the list") {
                try await cluster["b"].presence(room: "lobby").map(\.uid) == [anonymous.fd.description]
            }
            #expect(try await cluster["a"].presence(room: "empty").isEmpty)
        }
    }

    /// Events are per user: a second device joining or one of two leaving
    /// says nothing; the first join and the last leave are published once,
    /// and every node's listeners see the same sequence.
    @Test(arguments: RoutingCase.all)
    func eventsArePerUserAndOnceAcrossNodes(setup: RoutingCase) async throws {
        try await withCluster(["a", "b"], setup, configure: Self.presenceOn) { cluster in
            let onA = PresenceRecorder(try await cluster["a"].presenceEvents(room: "lobby"))
            let onB = PresenceRecorder(try await cluster["b"].presenceEvents(room: "lobby"))
            defer { onA.stop(); onB.stop() }
            let phone = try await ClusterClient.connect(cluster["a"], uid: "u1")
            let laptop = try await ClusterClient.connect(cluster["b"], uid: "u1")
            let other = try await ClusterClient.connect(cluster["b"], uid: "u2")
            try await cluster["a"].join(phone.fd, room: "lobby", metadata: "phone")
            try await cluster["b"].join(laptop.fd, room: "lobby", metadata: "laptop")
            try await cluster["b"].join(other.fd, room: "lobby")
            try await cluster["a"].leave(phone.fd, room: "lobby")   // u1 still there on its laptop
            laptop.close()                                            // now u1 has left
            try await eventually("u1's leave") { onA.seen.count == 3 && onB.seen.count == 3 }
            try await cluster["b"].leave(other.fd, room: "lobby")
            let expected = ["join u1", "join u2", "leave u1", "leave u2"]
            try await eventually("both nodes to see four events") { onA.seen.count >= 4 && onB.seen.count >= 4 }
            #expect(onA.summary == expected)
            #expect(onB.summary == expected)
            #expect(onA.seen.first?.metadata == "phone" && onA.seen.first?.fd == phone.fd)
            #expect(onA.seen[2].fd == laptop.fd)
            // Nothing more comes (no second leave from the close, no duplicate).
            try await Task.sleep(for: .milliseconds(300))
            #expect(onA.seen.count == 4 && onB.seen.count == 4)
        }
    }

    /// A crashed node's members leave within the liveness window, with one
    /// leave event per user, though both surviving nodes run the janitor.
    @Test func aCrashedNodesMembersLeaveOnce() async throws {
        try await withCluster(["a", "b", "c"], RoutingCase(driver: .pubSub, backend: .single), configure: Self.presenceOn) { cluster in
            let onA = PresenceRecorder(try await cluster["a"].presenceEvents(room: "r"))
            let onB = PresenceRecorder(try await cluster["b"].presenceEvents(room: "r"))
            defer { onA.stop(); onB.stop() }
            let survivor = try await ClusterClient.connect(cluster["a"], uid: "stays")
            try await cluster["a"].join(survivor.fd, room: "r")
            var doomed: [ClusterClient] = []
            for index in 0..<5 {
                let client = try await ClusterClient.connect(cluster["c"], uid: "c\(index)")
                try await cluster["c"].join(client.fd, room: "r")
                doomed.append(client)
            }
            let another = try await ClusterClient.connect(cluster["c"], uid: "c0")  // a second device of c0
            try await cluster["c"].join(another.fd, room: "r")
            try await eventually("six joins") { onA.seen.count == 6 && onB.seen.count == 6 }
            cluster["c"].abandon()  // stops like a crash: no cleanup, no more heartbeats
            try await cluster.stop("c")
            let crashed = ContinuousClock.now
            try await eventually("the crashed node's members to leave", within: .seconds(10)) {
                try await cluster["a"].presence(room: "r").map(\.uid) == ["stays"]
            }
            let took = ContinuousClock.now - crashed
            try await eventually("five leaves on both nodes") { onA.seen.count >= 11 && onB.seen.count >= 11 }
            try await Task.sleep(for: .milliseconds(300))
            let leaves = onA.seen.filter { $0.kind == .leave }
            #expect(leaves.map(\.uid).sorted() == (0..<5).map { "c\($0)" })
            #expect(onA.summary == onB.summary)
            #expect(onA.seen.count == 11)
            print("presence: a crashed node's 6 members (5 users) left \(took) after the crash (liveness window 600 ms)")
        }
    }

    /// With `presence.notifyMembers`, the room's members get each event as a
    /// JSON text frame, on every node.
    @Test func membersAreNotifiedWhenAsked() async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: .pubSub, backend: .single), configure: {
            $0.presence.rooms = true
            $0.presence.notifyMembers = true
        }) { cluster in
            let watcher = try await ClusterClient.connect(cluster["a"], uid: "w")
            try await cluster["a"].join(watcher.fd, room: "chat")
            let own = try JSONSerialization.jsonObject(with: Data(try await watcher.next().payload)) as? [String: String]
            #expect(own?["event"] == "join" && own?["uid"] == "w")
            let newcomer = try await ClusterClient.connect(cluster["b"], uid: "n")
            try await cluster["b"].join(newcomer.fd, room: "chat", metadata: "hi")
            let join = try JSONSerialization.jsonObject(with: Data(try await watcher.next().payload)) as? [String: String]
            #expect(join == ["type": "presence", "event": "join", "room": "chat", "uid": "n", "fd": newcomer.fd.description,
                             "metadata": "hi"])
            newcomer.close()
            let leave = try JSONSerialization.jsonObject(with: Data(try await watcher.next().payload)) as? [String: String]
            #expect(leave?["event"] == "leave" && leave?["uid"] == "n")
        }
    }

    @Test func presenceOffIsATypedError() async throws {
        try await withCluster(["a"], RoutingCase(driver: .pubSub, backend: .single)) { cluster in
            await #expect(throws: ClusterError.self) { try await cluster["a"].presence(room: "lobby") }
            await #expect(throws: ClusterError.self) { try await cluster["a"].presenceEvents(room: "lobby") }
        }
    }

    /// What the scripts publish parses back; anything else does not.
    @Test func eventPayloadCodec() throws {
        let fd = DistributedFD(node: "a", epoch: 0x1f, fd: 3)
        #expect(DistributedFD(fd.description) == fd)
        var payload = ByteBuffer(string: "join\0lobby\0alice\0\(fd)\0{\"x\":1}")
        #expect(PresenceEvent(payload: payload) == PresenceEvent(kind: .join, room: "lobby", uid: "alice", fd: fd, metadata: "{\"x\":1}"))
        payload = ByteBuffer(string: "leave\0lobby\0alice\0\(fd)\0")
        #expect(PresenceEvent(payload: payload)?.metadata == nil)
        for garbage in ["", "join", "hello\0lobby\0alice\0\(fd)\0", "join\0lobby\0alice\0not-an-fd\0", "join\0\0\0"] {
            #expect(PresenceEvent(payload: ByteBuffer(string: garbage)) == nil, "\(garbage)")
        }
    }
}
