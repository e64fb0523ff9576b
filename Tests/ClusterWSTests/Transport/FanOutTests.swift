@testable import ClusterWS
import Dispatch
import NIOCore
import NIOPosix
import Synchronization
import Testing

@Suite("Broadcast fan-out and slow consumers", .timeLimit(.minutes(2)))
struct FanOutTests {
    @Test func broadcastReachesEveryConnectionInOrder() async throws {
        try await withWebSocketServer { server, port in
            let clients = try await (0..<40).asyncMap { _ in try await connectedClient(port: port) }
            #expect(server.connectionCount == 40)
            server.broadcast([.text("one"), .binary(ByteBuffer(bytes: [2])), .text("three")])
            server.broadcast(.text("four"))
            for client in clients {
                var texts: [String] = []
                for _ in 0..<4 { texts.append(try await client.readFrame().text) }
                #expect(texts == ["one", "\u{2}", "three", "four"])
            }
            let skip: Set<UInt64> = [1, 2]  // connection ids are 1-based in order of upgrade
            server.broadcast(.text("not you"), except: skip)
            #expect(try await clients[2].readFrame().text == "not you")
            for client in clients { client.close() }
        }
    }

    @Test func aClientThatStopsReadingIsClosedAndOthersKeepReceiving() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.maxOutboundBufferBytes = 256 * 1024
        let closes = Recorder<WebSocketCloseCode>()
        try await withWebSocketServer(configuration, setup: { server in
            server.addRoute("/slow") { socket in closes.append(await socket.closed()) }
        }) { server, port in
            let stalled = try await RawClient.connect(port: port, receiveBuffer: 4096)
            _ = try await stalled.upgrade(path: "/slow")
            stalled.channel.setOption(.autoRead, value: false).whenComplete { _ in }  // reads nothing from now on
            let healthy = try await connectedClient(port: port)
            // 64 KiB frames until the stalled client is dropped: past its buffers (the
            // server's send buffer autotunes up to 4 MB) and the 256 KiB bound; at most
            // 128 MB. Lockstep with the healthy client, so it is never more than one frame behind.
            let chunk = WebSocketMessage.binary(ByteBuffer(repeating: 0x5A, count: 64 * 1024))
            var sent = 0
            while closes.all.isEmpty, sent < 2_000 {
                server.broadcast(chunk)
                let frame = try await healthy.readFrame()
                #expect(frame.payload.count == 64 * 1024, "frame \(sent)")
                sent += 1
            }
            await closes.wait(for: 1)
            #expect(closes.all == [.policyViolation])
            #expect(server.connectionCount == 1)
            healthy.close()
        }
    }

    /// An awaited broadcast returns at once while its loop has less than
    /// `fanOutPacingBytes` waiting to be flushed, and otherwise waits for the
    /// writes: a sender that awaits never meets the fan-out queue's drop limit,
    /// even on a starved loop, and every message arrives in order.
    @Test func awaitedBroadcastsArePacedNotDropped() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.fanOutQueueBytes = 2 << 20
        configuration.fanOutPacingBytes = 1 << 20
        configuration.maxOutboundBufferBytes = 64 << 20
        try await withOneLoopServer(configuration) { server, loop, port in
            let client = try await connectedClient(port: port)
            // Starve the loop: nothing is written until the test lets go.
            let blocked = DispatchSemaphore(value: 0)
            loop.execute { blocked.wait() }
            let returned = Atomic<Int>(0)
            let sender = Task {
                for index in 0..<20 {
                    await server.broadcastAndWait([.binary(ByteBuffer(repeating: UInt8(index), count: 256 * 1024))])
                    returned.add(1, ordering: .relaxed)
                }
            }
            // Four broadcasts of 256 KiB fit the 1 MiB budget; the fifth waits for the loop.
            try await eventually("the broadcasts under the budget to return") { returned.load(ordering: .relaxed) >= 4 }
            try await Task.sleep(for: .milliseconds(300))
            #expect(returned.load(ordering: .relaxed) == 4)
            #expect(server.fanOutDrops == 0)
            blocked.signal()
            for index in 0..<20 {
                let frame = try await client.readFrame()
                #expect(frame.payload.count == 256 * 1024 && frame.payload[0] == UInt8(index))
            }
            await sender.value
            #expect(returned.load(ordering: .relaxed) == 20 && server.fanOutDrops == 0)
            client.close()
        }
    }

    /// A broadcast's flushes run in slices: work queued on the loop while a
    /// fan-out is flushed (a Redis reply, another connection's frame) runs
    /// between slices, not after the last connection. Here the job queued
    /// right behind a broadcast to many connections runs before the fan-out's
    /// last flush, and every client still gets the broadcasts in order.
    @Test func aBroadcastIsFlushedInSlicesAndOtherWorkRunsBetween() async throws {
        try await withOneLoopServer { server, loop, port in
            let clients = try await (0..<400).asyncMap { _ in try await connectedClient(port: port, sync: false) }
            try await eventually("every connection to open") { server.connectionCount == 400 }
            var slicesSeen = 0
            for round in 0..<10 {
                // 16 KiB frames to 400 connections: several milliseconds of writes on one loop.
                let payload = ByteBuffer(repeating: UInt8(round), count: 16 * 1024)
                let ranBefore = try await loop.submit { () -> EventLoopFuture<Bool> in
                    server.broadcast(.binary(payload))
                    let share = server.connections.loop(of: loop)
                    // The drain is queued now; this job is queued behind it.
                    return loop.submit { share.flushPass.isRunning }
                }.get().get()
                if ranBefore { slicesSeen += 1 }
            }
            print("fan-out slices: a job queued behind a 400-connection broadcast ran mid-pass in \(slicesSeen) of 10 rounds")
            #expect(slicesSeen > 0)
            for client in clients {
                for round in 0..<10 {
                    let frame = try await client.readFrame()
                    #expect(frame.payload.count == 16 * 1024 && frame.payload[0] == UInt8(round))
                }
                client.close()
            }
        }
    }
}
