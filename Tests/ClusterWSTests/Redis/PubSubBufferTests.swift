@testable import ClusterWS
import NIOCore
import Testing

@Suite("The subscriber's message buffer")
struct PubSubBufferTests {
    private func message(_ index: Int) -> RedisPubSubMessage {
        RedisPubSubMessage(channel: "c", pattern: nil, payload: ByteBuffer(string: "m\(index)"))
    }

    @Test func aBatchTakesEverythingWaitingInOrderAndTheLimitDropsAndCounts() async {
        let buffer = PubSubBuffer(limit: 3)
        for index in 0..<5 { buffer.append(message(index)) }
        #expect(buffer.dropped == 2)
        let batch = await buffer.nextBatch()
        #expect(batch.map { String(buffer: $0.payload) } == ["m0", "m1", "m2"])
        buffer.append(message(5))
        buffer.finish()
        buffer.append(message(6))  // after the end: dropped
        #expect(await buffer.nextBatch().map { String(buffer: $0.payload) } == ["m5"])
        #expect(await buffer.nextBatch().isEmpty)
        #expect(buffer.dropped == 3)
    }

    @Test func aWaitingConsumerIsWokenByAMessageAndByCancellation() async throws {
        let buffer = PubSubBuffer(limit: 10)
        let waiting = Task { await buffer.nextBatch().count }
        try await Task.sleep(for: .milliseconds(50))
        buffer.append(message(0))
        #expect(await waiting.value == 1)

        let cancelled = Task { await buffer.nextBatch().count }
        try await Task.sleep(for: .milliseconds(50))
        cancelled.cancel()
        #expect(await cancelled.value == 0)
    }

    @Test func iteratorsMadeOneAfterAnotherLoseNothing() async {
        let buffer = PubSubBuffer(limit: 10)
        let messages = PubSubMessages(buffer: buffer)
        for index in 0..<4 { buffer.append(message(index)) }
        var seen: [String] = []
        for _ in 0..<4 {
            var iterator = messages.makeAsyncIterator()
            if let next = await iterator.next() { seen.append(String(buffer: next.payload)) }
        }
        #expect(seen == ["m0", "m1", "m2", "m3"])
    }
}
