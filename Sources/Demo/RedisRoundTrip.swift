import ClusterWS
import Logging
import NIOCore

/// PING, then publish `messages` messages and read them back through a subscriber.
enum RedisRoundTrip {
    static func run(url: String, messages: Int, logger: Logger) async throws {
        let configuration = try RedisConfiguration(url: url)
        let redis = RedisConnection(configuration: configuration, logger: logger)
        let subscriber = RedisSubscriber(configuration: configuration, logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await redis.run() }
            group.addTask { try await subscriber.run() }
            defer { group.cancelAll() }

            let clock = ContinuousClock()
            let start = clock.now
            let pong = try await redis.send(RedisCommand("PING"))
            print("PING -> \(pong.string ?? "?") in \(clock.now - start)")

            try await subscriber.waitUntilConnected(timeout: .seconds(5))
            try await subscriber.subscribe(["demo"])
            let sent = clock.now
            for index in 1...messages {
                let receivers = try await redis.send(RedisCommand("PUBLISH", "demo", .string("hello #\(index)")))
                print("PUBLISH demo 'hello #\(index)' -> \(receivers.int ?? 0) subscriber(s)")
            }
            var received = 0
            for await message in subscriber.messages {
                received += 1
                print("received on '\(message.channel)': \(String(buffer: message.payload))")
                if received == messages { break }
            }
            print("round trip of \(messages) message(s) took \(clock.now - sent)")
        }
    }
}
