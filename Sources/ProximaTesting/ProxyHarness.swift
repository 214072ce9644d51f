import Logging
import NIOCore
import NIOPosix
import ProximaConfig
import ProximaServer

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A Proxima started in-process on an ephemeral loopback port.
public final class RunningProxy: Sendable {
    public let server: ProximaServer
    public let port: Int
    public let accessLogPath: String

    init(server: ProximaServer, port: Int, accessLogPath: String) {
        self.server = server
        self.port = port
        self.accessLogPath = accessLogPath
    }

    /// `http://127.0.0.1:PORT`, for `curl -x` and friends.
    public var url: String { "http://127.0.0.1:\(port)" }

    /// Access-log lines written so far (JSON lines format).
    public func accessLogLines() -> [String] {
        server.flushAccessLog()
        return (readFile(accessLogPath) ?? "").split(separator: "\n").map(String.init)
    }

    /// Waits (bounded) until the access log holds at least `count` lines.
    public func waitForAccessLog(count: Int, timeout: Duration = .seconds(10)) async -> [String] {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            let lines = accessLogLines()
            if lines.count >= count || clock.now >= deadline { return lines }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    public func stop() async {
        await server.shutdown(drainTimeout: .seconds(5))
        unlink(accessLogPath)
    }
}

public enum ProxyHarness {
    /// Starts a forward proxy on 127.0.0.1 with an ephemeral port. `configure` edits the
    /// built-in default first; the access log goes to a temporary file in JSON lines.
    public static func start(_ configure: (inout ProximaConfiguration) -> Void = { _ in }) async throws -> RunningProxy {
        var config = ProximaConfiguration()
        config.listeners = [ListenerConfig(name: "test", role: .forward, address: ListenAddress(host: "127.0.0.1", port: 0))]
        let logPath = makeTempPath("proxima-access", ".log")
        config.logging.access = [AccessLogConfig(sink: .file(logPath), format: .json)]
        configure(&config)
        var logger = Logger(label: "proxima-test")
        logger.logLevel = .warning
        let server = try ProximaServer(configuration: config, logger: logger)
        try await server.start()
        guard let port = server.boundAddresses.first?.address.port else {
            throw ServerStartError(description: "no bound port")
        }
        return RunningProxy(server: server, port: port, accessLogPath: logPath)
    }

    /// Runs `body` with a started proxy and stops it afterwards.
    public static func withProxy<T>(
        _ configure: (inout ProximaConfiguration) -> Void = { _ in }, _ body: (RunningProxy) async throws -> T
    ) async throws -> T {
        let proxy = try await start(configure)
        do {
            let result = try await body(proxy)
            await proxy.stop()
            return result
        } catch {
            await proxy.stop()
            throw error
        }
    }
}


/// A fresh path under the system's temporary folder.
public func makeTempPath(_ prefix: String, _ suffix: String) -> String {
    var template = Array("/tmp/\(prefix).XXXXXX".utf8CString)
    let fd = mkstemp(&template)
    let base = String(decoding: template.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    if fd >= 0 {
        close(fd)
        unlink(base)
    }
    return base + suffix
}

public func readFile(_ path: String) -> String? { readTextFile(path) }

public func writeFile(_ path: String, _ text: String) {
    guard let f = fopen(path, "wb") else { return }
    var t = text
    t.withUTF8 { _ = fwrite($0.baseAddress, 1, $0.count, f) }
    fclose(f)
}
