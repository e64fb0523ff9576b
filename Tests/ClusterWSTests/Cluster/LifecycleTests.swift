@testable import ClusterWS
import EmbeddedRedis
import NIOCore
import Testing

@Suite("Cluster liveness, restarts and shutdown", .timeLimit(.minutes(5)))
struct ClusterLifecycleTests {
    @Test func aDeadNodesRelationsDisappearWithinTheLivenessWindow() async throws {
        try await withCluster(["a"]) { cluster in
            let redis = cluster["a"].redis
            // A node that announced itself, bound a user, then died without cleaning up.
            let ghost = DistributedFD(node: "ghost", epoch: 7, fd: 1)
            _ = try await redis.send(batch: [
                RedisCommand("SET", "test:alive:ghost", .string(String(7, radix: 16))),
                RedisCommand("SADD", "test:nodes", "ghost"),
                RedisCommand("SADD", "test:user:relate:fd:casper", .string(ghost.description)),
                RedisCommand("SET", .string("test:fd:relate:user:\(ghost)"), "casper"),
                RedisCommand("SADD", "test:node-fds:ghost", .string(ghost.description)),
            ])
            #expect(try await cluster["a"].relations.findUserFDs(uid: "casper") == [ghost])
            // Its last heartbeat lapses now (set without expiry above, so the check before
            // cannot race the window on a loaded machine).
            _ = try await redis.send(RedisCommand("PEXPIRE", "test:alive:ghost", 300))
            let clock = ContinuousClock()
            let start = clock.now
            // findUserFd never answers with an fd on a dead node…
            try await eventually("the ghost to be considered dead") {
                try await cluster["a"].relations.findUserFDs(uid: "casper").isEmpty
            }
            // …and the janitor removes the relations themselves.
            try await eventually("the janitor") {
                try await redis.send(RedisCommand("EXISTS", "test:user:relate:fd:casper")).int == 0
            }
            #expect(clock.now - start < .seconds(5))
            try await eventually("the ghost to leave the set of nodes") {
                try await redis.send(RedisCommand("SISMEMBER", "test:nodes", "ghost")).int == 0
            }
        }
    }

    @Test func aCrashedNodesRelationsDisappearWithinTheLivenessWindow() async throws {
        try await withRedisServer { redis in
            let cluster = try await TestCluster.start(["a", "c"], redis: redis)
            let carl = try await ClusterClient.connect(cluster["c"], uid: "carl")
            #expect(try await cluster["a"].relations.findUserFDs(uid: "carl") == [carl.fd])
            cluster["c"].abandon()  // stops like a crash: no cleanup, no more heartbeats
            try await cluster.stop("c")
            let keys = try await cluster["a"].redis.send(RedisCommand("EXISTS", "test:user:relate:fd:carl"))
            #expect(keys.int == 1)  // nothing was cleaned up by the dead node itself
            let clock = ContinuousClock()
            let start = clock.now
            try await eventually("carl to be gone") { try await cluster["a"].relations.findUserFDs(uid: "carl").isEmpty }
            try await eventually("the janitor to remove carl's keys") {
                try await cluster["a"].redis.send(RedisCommand("EXISTS", "test:user:relate:fd:carl")).int == 0
            }
            // Liveness window 600 ms + one janitor round (100 ms), with slack for a loaded machine.
            #expect(clock.now - start < .seconds(5))
            #expect(try await cluster["a"].sender.send(uid: "carl", .text("?")) == 0)
            await cluster.stopAll()
        }
    }

