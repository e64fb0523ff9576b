import Benchmark
import ClusterWS
import NIOCore
import NIOEmbedded

// The per-message steps of a cross-node relay, without sockets or scheduling:
// what node a does with a message its application sends (envelope, PUBLISH
// command), and what node b does with what Redis pushes to it (RESP push →
// envelope → frame). `make bench-micro` checks them against Thresholds/
// (allocations exactly; wall clock within a wide band, machines differ).
//
// Each benchmark runs 1,000 operations per iteration (scalingFactor .kilo);
// the metrics marked * are per operation, the thresholds per iteration.
//
// EnvelopeEncode / EnvelopeDecode: a user envelope with a 64-byte payload.
// FrameEncode: a 64-byte text frame (header + payload, one buffer).
// SendingNodeStep: what node a does per relayed message after parsing it: the
//   envelope, written straight into its PUBLISH command.
// ReceivingNodeStep: what node b does per message Redis pushes: RESP bytes →
//   hiredis → the subscriber's sink → envelope → frame (through an
//   EmbeddedChannel, whose own cost is included).
let benchmarks: @Sendable () -> Void = {
    let payload = ByteBuffer(repeating: UInt8(ascii: "x"), count: 64)
    let message = WebSocketMessage(kind: .text, data: payload)
    let envelope = Envelope(target: .user("user-4711"), kind: .text, originNode: "node-a", originEpoch: 42,
                            sequence: 7, payload: payload)
    let encodedEnvelope = (try? envelope.encoded()) ?? ByteBuffer()
    let channel = "cws:{user-4711}:u"
    // What Redis writes to a subscriber for one published envelope.
    var push = ByteBuffer()
    push.writeString("*3\r\n$7\r\nmessage\r\n$\(channel.utf8.count)\r\n\(channel)\r\n$\(encodedEnvelope.readableBytes)\r\n")
    push.writeImmutableBuffer(encodedEnvelope)
    push.writeString("\r\n")

    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .nanoseconds,
        warmupIterations: 10,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 2_000,
        thresholds: [
            // Allocations are (nearly) deterministic: 0.1 more per operation fails.
            .mallocCountTotal: .init(absolute: [.p50: 100, .p90: 100]),
            // Time moves with the machine (CI's may be slower): only a 4× slowdown fails.
            .wallClock: .init(relative: [.p50: 300, .p90: 300]),
        ]
    )

    Benchmark("EnvelopeEncode") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(try? envelope.encoded()) }
    }

    Benchmark("EnvelopeDecode") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(try? Envelope(decoding: encodedEnvelope)) }
    }

    Benchmark("FrameEncode") { benchmark in
        let allocator = ByteBufferAllocator()
        for _ in benchmark.scaledIterations { blackHole(WebSocketFrameEncoding.frame(message, allocator: allocator)) }
    }

    Benchmark("SendingNodeStep") { benchmark in
        for _ in benchmark.scaledIterations {
            let outgoing = Envelope(target: .user("user-4711"), kind: .text, originNode: "node-a", originEpoch: 42,
                                    sequence: 7, payload: payload)
            guard (try? outgoing.validate()) != nil else { continue }
            blackHole(RedisCommand(publish: "PUBLISH", channel: channel, envelope: outgoing))
        }
    }

    Benchmark("ReceivingNodeStep") { benchmark in
        // A subscriber connection's decoder hands each message push to its sink (as in a node).
        let allocator = ByteBufferAllocator()
        let sink: @Sendable (RedisPubSubMessage) -> Void = { pushed in
            guard let decoded = try? Envelope(decoding: pushed.payload) else { return }
            blackHole(WebSocketFrameEncoding.frame(WebSocketMessage(kind: decoded.kind, data: decoded.payload),
                                                   allocator: allocator))
        }
        guard let decoder = HiredisReplyDecoder(pushSink: sink) else { return }
        let embedded = EmbeddedChannel()
        try? embedded.pipeline.syncOperations.addHandler(decoder)
        for _ in benchmark.scaledIterations { try? embedded.writeInbound(push) }
        _ = try? embedded.finish()
    }
}
