@testable import ClusterWS
import EmbeddedRedis
import Foundation
import NIOCore
import Testing

/// One frame of the client protocol (`clusterws.v1`), parsed.
struct ProtocolFrame: Sendable, CustomStringConvertible {
    var type: String
    var stream: String?
    var offset: UInt64?
    var epoch: String?
    var data: String?
    var binary = false
    var recovered: Bool?
    var reason: String?
    var replayed: Int?

    init(_ frame: WireFrame) throws {
        guard let object = try JSONSerialization.jsonObject(with: Data(frame.payload)) as? [String: Any],
              let type = object["type"] as? String else {
            throw UpgradeFailed(status: 0, body: "not a protocol frame: \(frame.text)")
        }
        self.type = type
        stream = object["stream"] as? String
        offset = (object["offset"] as? NSNumber)?.uint64Value
        epoch = object["epoch"] as? String
        data = object["data"] as? String
        binary = object["binary"] as? Bool ?? false
        recovered = object["recovered"] as? Bool
        reason = object["reason"] as? String
        replayed = (object["replayed"] as? NSNumber)?.intValue
    }

    var position: StreamPosition? { offset.flatMap { offset in epoch.map { StreamPosition(offset: offset, epoch: $0) } } }
    var description: String { "\(type) \(stream ?? "-") \(position.map(\.description) ?? "-") \(data ?? "")" }
}

/// A raw WebSocket client that negotiates the client protocol.
struct ProtocolClient {
    let raw: RawClient
    /// The fd the test node greets with ("ready <fd>"); frames before it were queued.
    let fd: DistributedFD
    /// Frames that came before the greeting (position, recovery, replay).
    let opening: [ProtocolFrame]

    static func connect(_ node: ClusterNode, uid: String?, positions: [String: StreamPosition] = [:]) async throws -> ProtocolClient {
        let port = try await node.waitUntilListening()
        let raw = try await RawClient.connect(port: port)
        var query = uid.map { ["uid=\($0)"] } ?? []
        for (stream, position) in positions.sorted(by: { $0.key < $1.key }) {
            let value = "\(position.offset).\(position.epoch).\(stream)"
            query.append("clusterws-position=" + (value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? value))
        }
        let headers = try await raw.upgrade(path: "/ws" + (query.isEmpty ? "" : "?" + query.joined(separator: "&")),
                                            extra: ["Sec-WebSocket-Protocol: chat, clusterws.v1"])
        guard headers["sec-websocket-protocol"] == "clusterws.v1" else {
            throw UpgradeFailed(status: 101, body: "the server did not accept clusterws.v1: \(headers)")
        }
        var opening: [ProtocolFrame] = []
        while true {
            let frame = try ProtocolFrame(try await within(.seconds(10), "a frame") { try await raw.readFrame() })
            if frame.type == "message", let data = frame.data, frame.position == nil, data.hasPrefix("ready "),
               let fd = DistributedFD(String(data.dropFirst(6))) {
                return ProtocolClient(raw: raw, fd: fd, opening: opening)
            }
            opening.append(frame)
        }
    }

    func next() async throws -> ProtocolFrame {
        try ProtocolFrame(try await within(.seconds(10), "a frame") { try await raw.readFrame() })
    }

    /// Cuts the TCP connection: no close frame.
    func cut() { raw.close() }
}

@Suite("History and recovery over the client protocol", .serialized, .timeLimit(.minutes(5)))
struct HistoryRecoveryTests {
    static func historyOn(_ configuration: inout ClusterConfiguration) {
        configuration.history.users = true
        configuration.history.rooms = true
    }

