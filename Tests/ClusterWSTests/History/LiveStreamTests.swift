@testable import ClusterWS
import NIOCore
import Testing

/// The live ordering of one stream, as a value: what goes out for each
/// arrival, in whatever order and however often messages arrive.
@Suite("A live stream puts messages in offset order, once each")
struct LiveStreamTests {
    static let epoch = "e1"

    static func at(_ offset: UInt64, _ epoch: String = LiveStreamTests.epoch) -> StreamPosition {
        StreamPosition(offset: offset, epoch: epoch)
    }

    static func message(_ offset: UInt64) -> WebSocketMessage {
        WebSocketMessage(kind: .text, data: ByteBuffer(string: "m\(offset)"))
    }

    /// Feeds `offsets` in that order; returns the offsets sent, in order.
    static func feed(_ live: inout LiveStream, _ offsets: [UInt64]) -> [UInt64] {
        offsets.flatMap { live.accept(message($0), at: at($0)).map(\.0.offset) }
    }

    @Test func inOrderGoesStraightThrough() {
        var live = LiveStream(after: Self.at(0))
        #expect(Self.feed(&live, [1, 2, 3]) == [1, 2, 3])
        #expect(live.gap == nil && live.last == Self.at(3) && live.heldBytes == 0)
    }

    @Test func secondCopiesAndOldOffsetsAreDropped() {
        var live = LiveStream(after: Self.at(5))
        #expect(Self.feed(&live, [3, 5, 6, 6, 4, 7, 7]) == [6, 7])
    }

    @Test func outOfOrderIsHeldUntilTheGapFills() {
        var live = LiveStream(after: Self.at(0))
        #expect(Self.feed(&live, [3, 2]).isEmpty)
        #expect(live.gap == 1...1)
        #expect(live.heldBytes == 4)
        #expect(Self.feed(&live, [5]).isEmpty)
        #expect(Self.feed(&live, [1]) == [1, 2, 3])
        #expect(live.gap == 4...4)
        #expect(Self.feed(&live, [3, 4]) == [4, 5])
        #expect(live.gap == nil && live.heldBytes == 0)
    }

    @Test func aGapIsFilledFromHistory() {
        var live = LiveStream(after: Self.at(10))
        #expect(Self.feed(&live, [14, 13]).isEmpty)
        #expect(live.gap == 11...12)
        // History answers with 11 and 12 (and may overlap what is held or sent).
        let sent = live.fill([(10, Self.message(10)), (11, Self.message(11)), (12, Self.message(12)), (13, Self.message(13))])
        #expect(sent.map(\.0.offset) == [11, 12, 13, 14])
        #expect(sent.map { String(buffer: $0.1.data) } == ["m11", "m12", "m13", "m14"])
        #expect(live.gap == nil && live.last == Self.at(14))
    }

    @Test func aGapHistoryNoLongerHasIsSkipped() {
        var live = LiveStream(after: Self.at(1))
        #expect(Self.feed(&live, [5, 4, 7]).isEmpty)
        #expect(live.skipGap().map(\.0.offset) == [4, 5])
        #expect(live.gap == 6...6)
        #expect(live.skipGap().map(\.0.offset) == [7])
        #expect(live.skipGap().isEmpty && live.gap == nil)
    }

    @Test func aNewEpochFlushesWhatWasHeldAndStartsOver() {
        var live = LiveStream(after: Self.at(1))
        #expect(Self.feed(&live, [3]).isEmpty)
        let sent = live.accept(Self.message(1), at: Self.at(1, "e2"))
        #expect(sent.map(\.0) == [Self.at(3), Self.at(1, "e2")])
        #expect(live.gap == nil && live.last == Self.at(1, "e2") && live.heldBytes == 0)
        #expect(live.accept(Self.message(2), at: Self.at(2, "e2")).map(\.0) == [Self.at(2, "e2")])
    }

    /// After a subscriber reconnect the node reads the stream's position:
    /// messages published meanwhile make a gap even when nothing is held.
    @Test func aLearnedPositionMakesAGap() {
        var live = LiveStream(after: Self.at(3))
        live.learn(Self.at(2))
        #expect(live.gap == nil)
        live.learn(Self.at(6, "other"))
        #expect(live.gap == nil)
        live.learn(Self.at(6))
        #expect(live.gap == 4...6)
        #expect(live.fill([(4, Self.message(4)), (5, Self.message(5))]).map(\.0.offset) == [4, 5])
        #expect(live.gap == 6...6)
        #expect(Self.feed(&live, [6, 7]) == [6, 7])
        #expect(live.gap == nil)
        live.learn(Self.at(9))
        #expect(live.skipGap().isEmpty && live.last == Self.at(9) && live.gap == nil)
    }

    /// Any arrival order of 1…n, with copies, comes out as exactly 1…n.
    @Test func anyShuffleWithCopiesComesOutInOrder() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let n = UInt64.random(in: 1...40, using: &generator)
            var arrivals = Array(1...n)
            arrivals += arrivals.filter { _ in Bool.random(using: &generator) }
            arrivals.shuffle(using: &generator)
            var live = LiveStream(after: Self.at(0))
            #expect(Self.feed(&live, arrivals) == Array(1...n), "\(arrivals)")
            #expect(live.gap == nil && live.heldBytes == 0)
        }
    }
}
