@testable import ClusterWS
import NIOCore
import NIOEmbedded
import Testing

/// The reconnect phases of a Redis link, driven with plain values (an `Int`
/// stands for a waiting caller) and an embedded channel.
@Suite("Redis link state machine", .timeLimit(.minutes(2)))
struct RedisLinkStateTests {
    private func connectedChannel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        return channel
    }

    @Test func aFirstConnectionReadiesTheLinkAndWakesWaiters() throws {
        var link = RedisLinkState<Int>()
        guard case .wait = link.readiness else { Issue.record("idle must wait"); return }
        _ = link.addWaiter(after: 0, 1)
        _ = link.addWaiter(after: 0, 2)
        let started = link.connectStarted()
        #expect(started)
        link.connected(try connectedChannel())
        guard case .wait = link.readiness else { Issue.record("first setup must not send"); return }
        let woken = link.prepared().sorted()
        #expect(woken == [1, 2])
        #expect(link.generation == 1 && link.isReady)
        guard case .send = link.readiness else { Issue.record("ready must send"); return }
    }

    @Test func failuresBackOffLongerAndRememberWhy() {
        var link = RedisLinkState<Int>()
        _ = link.connectStarted()
        let first = link.failed(.connectionRefused("x"))
        #expect(first == 0)
        guard case .backingOff(1, .connectionRefused) = link.phase else { Issue.record("\(link.phase)"); return }
        #expect(link.lastError == .connectionRefused("x"))
        _ = link.connectStarted()
        let second = link.failed(.connectTimeout("x"))
        #expect(second == 1)
        _ = link.connectStarted()
        guard case .connecting(2, .connectTimeout) = link.phase else { Issue.record("\(link.phase)"); return }
    }

    @Test func aLostConnectionReconnectsSoonAndOnlyNewerWaitersWakeOnTheNextOne() throws {
        var link = RedisLinkState<Int>()
        _ = link.connectStarted()
        link.connected(try connectedChannel())
        _ = link.prepared()
        _ = link.addWaiter(after: 1, 5)  // waits for a connection newer than the first
        let backoff = link.closed()
        #expect(backoff == 0)
        #expect(link.lastError == .notConnected && link.channel == nil)
        _ = link.connectStarted()
        link.connected(try connectedChannel())
        guard case .send = link.readiness else { Issue.record("a reconnect may send while preparing"); return }
        let woken = link.prepared()
        #expect(woken == [5])
        #expect(link.generation == 2)
        // A failure right after a loss backs off longer than the first retry did.
        _ = link.closed()
        _ = link.connectStarted()
        let next = link.failed(.connectionRefused("x"))
        #expect(next == 1)
    }

    @Test func aShutdownWhileConnectedDrainsAndFailsWaiters() throws {
        var link = RedisLinkState<Int>()
        _ = link.connectStarted()
        let channel = try connectedChannel()
        link.connected(channel)
        _ = link.prepared()
        _ = link.addWaiter(after: 1, 8)
        let (drain, failed) = link.shutdownRequested()
        #expect(drain === channel && failed == [8])
        guard case .fail(.shutdown) = link.readiness else { Issue.record("draining must refuse"); return }
        let restarted = link.connectStarted()
        #expect(!restarted)
        _ = link.closed()  // a close while draining changes nothing
        guard case .draining = link.phase else { Issue.record("\(link.phase)"); return }
        let (close, _) = link.stopped()
        #expect(close === channel)
        guard case .shutdown = link.phase else { Issue.record("\(link.phase)"); return }
    }

    @Test func aShutdownWhileDisconnectedStopsAtOnce() {
        var link = RedisLinkState<Int>()
        _ = link.connectStarted()
        _ = link.failed(.connectionRefused("x"))
        let (drain, _) = link.shutdownRequested()
        #expect(drain == nil)
        let restarted = link.connectStarted()
        #expect(!restarted && link.isShuttingDown)
    }

    @Test func aWaiterWhoseDeadlinePassedIsTakenBackOnce() {
        var link = RedisLinkState<Int>()
        let id = link.addWaiter(after: 0, 3)
        let first = link.removeWaiter(id)
        let second = link.removeWaiter(id)
        #expect(first == 3 && second == nil)
    }
}
