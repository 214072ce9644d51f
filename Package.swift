// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "proxima",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "proxima", targets: ["proxima"]),
        .library(name: "ProximaServer", targets: ["ProximaServer"]),
        .library(name: "ProximaTesting", targets: ["ProximaTesting"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
    ],
    targets: [
        // Configuration model, YAML loading, defaults and validation. No networking.
        .target(
            name: "ProximaConfig",
            dependencies: ["ProximaPolicy", "ProximaBalance", "ProximaHTTP1", "ProximaTelemetry", "ProximaAuth", .product(name: "Yams", package: "Yams")]
        ),
        // Strict HTTP/1.1 framing (RFC 9112) on raw bytes: request and response heads, body
        // framing, hop-by-hop rules. Pure: only ByteBuffer from NIOCore.
        .target(
            name: "ProximaHTTP1",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")]
        ),
        // Access decisions (client networks, ports, domains). Nothing of NIO.
        .target(name: "ProximaPolicy"),
        .target(name: "ProximaBalance"),
        // HTTP caching rules (RFC 9111, RFC 5861): Cache-Control, dates, storing, freshness
        // and age, Vary keys, conditional requests; the size-bounded LRU store. No NIO.
        .target(name: "ProximaCache"),
        // The system's crypt(3) (libxcrypt: bcrypt, yescrypt, SHA-crypt), for htpasswd files.
        .target(name: "CCrypt"),
        // The system's zlib and Brotli encoder (zlib1g-dev, libbrotli-dev), for compressing answers.
        .target(name: "CCompression"),
        // Proxy authentication: htpasswd and group files, Basic credentials.
        .target(name: "ProximaAuth", dependencies: ["CCrypt"]),
        // The Exchange record, access-log formats and sinks.
        .target(name: "ProximaTelemetry"),
        // Everything with a socket.
        .target(
            name: "ProximaServer",
            dependencies: [
                "ProximaConfig", "ProximaHTTP1", "ProximaPolicy", "ProximaTelemetry", "ProximaAuth", "ProximaCache", "CCompression",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            ]
        ),
        // Test harness: start a proxy and origins on ephemeral loopback ports in one call.
        .target(
            name: "ProximaTesting",
            dependencies: [
                "ProximaServer", "ProximaConfig",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "proxima",
            dependencies: [
                "ProximaServer", "ProximaConfig",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // Block-list matching benchmark (bench/blocklist.sh).
        .executableTarget(name: "proxima-filter-bench", dependencies: ["ProximaPolicy"]),
        .testTarget(name: "ProximaConfigTests", dependencies: ["ProximaConfig", "ProximaPolicy", "ProximaTelemetry"]),
        .testTarget(name: "ProximaHTTP1Tests", dependencies: ["ProximaHTTP1"]),
        .testTarget(name: "ProximaBalanceTests", dependencies: ["ProximaBalance"]),
        .testTarget(name: "ProximaCacheTests", dependencies: ["ProximaCache"]),
        .testTarget(name: "ProximaPolicyTests", dependencies: ["ProximaPolicy"]),
        .testTarget(name: "ProximaAuthTests", dependencies: ["ProximaAuth"]),
        .testTarget(name: "ProximaTelemetryTests", dependencies: ["ProximaTelemetry"]),
        .testTarget(
            name: "ProximaServerTests",
            dependencies: [
                "ProximaServer", "ProximaTesting", "ProximaConfig", "ProximaHTTP1", "ProximaPolicy", "ProximaTelemetry", "ProximaAuth",
                "ProximaBalance",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
