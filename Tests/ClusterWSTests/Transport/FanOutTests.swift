@testable import ClusterWS
import NIOCore
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
}