    @Test func aRestartedNodeDropsMessagesForStaleFDs() async throws {
        try await withRedisServer { redis in
            let cluster = try await TestCluster.start(["a", "b"], redis: redis)
            let old = try await ClusterClient.connect(cluster["a"], uid: "x")
            try await cluster.stop("a")
            await old.raw.waitForClose()

            let restarted = try TestCluster.makeNode("a", redis: redis)
            let harness = ServiceGroupHarness(restarted)
            try await harness.start()
            _ = try await restarted.waitUntilListening()
            let fresh = try await ClusterClient.connect(restarted, uid: "y")
            #expect(fresh.fd.fd == old.fd.fd)  // the same local number…
            #expect(fresh.fd.epoch != old.fd.epoch)  // …in another epoch

            #expect(try await cluster["b"].relations.findUserFDs(uid: "x").isEmpty)
            _ = try await cluster["b"].sender.send(to: old.fd, .text("for the old connection"))
            #expect(try await cluster["b"].sender.send(to: fresh.fd, .text("for the new one")))
            #expect(try await fresh.next().text == "for the new one")  // and nothing before it
            try await eventually("the stale message to be counted") { restarted.statistics.staleDropped == 1 }

            try await harness.shutdownGracefully()
            await cluster.stopAll()
        }
    }

    @Test func gracefulShutdownClosesWith1001AndRemovesRelations() async throws {
        try await withRedisServer { redis in
            let cluster = try await TestCluster.start(["a", "b"], redis: redis)
            let clients = [try await ClusterClient.connect(cluster["a"], uid: "s1"),
                           try await ClusterClient.connect(cluster["a"], uid: "s2")]
            #expect(try await cluster["b"].relations.isOnline(uid: "s1"))
            let stopping = Task { try await cluster.stop("a") }
            for client in clients {
                #expect(try await client.raw.readUntilClose().closeCode == 1001)
                try await client.raw.send(Wire.closeFrame(code: 1001))
            }
            try await within(.seconds(10), "node a to stop") { try await stopping.value }
            #expect(try await !cluster["b"].relations.isOnline(uid: "s1"))
            #expect(try await !cluster["b"].relations.isOnline(uid: "s2"))
            let leftovers = try await cluster["b"].redis.send(RedisCommand("KEYS", "test:*")).array?.compactMap(\.string) ?? []
            let ofNodeA = leftovers.filter {
                $0 == "test:alive:a" || $0 == "test:node-fds:a" || $0.contains("user:a#") || $0.contains("s1") || $0.contains("s2")
            }
            #expect(ofNodeA.isEmpty)
            #expect(try await cluster["b"].redis.send(RedisCommand("SISMEMBER", "test:nodes", "a")).int == 0)
            #expect(try await cluster["b"].sender.send(uid: "s1", .text("gone")) == 0)
            await cluster.stopAll()
        }
    }

    @Test func relationsOutliveTheirTTLWhileTheConnectionStaysOpen() async throws {
        try await withRedisServer { redis in
            var configuration = ClusterConfiguration(redisURL: .init(redis.url), serverID: "a", namespace: "test",
                                                     webSocket: .init(keepalive: .disabled))
            configuration.ttl = .seconds(2)
            configuration.heartbeatInterval = .milliseconds(100)
            let node = try ClusterNode(configuration: configuration)
            node.webSocket("/ws", authenticate: { $0.queryParameter("uid") }) { socket in
                try? await socket.socket.send(.text("ready \(socket.fd)"))
            }
            let harness = ServiceGroupHarness(node)
            try await harness.start()
            let client = try await ClusterClient.connect(node, uid: "long")
            try await Task.sleep(for: .seconds(3))  // longer than the TTL: refreshed meanwhile
            #expect(try await node.relations.findUserFDs(uid: "long") == [client.fd])
            let ttl = try await node.redis.send(RedisCommand("TTL", "test:user:relate:fd:long")).int ?? -2
            #expect(ttl > 0 && ttl <= 2)
            try await harness.shutdownGracefully()
        }
    }

