@testable import ClusterWS
import Testing

@Suite("Redis configuration", .timeLimit(.minutes(2)))
struct RedisConfigurationTests {
    @Test func parsesFullURL() throws {
        let configuration = try RedisConfiguration(url: "redis://app:s%40cret@cache.local:6380/3")
        #expect(configuration.host == "cache.local")
        #expect(configuration.port == 6380)
        #expect(configuration.username == "app")
        #expect(configuration.password == "s@cret")
        #expect(configuration.database == 3)
    }

    @Test func defaultsPortAndDatabase() throws {
        let configuration = try RedisConfiguration(url: "redis://localhost")
        #expect(configuration.port == 6379)
        #expect(configuration.database == 0)
        #expect(configuration.username == nil)
        #expect(configuration.password == nil)
    }

    @Test func passwordOnlyForms() throws {
        #expect(try RedisConfiguration(url: "redis://:pw@h").password == "pw")
        #expect(try RedisConfiguration(url: "redis://:pw@h").username == nil)
        #expect(try RedisConfiguration(url: "redis://pw@h").password == "pw")
    }

    @Test func ipv6Host() throws {
        let configuration = try RedisConfiguration(url: "redis://[::1]:7000/1")
        #expect(configuration.host == "::1")
        #expect(configuration.port == 7000)
        #expect(configuration.address == "[::1]:7000")
    }

    @Test(arguments: [
        "http://localhost", "redis://", "redis://h:0", "redis://h:70000", "redis://h:port",
        "redis://h/-1", "redis://h/db", "redis://[::1", "redis://u:%zz@h",
    ])
    func rejectsMalformedURLs(url: String) {
        #expect(throws: RedisError.self) { try RedisConfiguration(url: url) }
    }

    @Test func backoffGrowsAndIsCapped() {
        let backoff = RedisConfiguration.Backoff(initial: .milliseconds(10), maximum: .milliseconds(100), multiplier: 2, jitter: 0)
        #expect(backoff.delay(attempt: 0) == .milliseconds(10))
        #expect(backoff.delay(attempt: 1) == .milliseconds(20))
        #expect(backoff.delay(attempt: 3) == .milliseconds(80))
        #expect(backoff.delay(attempt: 4) == .milliseconds(100))
        #expect(backoff.delay(attempt: 1_000) == .milliseconds(100))
        let jittered = RedisConfiguration.Backoff(initial: .seconds(1), maximum: .seconds(1), jitter: 0.5)
        for _ in 0..<100 {
            let delay = jittered.delay(attempt: 0)
            #expect(delay >= .milliseconds(500) && delay <= .seconds(1))
        }
    }
}

@Suite("Redis Cluster URLs", .timeLimit(.minutes(5)))
struct RedisClusterURLTests {
    @Test func seedsUserAndPasswordAreParsed() throws {
        let configuration = try RedisConfiguration(url: "redis+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7002")
        #expect(configuration.isCluster)
        #expect(configuration.clusterSeeds == [.init(host: "10.0.0.1", port: 7000), .init(host: "10.0.0.2", port: 6379),
                                               .init(host: "::1", port: 7002)])
        #expect(configuration.username == "app" && configuration.password == "s@cret")
        #expect(configuration.node(.init(host: "10.0.0.9", port: 7009)).address == "10.0.0.9:7009")
        #expect(!configuration.node(.init(host: "10.0.0.9", port: 7009)).isCluster)
        #expect(try !RedisConfiguration(url: "redis://h:1").isCluster)
    }

    @Test(arguments: ["redis+cluster://", "redis+cluster://h:1,", "redis+cluster://h:1,h:x", "redis+cluster://h:1/2", "rediss://h"])
    func malformedClusterURLsAreRejected(url: String) {
        #expect(throws: RedisError.self) { try RedisConfiguration(url: url) }
    }
}
