@testable import ClusterWS
import NIOCore
import NIOWebSocket
import Testing

/// The connection's protocol state, driven with frames, ticks and a clock
/// the test controls: no socket, no waiting.
@Suite("WebSocket connection state machine", .timeLimit(.minutes(2)))
struct WebSocketStateMachineTests {
    private let key = WebSocketMaskingKey([1, 2, 3, 4] as [UInt8])!
    private let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    private func frame(_ opcode: WebSocketOpcode, _ bytes: [UInt8], fin: Bool = true, masked: Bool = true) -> WebSocketFrame {
        var data = ByteBuffer(bytes: bytes)
        if masked { data.webSocketMask(key) }
        return WebSocketFrame(fin: fin, opcode: opcode, maskKey: masked ? key : nil, data: data)
    }

    private func text(_ string: String, fin: Bool = true) -> WebSocketFrame { frame(.text, Array(string.utf8), fin: fin) }

    @Test func fragmentsAreJoinedAndPingsBetweenThemAnswered() {
        var machine = WebSocketStateMachine(limits: .init(maxMessageSize: 100), now: start)
        let step1 = machine.receive(text("hel", fin: false), now: start)
        #expect(step1 == .none)
        let step2 = machine.receive(frame(.ping, [7]), now: start)
        #expect(step2 == .pong(ByteBuffer(bytes: [7])))
        let step3 = machine.receive(frame(.continuation, Array("lo".utf8)), now: start)
        #expect(step3 == .deliver(.text("hello")))
    }

    @Test func theMessageRateCountsMessagesAndControlFramesAndRefillsWithTime() {
        var machine = WebSocketStateMachine(limits: .init(maxMessageSize: 100, maxMessagesPerSecond: 2), now: start)
        // A bucket of 2 × 2: four messages pass at once, a ping is the fifth.
        for _ in 0..<4 { let step4 = machine.receive(text("x"), now: start); #expect(step4 == .deliver(.text("x"))) }
        let step5 = machine.receive(frame(.ping, []), now: start)
        #expect(step5 == .sendClose(.policyViolation, reason: "rate limit", thenCloseTCP: true))
        #expect(machine.closeCause == .rateLimited)
        var later = WebSocketStateMachine(limits: .init(maxMessageSize: 100, maxMessagesPerSecond: 2), now: start)
        for _ in 0..<4 { _ = later.receive(text("x"), now: start) }
        // One second later, two more tokens.
        let second = start + .seconds(1)
        let step6 = later.receive(text("y"), now: second)
        #expect(step6 == .deliver(.text("y")))
        let step7 = later.receive(frame(.pong, []), now: second)
        #expect(step7 == .none)  // an unsolicited pong takes the last token
        let step8 = later.receive(frame(.pong, []), now: second)
        #expect(step8 == .sendClose(.policyViolation, reason: "rate limit", thenCloseTCP: true))
    }

    @Test func theByteRateCountsEveryFrame() {
        var machine = WebSocketStateMachine(limits: .init(maxMessageSize: 10_000, maxBytesPerSecond: 1_000), now: start)
        let step9 = machine.receive(frame(.binary, [UInt8](repeating: 0, count: 1_500)), now: start)
        #expect(step9 != .none)
        let action = machine.receive(frame(.binary, [UInt8](repeating: 0, count: 600)), now: start)
        #expect(action == .sendClose(.policyViolation, reason: "byte rate limit", thenCloseTCP: true))
        #expect(machine.closeCause == .byteRateLimited)
    }

    @Test func keepalivePingsThenFailsASilentPeer() {
        let limits = WebSocketStateMachine.Limits(maxMessageSize: 100, keepalive: (.seconds(30), .seconds(10)))
        var silent = WebSocketStateMachine(limits: limits, now: start)
        #expect(silent.firstKeepaliveTick == .seconds(30))
        let step10 = silent.keepaliveTick()
        #expect(step10 == .ping(next: .seconds(10)))
        let step11 = silent.keepaliveTick()
        #expect(step11 == .fail(.sendClose(.policyViolation, reason: "keepalive timeout", thenCloseTCP: true)))
        #expect(silent.closeCause == .keepaliveTimeout)
        let step12 = silent.keepaliveTick()
        #expect(step12 == .stop)

        var alive = WebSocketStateMachine(limits: limits, now: start)
        _ = alive.keepaliveTick()
        _ = alive.receive(frame(.pong, []), now: start)  // any frame shows it is alive
        let step13 = alive.keepaliveTick()
        #expect(step13 == .wait(next: .seconds(20)))
        let step14 = alive.keepaliveTick()
        #expect(step14 == .ping(next: .seconds(10)))
    }

    @Test func closeCausesTellTheReasonsApart() {
        var peer = WebSocketStateMachine(maxMessageSize: 100)
        let step15 = peer.receive(frame(.connectionClose, [0x03, 0xE8]))
        #expect(step15 == .sendClose(.normalClosure, reason: "", thenCloseTCP: true))
        #expect(peer.closeCause == .peerClosed && peer.closeCode == .normalClosure)

        var unmasked = WebSocketStateMachine(maxMessageSize: 100)
        _ = unmasked.receive(frame(.text, [0x41], masked: false))
        #expect(unmasked.closeCause == .protocolError && unmasked.closeCode == .protocolError)

        var big = WebSocketStateMachine(maxMessageSize: 4)
        _ = big.receive(text("too long"))
        #expect(big.closeCause == .messageTooBig)

        var server = WebSocketStateMachine(maxMessageSize: 100)
        let step16 = server.startClose(.goingAway)
        #expect(step16)
        let step17 = server.startClose(.goingAway)
        #expect(!step17)
        let step18 = server.receive(text("late"))
        #expect(step18 == .none)  // data after our close frame: ignored
        let step19 = server.receive(frame(.connectionClose, [0x03, 0xE9]))
        #expect(step19 == .closeTCP)
        #expect(server.closeCause == .closedByServer)

        var dropped = WebSocketStateMachine(maxMessageSize: 100)
        dropped.closed()
        #expect(dropped.closeCause == .connectionLost && dropped.closeCode == .abnormalClosure)
    }

    @Test func decoderErrorsGetTheirCodes() {
        var tooLong = WebSocketStateMachine(maxMessageSize: 100)
        let step20 = tooLong.decoderFailed(.invalidFrameLength)
        #expect(step20 == .sendClose(.messageTooBig, reason: "frame too big", thenCloseTCP: true))
        var control = WebSocketStateMachine(maxMessageSize: 100)
        let step21 = control.decoderFailed(.fragmentedControlFrame)
        #expect(step21 == .sendClose(.protocolError, reason: "bad control frame", thenCloseTCP: true))
        var other = WebSocketStateMachine(maxMessageSize: 100)
        let step22 = other.decoderFailed(nil)
        #expect(step22 == .closeTCP)
    }
}