    @Test func distributedFDStringFormRoundTripsAndRejectsMalformedInput() {
        let fd = DistributedFD(node: "server#1", epoch: 0xABCDEF, fd: 42)
        #expect(fd.description == "server#1#0000000000abcdef#42")
        #expect(DistributedFD(fd.description) == fd)
        for bad in ["", "x", "a#b#c", "#0000000000abcdef#1", "n#0000000000abcdef#", "n#abc#1", "n#0000000000ABCDEF#1",
                    "n#0000000000abcdef#-1", "n#0000000000abcdef#01", "n#0000000000abcdeg#1", "n#0000000000abcdef#1x"] {
            #expect(DistributedFD(bad) == nil, "\(bad)")
        }
    }

    @Test func envelopesRoundTripAndRejectDamage() throws {
        let samples: [Envelope] = [
            Envelope(target: .fds(epoch: 9, [1, 2, 3]), kind: .binary, originNode: "a", originEpoch: 5, payload: ByteBuffer(bytes: [0, 1])),
            Envelope(target: .user("ü"), kind: .text, originNode: "n", originEpoch: 1, payload: ByteBuffer(string: "hi")),
            Envelope(target: .room("r"), kind: .text, originNode: "n", originEpoch: 1, payload: ByteBuffer()),
            Envelope(target: .users(["a", "bé", ""]), kind: .binary, originNode: "n", originEpoch: 1, payload: ByteBuffer(string: "x")),
            Envelope(target: .all(except: [DistributedFD(node: "b", epoch: 2, fd: 3)]), kind: .binary, originNode: "n",
                     originEpoch: 1, payload: ByteBuffer(repeating: 7, count: 100_000)),
        ]
        for sample in samples {
            let bytes = try sample.encoded()
            #expect(try Envelope(decoding: bytes) == sample)
            for cut in [0, 1, 3, bytes.readableBytes / 2, bytes.readableBytes - 1] {
                var short = bytes
                short.moveWriterIndex(to: short.readerIndex + cut)
                #expect(throws: EnvelopeError.self) { try Envelope(decoding: short) }
            }
            var long = bytes
            long.writeInteger(UInt8(0))
            #expect(throws: EnvelopeError.self) { try Envelope(decoding: long) }
        }
        var wrongVersion = try samples[0].encoded()
        wrongVersion.setInteger(UInt8(9), at: 2)
        #expect(throws: EnvelopeError.unsupportedVersion(9)) { try Envelope(decoding: wrongVersion) }
        // A count that claims more fds than there are bytes.
        var lying = ByteBuffer(bytes: [67, 87, 1, 1, 1, 0, 1, 97] + [UInt8](repeating: 0, count: 16) + [255, 255, 255, 255])
        #expect(throws: EnvelopeError.truncated) { try Envelope(decoding: lying) }
        lying.clear()
    }

    /// Version 2 carries the message's sequence; version 1 (no sequence)
    /// is still read, as "no id".
    @Test func envelopesCarryAnIdAndVersionOneIsStillRead() throws {
        let envelope = Envelope(target: .user("u"), kind: .text, originNode: "n", originEpoch: 7, sequence: 42,
                                payload: ByteBuffer(string: "hi"))
        let decoded = try Envelope(decoding: envelope.encoded())
        #expect(decoded.id == MessageID(originNode: "n", originEpoch: 7, sequence: 42))
        // The same envelope as a version 1 node writes it: no sequence field.
        var v1 = ByteBuffer(bytes: [67, 87, 1, 2, 1, 0, 1, 110, 0, 0, 0, 0, 0, 0, 0, 7, 0, 1, 117, 0, 0, 0, 2])
        v1.writeString("hi")
        let old = try Envelope(decoding: v1)
        #expect(old.sequence == 0 && old.id == nil)
        #expect(old.target == .user("u") && old.originEpoch == 7 && String(buffer: old.payload) == "hi")
        // A version 2 envelope cut inside the sequence is truncated, not misread.
        var cut = try envelope.encoded()
        cut.moveWriterIndex(to: cut.readerIndex + 20)
        #expect(throws: EnvelopeError.truncated) { try Envelope(decoding: cut) }
    }

