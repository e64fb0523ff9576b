// swift-tools-version:6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "ClusterWS",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "ClusterWS", targets: ["ClusterWS"]),
        .library(name: "ClusterWSHummingbird", targets: ["ClusterWSHummingbird"]),
        .library(name: "ClusterWSJWT", targets: ["ClusterWSJWT"]),
        .library(name: "ClusterWSClient", targets: ["ClusterWSClient"]),
        .library(name: "ClusterWSPublishAPI", targets: ["ClusterWSPublishAPI"]),
        .executable(name: "Demo", targets: ["Demo"]),
        .executable(name: "Benchmarks", targets: ["Benchmarks"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        // permessage-deflate: a maintained binding of the system zlib.
        .package(url: "https://github.com/adam-fowler/compress-nio.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        // Micro-benchmarks (allocations per operation, with thresholds CI checks). The
        // malloc interposer only: the Swift 6.3 runtime hooks for ARC counts crash without
        // a runtime interposer this machine does not have (ordo-one/benchmark#349).
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        .target(
            name: "ClusterWS",
            dependencies: [
                "CHiredis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CompressNIO", package: "compress-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Hosts ClusterWS's WebSocket routes in a Hummingbird 2 application, on its
        // port; kept apart so the core does not depend on Hummingbird.
        .target(
            name: "ClusterWSHummingbird",
            dependencies: [
                "ClusterWS",
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Signed-token (JWT) authentication for the handshake, apart from the core.
        .target(
            name: "ClusterWSJWT",
            dependencies: [
                "ClusterWS",
                .product(name: "JWTKit", package: "jwt-kit"),
            ],
            swiftSettings: swiftSettings
        ),
        // The HTTP publish API (publish, presence, online) for backends in any language.
        .target(
            name: "ClusterWSPublishAPI",
            dependencies: [
                "ClusterWS",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Starts a throwaway redis-server on a free loopback port: used by the
        // tests, the demo and the benchmarks when no REDIS_URL is given.
        .target(
            name: "EmbeddedRedis",
            dependencies: [],
            swiftSettings: swiftSettings
        ),
        // Fuzz targets for every decoder of untrusted input (see Fuzz/README.md), and the
        // executable that runs them: libFuzzer's when built with -sanitize=fuzzer (make fuzz),
        // else a replayer of corpus files. The test suite replays the committed corpus.
        .target(
            name: "ClusterWSFuzzTargets",
            dependencies: [
                "ClusterWS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(name: "clusterws-fuzz", dependencies: ["ClusterWSFuzzTargets"]),
        // The Swift client of the clusterws.v1 protocol (no dependency on the server or hiredis).
        .target(
            name: "ClusterWSClient",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "Demo",
            dependencies: [
                "ClusterWS",
                "ClusterWSPublishAPI",
                "EmbeddedRedis",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // The JavaScript client of clusterws.v1, served at /clusterws.js and used by the page.
            resources: [.copy("clusterws.js")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "Benchmarks",
            dependencies: [
                "ClusterWS",
                "ClusterWSHummingbird",
                "ClusterWSClient",
                "ClusterWSPublishAPI",
                "EmbeddedRedis",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                // The baseline the transport is measured against.
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Benchmarks",
            exclude: ["ClusterWSMicroBenchmarks"],
            swiftSettings: swiftSettings
        ),
        // `swift package benchmark --target ClusterWSMicroBenchmarks` (make bench-micro):
        // the per-message steps of the relay, with allocation thresholds in Thresholds/.
        .executableTarget(
            name: "ClusterWSMicroBenchmarks",
            dependencies: [
                "ClusterWS",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            path: "Benchmarks/ClusterWSMicroBenchmarks",
            swiftSettings: swiftSettings,
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .testTarget(
            name: "ClusterWSTests",
            dependencies: [
                "ClusterWS",
                "ClusterWSHummingbird",
                "ClusterWSJWT",
                "ClusterWSClient",
                "ClusterWSPublishAPI",
                "ClusterWSFuzzTargets",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Hummingbird", package: "hummingbird"),
                "EmbeddedRedis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
