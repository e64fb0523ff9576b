@testable import ClusterWS
import NIOCore
import Synchronization
import Testing

@Suite("The subscriber's message buffer", .timeLimit(.minutes(2)))
struct PubSubBufferTests {
    private func message(_ index: Int) -> RedisPubSubMessage {
        RedisPubSubMessage(channel: "c", payload: ByteBuffer(string: "m\(index)"))
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
        try await eventually("the consumer to park") { buffer.hasWaiter }
        buffer.append(message(0))
        #expect(await waiting.value == 1)

        let cancelled = Task { await buffer.nextBatch().count }
        try await eventually("the consumer to park again") { buffer.hasWaiter }
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

/// The router buffer's state machine, driven with plain values (an `Int` stands for the waiter).
@Suite("Router buffer state machine", .timeLimit(.minutes(2)))
struct RouterBufferStateTests {
    private func message(_ size: Int, _ tag: UInt8 = 0) -> RedisPubSubMessage {
        RedisPubSubMessage(channel: "c", payload: ByteBuffer(repeating: tag, count: size))
    }

    @Test func aWaitingConsumerIsWokenByTheNextMessageOnlyOnce() {
        var state = RouterBufferState<Int>(limits: .init(messages: 10, bytes: 1_000))
        guard case .empty = state.take(maximum: 10) else { Issue.record("not empty"); return }
        let result1 = state.wait(7)
        #expect(result1 == nil)  // parked
        guard case .wake(let waiter) = state.append(message(10)) else { Issue.record("no wake"); return }
        #expect(waiter == 7)
        guard case .queued = state.append(message(10)) else { Issue.record("woke twice"); return }
        guard case .batch(let batch) = state.take(maximum: 10) else { Issue.record("no batch"); return }
        #expect(batch.count == 2 && state.bytes == 0 && state.count == 0)
    }

    @Test func waitingWhenSomethingArrivedReturnsTheWaiterAtOnce() {
        var state = RouterBufferState<Int>(limits: .init())
        _ = state.append(message(1))
        let result2 = state.wait(3)
        #expect(result2 == 3)
        _ = state.take(maximum: 1)
        _ = state.finish()
        let result3 = state.wait(4)
        #expect(result3 == 4)  // finished: never park
    }

    @Test func countAndByteLimitsDropNewerMessages() {
        var state = RouterBufferState<Int>(limits: .init(messages: 3, bytes: 100))
        for _ in 0..<3 { _ = state.append(message(10)) }
        guard case .overflowed = state.append(message(10)) else { Issue.record("count limit"); return }
        _ = state.take(maximum: 100)
        _ = state.append(message(60))
        guard case .overflowed = state.append(message(60)) else { Issue.record("byte limit"); return }
        guard case .queued = state.append(message(40)) else { Issue.record("fits exactly"); return }
        #expect(state.dropped == 2 && state.bytes == 100)
        _ = state.take(maximum: 100)
        guard case .queued = state.append(message(500)) else { Issue.record("one big into an empty buffer"); return }
    }

    @Test func burstsKeepArrivalOrderAndRespectTheMaximum() {
        var state = RouterBufferState<Int>(limits: .init())
        for tag in 0..<5 { _ = state.append(message(1, UInt8(tag))) }
        guard case .batch(let first) = state.take(maximum: 3), case .batch(let rest) = state.take(maximum: 3) else {
            Issue.record("no batches"); return
        }
        #expect((first + rest).map { $0.payload.getInteger(at: 0, as: UInt8.self) } == [0, 1, 2, 3, 4])
        #expect(first.count == 3)
    }

    @Test func finishWakesTheConsumerAndLaterMessagesAreIgnored() {
        var state = RouterBufferState<Int>(limits: .init())
        _ = state.wait(9)
        let result4 = state.finish()
        #expect(result4 == 9)
        guard case .ignored = state.append(message(1)) else { Issue.record("accepted after finish"); return }
        guard case .finished = state.take(maximum: 1) else { Issue.record("not finished"); return }
        #expect(state.dropped == 1)
    }

    @Test func aCancelledWaitHandsTheWaiterBack() {
        var state = RouterBufferState<Int>(limits: .init())
        _ = state.wait(5)
        let result5 = state.cancelWait()
        #expect(result5 == 5)
        let result6 = state.cancelWait()
        #expect(result6 == nil)
    }
}
