@testable import ClusterWS
import EmbeddedRedis
import NIOCore
import Testing

@Suite("Cluster routing across real nodes, with both drivers on one Redis and pub/sub on a Redis Cluster", .timeLimit(.minutes(5)))
struct RoutingTests {
    @Test(arguments: RoutingCase.all)
    func uidOnNodeBIsReachedFromNodeA(setup: RoutingCase) async throws {
        try await withCluster(["a", "b"], setup) { cluster in
            let alice = try await ClusterClient.connect(cluster["b"], uid: "alice")
            let reached = try await cluster["a"].sender.send(uid: "alice", .text("hello from a"))
            #expect(reached == 1)
            let frame = try await alice.next()
            #expect(frame.opcode == Wire.text && frame.text == "hello from a")
            #expect(try await cluster["a"].relations.findUserFDs(uid: "alice") == [alice.fd])
            #expect(alice.fd.node == "b")
        }
    }

    @Test(arguments: RoutingCase.all)
    func everyDeviceGetsExactlyOneCopy(setup: RoutingCase) async throws {
        try await withCluster(["a", "b"], setup) { cluster in
            let phoneA = try await ClusterClient.connect(cluster["a"], uid: "bob")
            let phoneB = try await ClusterClient.connect(cluster["b"], uid: "bob")
            let laptopB = try await ClusterClient.connect(cluster["b"], uid: "bob")
            #expect(try await cluster["a"].sender.send(uid: "bob", .text("one")) == 2)
            #expect(try await cluster["b"].sender.send(uid: "bob", .text("two")) == 2)
            // Sent from two nodes, so no order between them; but each device gets each once.
            for device in [phoneA, phoneB, laptopB] {
                let two = [try await device.next().text, try await device.next().text]
                #expect(two.sorted() == ["one", "two"])
            }
            _ = try await cluster["a"].sender.sendAll(.text("end-a"))
            _ = try await cluster["b"].sender.sendAll(.text("end-b"))
            for device in [phoneA, phoneB, laptopB] {  // a duplicate would show up here
                let ends = [try await device.next().text, try await device.next().text]
                #expect(ends.sorted() == ["end-a", "end-b"])
            }
            #expect(Set(try await cluster["b"].relations.findUserFDs(uid: "bob")) == [phoneA.fd, phoneB.fd, laptopB.fd])
        }
    }

    @Test(arguments: RoutingCase.all)
    func sendMultiMixesLocalAndRemoteUsers(setup: RoutingCase) async throws {
        try await withCluster(["a", "b"], setup) { cluster in
            let local = try await ClusterClient.connect(cluster["a"], uid: "u1")
            let remote = try await ClusterClient.connect(cluster["b"], uid: "u2")
            let counts = try await cluster["a"].sender.sendMulti(uids: ["u1", "u2", "nobody"], .binary(ByteBuffer(bytes: [1, 2, 3])))
            #expect(counts == ["u1": 1, "u2": 1, "nobody": 0])
            for client in [local, remote] {
                let frame = try await client.next()
                #expect(frame.opcode == Wire.binary && frame.payload == [1, 2, 3])
            }
        }
    }