    /// The issue's scenario: a client's TCP connection is cut (no close) for
    /// 3 s while 1,000 messages are sent to its user; it reconnects to the
    /// *other* node with its last position and gets all 1,000 exactly once,
    /// in order, then live messages, with no gap and no duplicate.
    @Test(arguments: RoutingCase.all)
    func aCutClientRecoversEveryMessageOnTheOtherNode(setup: RoutingCase) async throws {
        try await withCluster(["a", "b"], setup, configure: Self.historyOn) { cluster in
            let first = try await ProtocolClient.connect(cluster["b"], uid: "phone")
            let start = try #require(first.opening.first)
            #expect(start.type == "position" && start.stream == "user:phone" && start.offset == 0)
            let epoch = try #require(start.epoch)
            for index in 1...5 { try await cluster["a"].sender.send(uid: "phone", .text("m\(index)")) }
            var last = try #require(start.position)
            for index in 1...5 {
                let frame = try await first.next()
                #expect(frame.type == "message" && frame.data == "m\(index)" && frame.offset == UInt64(index) && frame.epoch == epoch)
                last = try #require(frame.position)
            }
            first.cut()
            let cutAt = ContinuousClock.now
            for index in 6...1_005 { try await cluster["a"].sender.send(uid: "phone", .text("m\(index)")) }
            try await Task.sleep(until: cutAt + .seconds(3))

            let second = try await ProtocolClient.connect(cluster["a"], uid: "phone", positions: ["user:phone": last])
            let outcome = try #require(second.opening.first)
            #expect(outcome.type == "recovered" && outcome.recovered == true && outcome.replayed == 1_000, "\(outcome)")
            #expect(outcome.offset == 1_005 && outcome.epoch == epoch)
            let replayed = second.opening.dropFirst()
            #expect(replayed.count == 1_000)
            #expect(replayed.map(\.data) == (6...1_005).map { "m\($0)" })
            #expect(replayed.map(\.offset) == (6...1_005).map { UInt64($0) })
            // Live again, from either node, right after the replay.
            try await cluster["b"].sender.send(uid: "phone", .text("live"))
            let live = try await second.next()
            #expect(live.data == "live" && live.offset == 1_006)
        }
    }

