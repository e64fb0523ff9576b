@testable import ClusterWS
import NIOCore
import Synchronization
import Testing

/// The callback form of a connection's messages (`handleMessages`): every
/// message once, in order, with the same backpressure as a `for await` loop,
/// and no task left behind while the connection is idle.
@Suite("Messages handed to a callback instead of a loop", .timeLimit(.minutes(1)))
struct MessageHandlerTests {
    /// Messages sent before the handler is installed come first; a slow
    /// handler makes the server stop reading (small inbound limit) and resume,
    /// and nothing is lost or reordered.
    @Test func everyMessageOnceInOrderThroughASlowHandler() async throws {
        var configuration = WebSocketServerConfiguration.testing
        configuration.inboundBufferLimit = 4
        let seen = Recorder<String>()
        let handlersRunning = Atomic<Int>(0)
        let overlapped = Mutex(false)
        let installed = Recorder<Bool>()
        try await withWebSocketServer(configuration, setup: { server in
            server.addRoute("/cb") { socket in
                // Let the client's first messages arrive before the handler exists.
                try? await Task.sleep(for: .milliseconds(100))
                socket.handleMessages { message in
                    if handlersRunning.add(1, ordering: .relaxed).newValue > 1 { overlapped.withLock { $0 = true } }
                    if seen.all.count % 16 == 0 { try? await Task.sleep(for: .milliseconds(5)) }
                    seen.append(String(buffer: message.data))
                    handlersRunning.subtract(1, ordering: .relaxed)
                    try? await socket.send(.text("ack " + String(buffer: message.data)))
                }
                installed.append(true)
            }
        }) { server, port in
            let client = try await RawClient.connect(port: port)
            _ = try await client.upgrade(path: "/cb")
            for index in 0..<200 { try await client.send(Wire.frame(Wire.text, "m\(index)")) }
            for index in 0..<200 {
                #expect(try await client.readFrame().text == "ack m\(index)")
            }
            #expect(seen.all == (0..<200).map { "m\($0)" })
            #expect(!overlapped.withLock { $0 })
            #expect(installed.all == [true])
            // The handler fell behind: the socket was paused at the limit and resumed.
            #expect(server.counters.hits(.inboundBuffer) >= 1)
            client.close()
        }
    }

    /// On a cluster node: the relay written with `handleMessages` (onOpen
    /// returns at once) delivers to a user on the other node, in order.
    @Test func aClusterRelayWithACallback() async throws {
        try await withCluster(["a", "b"]) { cluster in
            let node = cluster["a"]
            let opened = Recorder<Bool>()
            node.webSocket("/relay", authenticate: { $0.queryParameter("uid") }) { socket in
                socket.handleMessages { message in
                    _ = try? await node.sender.send(uid: "bob", message)
                }
                opened.append(true)
            }
            let bob = try await ClusterClient.connect(cluster["b"], uid: "bob")
            let alice = try await RawClient.connect(port: try await node.waitUntilListening())
            _ = try await alice.upgrade(path: "/relay?uid=alice")
            for index in 0..<50 { try await alice.send(Wire.frame(Wire.text, "to bob \(index)")) }
            for index in 0..<50 { #expect(try await bob.next().text == "to bob \(index)") }
            #expect(opened.all == [true])
            alice.close()
        }
    }
}