    @Test func aMessageSequenceNeverGivesZeroOrRepeats() {
        let sequence = MessageSequence()
        let values = (0..<1_000).map { _ in sequence.next() }
        #expect(!values.contains(0))
        #expect(Set(values).count == 1_000)
    }

    /// Second copies are refused while their id is among the last
    /// `capacity`; memory stays at `capacity` ids.
    @Test func recentMessageIdsDropSecondCopiesWithinTheirWindow() {
        var recent = RecentMessageIDs(capacity: 4)
        func id(_ sequence: UInt64, _ node: String = "a") -> MessageID {
            MessageID(originNode: node, originEpoch: 1, sequence: sequence)
        }
        var accepted: [Bool] = []
        for next in [id(1), id(2), id(1), id(1, "b"), id(3), id(4)] { accepted.append(recent.insert(next)) }
        // The second copy of a's 1 is refused; b's 1 is another message.
        #expect(accepted == [true, true, false, true, true, true])
        #expect(recent.count == 4)
        // a's 1 was the oldest: forgotten, so a very late copy passes; 4 is still known.
        let lateCopy = recent.insert(id(1))
        let recentCopy = recent.insert(id(4))
        #expect(lateCopy && !recentCopy)
        for sequence in 5..<10_000 { _ = recent.insert(id(UInt64(sequence))) }
        #expect(recent.count == 4)
    }

    @Test func keyPatternsFollowTheSeed() {
        let keys = ClusterKeys(ClusterConfiguration(serverID: "s", namespace: "ns"))
        #expect(keys.user("42") == "ns:user:relate:fd:42")
        #expect(keys.fd(DistributedFD(node: "s", epoch: 1, fd: 2)) == "ns:fd:relate:user:s#0000000000000001#2")
        #expect(ClusterKeys.fill("a:%s:b:%s", "x") == "a:x:b:x")
    }
}

@Suite("Cluster node start-up failures", .timeLimit(.minutes(5)))
struct ClusterStartupTests {
    @Test func aNodeWhosePortIsTakenFailsInsteadOfRunningDeaf() async throws {
        try await withRedisServer { redis in
            let first = try TestCluster.makeNode("a", redis: redis)
            let harness = ServiceGroupHarness(first)
            try await harness.start()
            let port = try await first.waitUntilListening()
            var configuration = ClusterConfiguration(redisURL: .init(redis.url), serverID: "b", namespace: "test",
                                                     webSocket: .init(port: port))
            configuration.heartbeatInterval = .milliseconds(100)
            let second = try ClusterNode(configuration: configuration)
            await #expect(throws: (any Error).self) {
                try await within(.seconds(10), "the node to fail") { try await second.run() }
            }
            await #expect(throws: (any Error).self) { try await second.waitUntilListening() }
            try await harness.shutdownGracefully()
        }
    }
}

@Suite("Configuration from the environment", .timeLimit(.minutes(2)))
struct ConfigurationEnvironmentTests {
    @Test func theSeedsVariablesAreReadOnlyWhenAsked() {
        let environment = ["DISTRIBUTE_SERVER_ID": "server7", "LOCAL_PUSH_PROCESS_NUM": "3",
                           "LOCAL_PUSH_PROCESS_CONCURRENT_LIMIT": "20", "REDIS_URL": "redis://10.0.0.1:6380"]
        let configured = ClusterConfiguration.fromEnvironment(environment)
        #expect(configured.serverID == "server7")
        #expect(configured.queue.consumers == 3 && configured.queue.concurrency == 20)
        #expect(configured.redis.url == "redis://10.0.0.1:6380")
        let plain = ClusterConfiguration.fromEnvironment([:])
        #expect(plain.serverID.hasPrefix("node-") && plain.queue.consumers == 1 && plain.queue.concurrency == 10)
        #expect(ClusterConfiguration().serverID != ClusterConfiguration().serverID)  // random, never from the environment
    }
}
