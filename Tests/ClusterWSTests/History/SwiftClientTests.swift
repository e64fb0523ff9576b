@testable import ClusterWS
import ClusterWSClient
import Testing

/// `ClusterWSClient` against real nodes: it reconnects by itself to the next
/// node of its list and resumes from the last position it saw.
@Suite("The Swift client library", .serialized, .timeLimit(.minutes(2)))
struct SwiftClientTests {
    @Test func itReconnectsToAnotherNodeAndRecoversWhatItMissed() async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: .pubSub, backend: .single),
                              configure: HistoryRecoveryTests.historyOn) { cluster in
            let portA = try await cluster["a"].waitUntilListening()
            let portB = try await cluster["b"].waitUntilListening()
            let client = ClusterWSClient(urls: ["ws://127.0.0.1:\(portB)/ws?uid=swift", "ws://127.0.0.1:\(portA)/ws?uid=swift"],
                                         backoff: .init(initial: .milliseconds(50), maximum: .milliseconds(200)))
            let running = Task { await client.run() }
            defer {
                client.close()
                running.cancel()
            }
            var messages = client.messages.makeAsyncIterator()
            var states = client.states.makeAsyncIterator()
            /// The next message that has a stream position (the test nodes greet every connection with "ready <fd>").
            /// (No timeout of its own: `withCluster` bounds the whole test to 60 s.)
            func nextPositioned() async throws -> ClusterWSClient.Message {
                while let message = await messages.next() {
                    if message.position != nil { return message }
                }
                throw UpgradeFailed(status: 0, body: "the client stopped")
            }
            try await eventually("the client to be bound on node b") { try await cluster["a"].relations.isOnline(uid: "swift") }
            for index in 1...10 { try await cluster["a"].sender.send(uid: "swift", .text("m\(index)")) }
            for index in 1...10 {
                let message = try await nextPositioned()
                #expect(message.text == "m\(index)" && message.offset == UInt64(index) && message.stream == "user:swift")
            }
            client.dropConnection()
            for index in 11...210 { try await cluster["b"].sender.send(uid: "swift", .text("m\(index)")) }
            var received: [String] = []
            var offsets: [UInt64] = []
            while received.count < 200 {
                let message = try await nextPositioned()
                received.append(message.text ?? "")
                offsets.append(message.offset ?? 0)
            }
            #expect(received == (11...210).map { "m\($0)" })
            #expect(offsets == (11...210).map { UInt64($0) })
            // The state stream told the story: connected to b, disconnected, connected to a, recovered.
            var seen: [ClusterWSClient.State] = []
            while !seen.contains(where: { if case .recovery = $0 { true } else { false } }) {
                guard let state = await states.next() else { break }
                seen.append(state)
            }
            #expect(seen.contains(.connected(url: "ws://127.0.0.1:\(portB)/ws?uid=swift")))
            #expect(seen.contains(.connected(url: "ws://127.0.0.1:\(portA)/ws?uid=swift")))
            guard case .recovery(let recovery) = seen.last else {
                Issue.record("no recovery state: \(seen)")
                return
            }
            #expect(recovery.recovered && recovery.stream == "user:swift" && recovery.reason == nil)
            #expect(client.positions["user:swift"]?.offset == 210)
        }
    }

    @Test func backoffIsCappedAndJittered() {
        let backoff = ClusterWSClient.Backoff(initial: .milliseconds(100), maximum: .seconds(2), jitter: 0.5)
        for attempt in 0..<30 {
            let delay = backoff.delay(attempt: attempt)
            let full = min(Duration.milliseconds(100) * Double(1 << min(attempt, 20)), .seconds(2))
            #expect(delay <= full && delay >= full * 0.5)
        }
    }
}
