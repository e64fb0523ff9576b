@testable import ClusterWS
import EmbeddedRedis
import Foundation
import NIOCore
import Testing

/// Runs `scripts/publish.py` (the documented wire format, in Python) with `arguments`; its output.
func runPublishScript(_ arguments: [String]) async throws -> String {
    let script = URL(fileURLWithPath: #filePath)  // Tests/ClusterWSTests/Presence/WireFormatTests.swift
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("scripts/publish.py")
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", script.path] + arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    let data = try await within(.seconds(20), "publish.py") {
        await Task.detached { output.fileHandleForReading.readDataToEndOfFile() }.value
    }
    process.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    guard process.terminationStatus == 0 else { throw UpgradeFailed(status: Int(process.terminationStatus), body: text) }
    return text
}

/// The Redis wire format, checked against an independent implementation:
/// a Python script that knows only the README's spec publishes with a plain
/// `PUBLISH`, and the nodes deliver; the Swift decoder reads its bytes.
@Suite("The Redis wire format: a backend publishes with plain PUBLISH", .serialized, .timeLimit(.minutes(2)))
struct WireFormatTests {
    @Test func aPythonBackendReachesUsersRoomsAndEveryone() async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: .pubSub, backend: .single)) { cluster in
            let alice = try await ClusterClient.connect(cluster["a"], uid: "alice")
            let bob = try await ClusterClient.connect(cluster["b"], uid: "bob")
            try await cluster["b"].join(bob.fd, room: "lobby")
            let port = "\(cluster.redis.port)"
            let common = ["--port", port, "--namespace", "test"]
            var output = try await runPublishScript(common + ["--uid", "alice", "--text", "hello from python ✓"])
            #expect(output.contains("1 node(s)"), "\(output)")
            #expect(try await alice.next().text == "hello from python ✓")
            _ = try await runPublishScript(common + ["--room", "lobby", "--binary-hex", "00ff10"])
            let binary = try await bob.next()
            #expect(binary.opcode == Wire.binary && binary.payload == [0x00, 0xff, 0x10])
            output = try await runPublishScript(common + ["--all", "--text", "everyone"])
            #expect(output.contains("2 node(s)"), "\(output)")
            #expect(try await alice.next().text == "everyone")
            #expect(try await bob.next().text == "everyone")
        }
    }

    /// What the script encodes is what the Swift decoder reads, field by field.
    @Test func theScriptsBytesDecodeAsTheSpecSays() async throws {
        try await withRedisServer { redis in
            let output = try await runPublishScript(["--port", "\(redis.port)", "--namespace", "x", "--uid", "carol",
                                                     "--text", "bytes", "--print-hex"])
            let hex = try #require(output.split(separator: "\n").first)
            var bytes: [UInt8] = []
            var index = hex.startIndex
            while index < hex.endIndex {
                let next = hex.index(index, offsetBy: 2)
                bytes.append(try #require(UInt8(hex[index..<next], radix: 16)))
                index = next
            }
            let envelope = try Envelope(decoding: ByteBuffer(bytes: bytes))
            #expect(envelope.target == .user("carol"))
            #expect(envelope.kind == .text && String(buffer: envelope.payload) == "bytes")
            #expect(envelope.originNode == "publisher" && envelope.sequence == 0 && envelope.history == nil)
        }
    }
}
