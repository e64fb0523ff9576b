@testable import ClusterWS
import NIOCore
import Synchronization
import Testing

@Suite("The subscriber's message buffer")
struct PubSubBufferTests {
    private func message(_ index: Int) -> RedisPubSubMessage {
        RedisPubSubMessage(channel: "c", pattern: nil, payload: ByteBuffer(string: "m\(index)"))
    }

    @Test func aBatchTakesEverythingWaitingInOrderAndTheLimitDropsAndCounts() async {
        let buffer = PubSubBuffer(limits: .init(messages: 3))
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

    @Test func theByteBudgetDropsAndReportsOverflowButLetsOneBigMessageIntoAnEmptyBuffer() async {
        let overflows = Mutex(0)
        let buffer = PubSubBuffer(limits: .init(messages: 100, bytes: 1_000)) { count in overflows.withLock { $0 += count } }
        let big = RedisPubSubMessage(channel: "c", payload: ByteBuffer(repeating: 1, count: 5_000))
        buffer.append(big)  // alone: passes, or a message over the budget could never arrive
        buffer.append(RedisPubSubMessage(channel: "c", payload: ByteBuffer(repeating: 2, count: 10)))  // over: dropped
        #expect(buffer.dropped == 1)
        #expect(overflows.withLock { $0 } == 1)
        #expect(await buffer.nextBatch().map(\.payload.readableBytes) == [5_000])
        for index in 0..<200 { buffer.append(RedisPubSubMessage(channel: "c", payload: ByteBuffer(repeating: UInt8(index % 256), count: 100))) }
        #expect(buffer.dropped == 1 + 190)  // 10 × 100 bytes fit
        #expect(overflows.withLock { $0 } == 191)
        #expect(await buffer.nextBatch().count == 10)
    }

    @Test func aWaitingConsumerIsWokenByAMessageAndByCancellation() async throws {
        let buffer = PubSubBuffer(limits: .init(messages: 10))
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
        let buffer = PubSubBuffer(limits: .init(messages: 10))
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
