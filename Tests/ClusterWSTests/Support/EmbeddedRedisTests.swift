import EmbeddedRedis
import Testing

@Suite("Embedded redis-server", .timeLimit(.minutes(2)))
struct EmbeddedRedisTests {
    @Test(arguments: [false, true])
    func stopsAndRestartsOnTheSamePort(crash: Bool) async throws {
        let server = try await RedisServerProcess.start()
        defer { server.terminate() }
        let port = server.port
        try await within(.seconds(10), "stop") { await server.stop(crash: crash) }
        try await within(.seconds(10), "restart") { try await server.restart() }
        #expect(server.port == port)
        #expect(server.log.contains("Ready to accept connections"))
    }
}