    @Test(arguments: RoutingCase.all)
    func sendAllReachesEveryConnectionOnEveryNodeExactlyOnce(setup: RoutingCase) async throws {
        try await withCluster(["a", "b", "c"], setup) { cluster in
            var clients: [ClusterClient] = []
            for id in ["a", "b", "c"] {
                for index in 0..<3 {
                    clients.append(try await ClusterClient.connect(cluster[id], uid: index == 0 ? nil : "\(id)\(index)"))
                }
            }
            let skipped = clients[4]
            #expect(try await cluster["b"].sender.sendAll(.text("all"), except: [skipped.fd]) == 3)
            #expect(try await cluster["c"].sender.sendAll(.text("marker")) == 3)
            // Two senders on two nodes: no order between them, but each arrives once.
            for client in clients {
                if client.fd == skipped.fd {
                    #expect(try await client.next().text == "marker")
                } else {
                    let both = [try await client.next().text, try await client.next().text]
                    #expect(both.sorted() == ["all", "marker"])
                }
            }
            // One sender: every client's next message is this one, so nothing came twice.
            #expect(try await cluster["b"].sender.sendAll(.text("final")) == 3)
            for client in clients { #expect(try await client.next().text == "final") }
        }
    }

    @Test(arguments: RoutingCase.all)
    func roomsReachTheirMembersOnEveryNode(setup: RoutingCase) async throws {
        try await withCluster(["a", "b"], setup) { cluster in
            let memberA = try await ClusterClient.connect(cluster["a"], uid: "m1")
            let memberB = try await ClusterClient.connect(cluster["b"], uid: "m2")
            let outsider = try await ClusterClient.connect(cluster["b"], uid: "o")
            try await cluster["a"].join(memberA.fd, room: "lobby")
            try await cluster["b"].join(memberB.fd, room: "lobby")
            #expect(try await cluster["b"].sender.send(room: "lobby", .text("in the lobby")) == 2)
            #expect(try await memberA.next().text == "in the lobby")
            #expect(try await memberB.next().text == "in the lobby")
            try await cluster["b"].leave(memberB.fd, room: "lobby")
            #expect(try await cluster["a"].sender.send(room: "lobby", .text("again")) == 1)
            #expect(try await memberA.next().text == "again")
            // Neither the outsider nor the member who left got anything more.
            #expect(try await cluster["a"].sender.sendAll(.text("end")) == 2)
            #expect(try await memberB.next().text == "end")
            #expect(try await outsider.next().text == "end")
        }
    }

    @Test(arguments: RoutingCase.all)
    func oneConnectionAnywhereAndOpcodesArePreserved(setup: RoutingCase) async throws {
        try await withCluster(["a", "b"], setup) { cluster in
            let target = try await ClusterClient.connect(cluster["b"], uid: "t")
            let sameUser = try await ClusterClient.connect(cluster["b"], uid: "t")
            #expect(try await cluster["a"].sender.send(to: target.fd, .binary(ByteBuffer(bytes: [0, 255]))))
            #expect(try await cluster["a"].sender.send(to: target.fd, .text("text")))
            let binary = try await target.next()  // one sender, one path: in order
            #expect(binary.opcode == Wire.binary && binary.payload == [0, 255])
            let text = try await target.next()
            #expect(text.opcode == Wire.text && text.text == "text")
            #expect(try await cluster["b"].sender.send(to: target.fd, .text("local")))
            #expect(try await target.next().text == "local")
            // The other device of the same user got none of them.
            #expect(try await cluster["a"].sender.send(to: sameUser.fd, .text("only me")))
            #expect(try await sameUser.next().text == "only me")
            // The configured default opcode is binary, as in the seed.
            #expect(try await cluster["a"].sender.send(uid: "t", "default") == 1)
            #expect(try await target.next().opcode == Wire.binary)
        }
    }

    @Test(arguments: RoutingCase.all)
    func afterADisconnectRelationsAreGoneAndNobodyReceives(setup: RoutingCase) async throws {
        try await withCluster(["a", "b"], setup) { cluster in
            let leaving = try await ClusterClient.connect(cluster["b"], uid: "leaver")
            #expect(try await cluster["a"].relations.isOnline(uid: "leaver"))
            leaving.close()
            try await eventually("relations to go") { try await !cluster["a"].relations.isOnline(uid: "leaver") }
            #expect(try await cluster["a"].sender.send(uid: "leaver", .text("anyone?")) == 0)
            #expect(try await !cluster["b"].sender.send(to: leaving.fd, .text("anyone?")))
            let left = try await cluster["a"].redis.send(batch: [
                RedisCommand("EXISTS", "test:user:relate:fd:leaver"), RedisCommand("EXISTS", .string("test:fd:relate:user:\(leaving.fd)")),
            ])
            #expect(left.map { (try? $0.get())?.int } == [0, 0])
        }
    }

    @Test(arguments: RoutingCase.all)
    func aClientThatReadsNothingDoesNotDelayTheOthers(setup: RoutingCase) async throws {
        try await withCluster(["a", "b"], setup) { cluster in
            let stalled = try await ClusterClient.connect(cluster["b"], uid: "slow", receiveBuffer: 4096)
            stalled.raw.channel.setOption(.autoRead, value: false).whenComplete { _ in }
            let healthy = try await ClusterClient.connect(cluster["b"], uid: "fast")
            let big = WebSocketMessage.binary(ByteBuffer(repeating: 1, count: 128 * 1024))
            for index in 0..<100 {  // 12.8 MB to everyone: past the kernel buffers (send side up to 4 MB) and the bound
                try await cluster["a"].sender.sendAll(big)
                let frame = try await healthy.next()
                #expect(frame.payload.count == 128 * 1024, "frame \(index)")
            }
            try await eventually("the stalled client to be dropped and counted") { cluster["b"].slowConsumerCloses == 1 }
            #expect(cluster["b"].connectionCount == 1)
        }
    }

    @Test func garbageOnTheClusterChannelsIsDroppedAndCounted() async throws {
        try await withCluster(["a", "b"]) { cluster in
            let client = try await ClusterClient.connect(cluster["b"], uid: "g")
            for channel in ["test:all", "test:node:b", "test:user:g"] {
                _ = try await cluster["a"].redis.send(RedisCommand("PUBLISH", .string(channel), "garbage"))
            }
            var truncated = try Envelope(target: .user("g"), kind: .text, originNode: "x", originEpoch: 1,
                                     payload: ByteBuffer(string: "hi")).encoded()
            truncated.moveWriterIndex(to: truncated.writerIndex - 1)
            _ = try await cluster["a"].redis.send(RedisCommand("PUBLISH", "test:user:g", .bytes(truncated)))
            #expect(try await cluster["a"].sender.send(uid: "g", .text("still flowing")) == 1)
            #expect(try await client.next().text == "still flowing")
            #expect(cluster["b"].statistics.garbageDropped == 4)
        }
    }
}