    /// A client that sent no position gets every message sent once its
    /// binding is visible in Redis, even when the live copy reaches its node
    /// after the node has read the stream's position (the sends race the
    /// binding here, 30 times): nothing between the binding and the position
    /// is lost, nothing is doubled.
    @Test func aFreshClientMissesNothingSentWhileItIsBeingBound() async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: .pubSub, backend: .single), configure: Self.historyOn) { cluster in
            for round in 0..<30 {
                let uid = "race\(round)"
                let connecting = Task { try await ProtocolClient.connect(cluster["b"], uid: uid) }
                try await within(.seconds(10), "the binding") {
                    while try await !cluster["a"].relations.isOnline(uid: uid) { await Task.yield() }
                }
                for index in 1...5 { try await cluster["a"].sender.post(uid: uid, .text("m\(index)")) }
                let client = try await connecting.value
                var frames = client.opening
                while frames.filter({ $0.type == "message" }).count < 5 { frames.append(try await client.next()) }
                let start = try #require(frames.first)
                #expect(start.type == "position" && start.offset == 0, "round \(round): \(frames)")
                let messages = frames.filter { $0.type == "message" }
                #expect(messages.map(\.data) == (1...5).map { "m\($0)" }, "round \(round): \(frames)")
                #expect(messages.map(\.offset) == (1...5).map { UInt64($0) }, "round \(round): \(frames)")
                client.cut()
            }
        }
    }

    /// The queue driver with several consumers hands entries to the router
    /// out of order; a client-protocol connection still gets every message
    /// once, in offset order (held until the gap before it fills). (A raw
    /// client of the same user sees them out of order: checked by hand.)
    @Test func queueConsumersOutOfOrderStillArriveInOffsetOrder() async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: .queue, backend: .single), configure: {
            Self.historyOn(&$0)
            $0.queue.consumers = 4
            $0.queue.concurrency = 3
        }) { cluster in
            let client = try await ProtocolClient.connect(cluster["b"], uid: "q")
            for index in 1...600 { try await cluster["a"].sender.post(uid: "q", .text("m\(index)")) }
            var offsets: [UInt64] = []
            var texts: [String] = []
            while offsets.count < 600 {
                let frame = try await client.next()
                guard frame.type == "message" else { continue }
                offsets.append(frame.offset ?? 0)
                texts.append(frame.data ?? "")
            }
            #expect(offsets == (1...600).map { UInt64($0) })
            #expect(texts == (1...600).map { "m\($0)" })
            #expect(cluster["b"].counters.dropped(.historyGap) == 0)
        }
    }

    /// Pub/sub loses what is published while a node's subscriber reconnects.
    /// A client-protocol connection does not: once resubscribed, the node
    /// reads the position of each stream its clients are live on, and the
    /// gap is read from history — without waiting for the stream's next
    /// message. A raw client of the same user shows what was lost.
    @Test func aGapLeftByASubscriberReconnectIsFilledFromHistory() async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: .pubSub, backend: .single), configure: Self.historyOn) { cluster in
            let client = try await ProtocolClient.connect(cluster["b"], uid: "g")
            let raw = try await ClusterClient.connect(cluster["b"], uid: "g")
            // A burst right after the subscribers are cut, and nothing after it: mostly lost on pub/sub.
            _ = try await cluster["a"].redis.send(RedisCommand("CLIENT", "KILL", "TYPE", "pubsub"))
            let sent = 50
            for index in 1...sent { try await cluster["a"].sender.post(uid: "g", .text("m\(index)")) }
            var texts: [String] = []
            var offsets: [UInt64] = []
            while texts.count < sent {
                let frame = try await client.next()
                guard frame.type == "message" else { continue }
                texts.append(frame.data ?? "")
                offsets.append(frame.offset ?? 0)
            }
            #expect(texts == (1...sent).map { "m\($0)" })
            #expect(offsets == (1...sent).map { UInt64($0) })
            // The raw client did not get them all: one more message marks the end of what it got.
            try await cluster["a"].sender.send(uid: "g", .text("end"))
            var rawTexts: [String] = []
            while rawTexts.last != "end" { rawTexts.append(try await raw.next().text ?? "") }
            #expect(rawTexts.count - 1 < sent, "nothing was lost in this run: \(sent) sent")
        }
    }

    /// A node killed while its clients are connected: they reconnect to
    /// another node and recover what was sent while they were away.
    @Test func clientsOfAKilledNodeRecoverElsewhere() async throws {
        try await withCluster(["a", "b", "c"], RoutingCase(driver: .pubSub, backend: .single), configure: Self.historyOn) { cluster in
            var clients: [ProtocolClient] = []
            for index in 0..<5 { clients.append(try await ProtocolClient.connect(cluster["c"], uid: "k\(index)")) }
            let positions = try clients.map { try #require($0.opening.first?.position) }
            cluster["c"].abandon()  // stops like a crash: no cleanup, no more heartbeats
            try await cluster.stop("c")
            for round in 1...20 {
                for index in 0..<5 { try await cluster["a"].sender.send(uid: "k\(index)", .text("\(index)/\(round)")) }
            }
            for index in 0..<5 {
                let again = try await ProtocolClient.connect(cluster["b"], uid: "k\(index)", positions: ["user:k\(index)": positions[index]])
                #expect(again.opening.first?.recovered == true, "\(again.opening.first.map(\.description) ?? "nothing")")
                #expect(again.opening.dropFirst().map(\.data) == (1...20).map { "\(index)/\($0)" })
            }
        }
    }

    /// The same for a room: the application joins the new connection to the
    /// room, and the join recovers the room's stream from the client's position.
    @Test(arguments: [ClusterConfiguration.Driver.pubSub, .queue])
    func aCutClientRecoversItsRoom(driver: ClusterConfiguration.Driver) async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: driver, backend: .single), configure: Self.historyOn) { cluster in
            let first = try await ProtocolClient.connect(cluster["b"], uid: nil)
            try await cluster["b"].join(first.fd, room: "lobby")
            let start = try await first.next()
            #expect(start.type == "position" && start.stream == "room:lobby" && start.offset == 0)
            try await cluster["a"].sender.send(room: "lobby", .text("r1"))
            let seen = try await first.next()
            #expect(seen.data == "r1" && seen.offset == 1)
            first.cut()
            for index in 2...301 { try await cluster["a"].sender.send(room: "lobby", .binary(ByteBuffer(string: "r\(index)"))) }

            let second = try await ProtocolClient.connect(cluster["a"], uid: nil,
                                                          positions: ["room:lobby": try #require(seen.position)])
            try await cluster["a"].join(second.fd, room: "lobby")
            let outcome = try await second.next()
            #expect(outcome.type == "recovered" && outcome.recovered == true && outcome.replayed == 300, "\(outcome)")
            var payloads: [String] = []
            for _ in 0..<300 {
                let frame = try await second.next()
                #expect(frame.binary)
                payloads.append(String(decoding: Data(base64Encoded: frame.data ?? "") ?? Data(), as: UTF8.self))
            }
            #expect(payloads == (2...301).map { "r\($0)" })
        }
    }

    /// A replay far bigger than a connection's outbound budget (the test
    /// nodes allow 512 KiB) goes out in pages, each after the last left the
    /// socket: 1,500 messages of 2 KiB (≈ 4 MiB of frames) arrive, and the
    /// client is not closed as a slow consumer.
    @Test func aLargeReplayIsPacedNotDumped() async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: .pubSub, backend: .single), configure: {
            Self.historyOn(&$0)
            $0.history.maxLength = 2_000
        }) { cluster in
            let first = try await ProtocolClient.connect(cluster["b"], uid: "big")
            let start = try #require(first.opening.first?.position)
            first.cut()
            let body = String(repeating: "y", count: 2_048)
            for index in 1...1_500 { try await cluster["a"].sender.post(uid: "big", .text("\(index) \(body)")) }
            try await cluster["a"].sender.send(uid: "big", .text("end"))
            let port = try await cluster["a"].waitUntilListening()
            let raw = try await RawClient.connect(port: port)
            let value = "\(start.offset).\(start.epoch).user:big".addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
            _ = try await raw.upgrade(path: "/ws?uid=big&clusterws-position=" + value, extra: ["Sec-WebSocket-Protocol: clusterws.v1"])
            let outcome = try ProtocolFrame(try await raw.readFrame())
            #expect(outcome.recovered == true && outcome.replayed == 1_501, "\(outcome)")
            var offsets: [UInt64] = []
            while offsets.count < 1_501 {
                let frame = try await within(.seconds(10), "a replayed frame") { try await raw.readFrame() }
                #expect(frame.opcode == Wire.text, "closed: \(frame.closeCode.map(String.init) ?? "-") \(frame.closeReason)")
                guard frame.opcode == Wire.text else { return }
                offsets.append(try ProtocolFrame(frame).offset ?? 0)
            }
            #expect(offsets == (1...1_501).map { UInt64($0) })
            #expect(cluster["a"].counters.dropped(.slowConsumer) == 0)
        }
    }

    /// Past `history.maxLength`, the client is told it cannot recover, and
    /// where the stream is now; nothing is replayed.
    @Test func historyTrimmedPastTheClientsOffsetIsNotRecovered() async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: .pubSub, backend: .single), configure: {
            Self.historyOn(&$0)
            $0.history.maxLength = 10
        }) { cluster in
            let first = try await ProtocolClient.connect(cluster["b"], uid: "u")
            let start = try #require(first.opening.first?.position)
            first.cut()
            for index in 1...25 { try await cluster["a"].sender.send(uid: "u", .text("m\(index)")) }
            let second = try await ProtocolClient.connect(cluster["a"], uid: "u", positions: ["user:u": start])
            #expect(second.opening.count == 1)
            let outcome = try #require(second.opening.first)
            #expect(outcome.recovered == false && outcome.reason == "trimmed" && outcome.offset == 25 && outcome.epoch == start.epoch)
            // Within the history it still works: from offset 20, five messages.
            let third = try await ProtocolClient.connect(cluster["b"], uid: "u",
                                                         positions: ["user:u": StreamPosition(offset: 20, epoch: start.epoch)])
            #expect(third.opening.first?.recovered == true)
            #expect(third.opening.dropFirst().map(\.data) == (21...25).map { "m\($0)" })
        }
    }

    /// Redis restarted empty: the stream's epoch is gone; the client learns
    /// it cannot recover, and new messages start a new epoch at offset 1.
    @Test func redisRestartedEmptyChangesTheEpoch() async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: .pubSub, backend: .single), configure: Self.historyOn) { cluster in
            let first = try await ProtocolClient.connect(cluster["b"], uid: "u")
            try await cluster["a"].sender.send(uid: "u", .text("before"))
            let seen = try await first.next()
            first.cut()
            await cluster.redis.stop(crash: true)
            try await cluster.redis.restart()
            try await eventually("the nodes to be back on Redis", within: .seconds(20)) {
                (try? await cluster["a"].sender.send(uid: "u", .text("after"))) != nil
            }
            let second = try await ProtocolClient.connect(cluster["a"], uid: "u", positions: ["user:u": try #require(seen.position)])
            let outcome = try #require(second.opening.first)
            #expect(outcome.recovered == false && outcome.reason == "epoch_changed")
            #expect(outcome.epoch != seen.epoch)
            try await cluster["b"].sender.send(uid: "u", .text("new"))
            let fresh = try await second.next()
            #expect(fresh.data == "new" && fresh.epoch == outcome.epoch && fresh.offset == (outcome.offset ?? 0) + 1)
        }
    }

    /// With user history on, a message to several users goes into each
    /// one's history (its own offset); raw clients get it as before.
    @Test func sendMultiWritesEveryUsersHistory() async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: .pubSub, backend: .single), configure: Self.historyOn) { cluster in
            let one = try await ProtocolClient.connect(cluster["b"], uid: "m1")
            let two = try await ProtocolClient.connect(cluster["a"], uid: "m2")
            let raw = try await ClusterClient.connect(cluster["b"], uid: "m3")
            let counts = try await cluster["a"].sender.sendMulti(uids: ["m1", "m2", "m3", "m1", "nobody"], .text("all of you"))
            #expect(counts == ["m1": 1, "m2": 1, "m3": 1, "nobody": 0])
            let first = try await one.next()
            #expect(first.data == "all of you" && first.stream == "user:m1" && first.offset == 1)
            let second = try await two.next()
            #expect(second.data == "all of you" && second.stream == "user:m2" && second.offset == 1)
            #expect(try await raw.next().text == "all of you")
            try await cluster["b"].sender.postMulti(uids: ["m1", "m2"], .text("posted"))
            let third = try await one.next()
            let fourth = try await two.next()
            #expect(third.data == "posted" && third.offset == 2 && fourth.data == "posted" && fourth.offset == 2)
        }
    }

    /// Clients that do not offer the protocol keep getting raw frames, from
    /// their own node too (which now gets the stream through Redis).
    @Test func rawClientsAreUnaffected() async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: .pubSub, backend: .single), configure: Self.historyOn) { cluster in
            let local = try await ClusterClient.connect(cluster["a"], uid: "r")
            let remote = try await ClusterClient.connect(cluster["b"], uid: "r")
            let reached = try await cluster["a"].sender.send(uid: "r", .text("plain"))
            #expect(reached == 2)
            #expect(try await local.next().text == "plain")
            #expect(try await remote.next().text == "plain")
            try await cluster["a"].sender.sendAll(.text("everyone"))
            #expect(try await local.next().text == "everyone")
        }
    }
}
