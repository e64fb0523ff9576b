@testable import ClusterWS
import EmbeddedRedis
import NIOCore
import Testing

@Suite("Posting without waiting for Redis: order, reach, failures", .timeLimit(.minutes(2)))
struct PostTests {
    /// 300 posts from one caller to a uid on the other node arrive complete and in order.
    @Test(arguments: ClusterConfiguration.Driver.allCases)
    func postsToARemoteUserArriveInOrder(driver: ClusterConfiguration.Driver) async throws {
        try await withCluster(["a", "b"], driver: driver) { cluster in
            let alice = try await ClusterClient.connect(cluster["b"], uid: "alice")
            let local = try await ClusterClient.connect(cluster["a"], uid: "alice")
            for index in 0..<300 { try await cluster["a"].sender.post(uid: "alice", .text("m\(index)")) }
            for device in [alice, local] {
                for index in 0..<300 {
                    #expect(try await device.next().text == "m\(index)")
                }
            }
        }
    }

    /// Back-to-back postAll from one node reaches every connection of every node once, in order.
    @Test(arguments: ClusterConfiguration.Driver.allCases)
    func postAllReachesEveryConnectionInOrder(driver: ClusterConfiguration.Driver) async throws {
        try await withCluster(["a", "b"], driver: driver) { cluster in
            var clients: [ClusterClient] = []
            for node in ["a", "b"] {
                for index in 0..<3 { clients.append(try await ClusterClient.connect(cluster[node], uid: "\(node)\(index)")) }
            }
            for index in 0..<100 {
                try await cluster["a"].sender.postAll(.binary(ByteBuffer(bytes: [UInt8(index)])), except: [clients[0].fd])
            }
            try await cluster["a"].sender.postAll(.text("end"))
            for client in clients.dropFirst() {
                for index in 0..<100 {
                    #expect(try await client.next().payload == [UInt8(index)])
                }
            }
            for client in clients {  // the excepted one gets only "end"; a duplicate would show up here
                #expect(try await client.next().text == "end")
            }
        }
    }

    /// Posts to a room and to one connection on another node.
    @Test(arguments: ClusterConfiguration.Driver.allCases)
    func postToARoomAndToOneConnection(driver: ClusterConfiguration.Driver) async throws {
        try await withCluster(["a", "b"], driver: driver) { cluster in
            let carol = try await ClusterClient.connect(cluster["b"], uid: "carol")
            let dave = try await ClusterClient.connect(cluster["b"], uid: "dave")
            try await cluster["b"].join(carol.fd, room: "r1")
            try await cluster["a"].sender.post(room: "r1", .text("to the room"))
            try await cluster["a"].sender.post(to: dave.fd, .text("to dave"))
            #expect(try await carol.next().text == "to the room")
            #expect(try await dave.next().text == "to dave")
        }
    }

    /// With Redis gone, a post returns at once without throwing, local
    /// connections still get it, and the lost remote part is counted.
    @Test func postWhileRedisIsDownIsCountedNotThrown() async throws {
        try await withCluster(["a", "b"]) { cluster in
            let local = try await ClusterClient.connect(cluster["a"], uid: "erin")
            await cluster.redis.stop()
            try await eventually("node a sees Redis gone") { await !cluster["a"].health().redis }
            let clock = ContinuousClock()
            let start = clock.now
            try await cluster["a"].sender.post(uid: "erin", .text("still local"))
            #expect(clock.now - start < .milliseconds(500))
            #expect(try await local.next().text == "still local")
            try await eventually("the failed post is counted") { cluster["a"].statistics.postFailed >= 1 }
            try await cluster.redis.restart()
        }
    }

    /// The routing script's SHA-1 computed here is the one Redis gives it, and
    /// posts still arrive after Redis forgot the script (NOSCRIPT → sent with its source).
    @Test func queuePostsSurviveAScriptFlush() async throws {
        try await withCluster(["a", "b"], driver: .queue) { cluster in
            // The node loads the script on connect; Redis knows it by the SHA-1 computed here.
            let exists = try await cluster["a"].redis.send(RedisCommand("SCRIPT", "EXISTS", .string(QueueScript.script.sha1)))
            #expect(exists.array?.first?.int == 1)
            let frank = try await ClusterClient.connect(cluster["b"], uid: "frank")
            _ = try await cluster["a"].redis.send(RedisCommand("SCRIPT", "FLUSH"))
            try await cluster["a"].sender.post(uid: "frank", .text("after the flush"))
            #expect(try await frank.next().text == "after the flush")
            try await cluster["a"].sender.post(uid: "frank", .text("by sha again"))
            #expect(try await frank.next().text == "by sha again")
            #expect(cluster["a"].statistics.postFailed == 0)
        }
    }

    /// Targeted posts and broadcasts interleaved from one caller arrive in
    /// the order they were made, on the sending node and on the other one.
    @Test func targetedAndBroadcastPostsKeepTheirOrder() async throws {
        try await withCluster(["a", "b"]) { cluster in
            let remote = try await ClusterClient.connect(cluster["b"], uid: "gina")
            let local = try await ClusterClient.connect(cluster["a"], uid: "gina")
            for index in 0..<200 {
                if index % 2 == 0 {
                    try await cluster["a"].sender.post(uid: "gina", .text("u\(index)"))
                } else {
                    try await cluster["a"].sender.postAll(.text("a\(index)"))
                }
            }
            for device in [remote, local] {
                for index in 0..<200 {
                    #expect(try await device.next().text == (index % 2 == 0 ? "u" : "a") + "\(index)")
                }
            }
        }
    }
}
