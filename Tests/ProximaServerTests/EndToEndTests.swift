import Foundation
import NIOCore
import ProximaTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The built `proxima` binary, run as users run it, with real clients (curl, Python).
final class ProximaProcess: @unchecked Sendable {
    let process = Process()
    let stderrPipe = Pipe()
    let stdoutPipe = Pipe()
    private(set) var port = 0
    let configPath: String

    static var binaryPath: String {
        if let p = ProcessInfo.processInfo.environment["PROXIMA_BIN"] { return p }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/proxima").path
    }

    /// Starts the binary with `yaml` (whose listener should use port 0) and waits, bounded, for
    /// the line that says where it listens.
    init(yaml: String) throws {
        configPath = makeTempPath("proxima-e2e", ".yaml")
        writeFile(configPath, yaml)
        process.executableURL = URL(fileURLWithPath: Self.binaryPath)
        process.arguments = ["serve", "--config", configPath]
        process.standardError = stderrPipe
        process.standardOutput = stdoutPipe
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        var seen = ""
        while Date() < deadline, port == 0 {
            let data = stderrPipe.fileHandleForReading.availableData
            if data.isEmpty { break }
            seen += String(decoding: data, as: UTF8.self)
            if let range = seen.range(of: #"on 127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(seen[range].split(separator: ":").last!)!
            }
        }
        if port == 0 {
            process.terminate()
            throw ServerError(message: "proxima did not report a port: \(seen)")
        }
    }

    struct ServerError: Error { var message: String }

    var pid: Int32 { process.processIdentifier }

    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    /// Resident memory in KiB, from /proc.
    var rssKiB: Int {
        let status = readFile("/proc/\(pid)/status") ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
    }

    func waitForExit(timeout: TimeInterval = 20) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { usleep(20_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    func stop() {
        if process.isRunning {
            signal(SIGTERM)
            if waitForExit(timeout: 10) == nil { signal(SIGKILL) }
        }
        unlink(configPath)
    }

    /// Everything written to stderr since start-up (drains the pipe without blocking).
    func stderrSoFar() -> String {
        let fd = stderrPipe.fileHandleForReading.fileDescriptor
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }
}

func forwardConfig(extra: String = "", logPath: String? = nil) -> String {
    let log = logPath.map { "    - sink: file\n      path: \($0)\n      format: json\n" } ?? "    - sink: stdout\n      format: squid\n"
    return """
        listeners:
          - name: e2e
            role: forward
            address: 127.0.0.1:0
        logging:
          level: notice
          access:
        \(log)
        \(extra)
        """
}

let curlPath = "/usr/bin/curl"

@Suite("End to end: the proxima binary with curl and Python", .serialized)
struct EndToEndTests {
    @Test func curlThroughTheProxy() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        let proxima = try ProximaProcess(yaml: forwardConfig())
        defer { proxima.stop() }
        let r = try await run(curlPath, ["-s", "-S", "-x", "http://127.0.0.1:\(proxima.port)", "-D", "-", "\(origin.url)/bytes/2048"])
        #expect(r.status == 0, "\(r.error)")
        #expect(r.output.hasPrefix("HTTP/1.1 200 OK"))
        #expect(r.output.contains("Via: 1.1 "))
        #expect(r.output.hasSuffix(String(decoding: patternBytes(2048), as: UTF8.self)))
    }

    @Test func curlHTTPSThroughConnect() async throws {
        let tls = try await TLSOrigin.start()
        defer { tls.stop() }
        let proxima = try ProximaProcess(yaml: forwardConfig(extra: "connect:\n  allowed_ports: [\(tls.port)]\n"))
        defer { proxima.stop() }
        let r = try await run(curlPath, ["-s", "-S", "--cacert", tls.certPath, "-x", "http://127.0.0.1:\(proxima.port)", "https://localhost:\(tls.port)/hello.txt"])
        #expect(r.status == 0, "\(r.error)")
        #expect(r.output == "hello over tls\n")
        // The default CONNECT policy (port 443 only) refuses other ports.
        let strict = try ProximaProcess(yaml: forwardConfig())
        defer { strict.stop() }
        let denied = try await run(curlPath, ["-s", "-o", "/dev/null", "-w", "%{http_connect}", "--cacert", tls.certPath, "-x", "http://127.0.0.1:\(strict.port)", "https://localhost:\(tls.port)/hello.txt"])
        #expect(denied.output == "403")
    }

    @Test func pythonUrllibWithProxyHandler() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        let proxima = try ProximaProcess(yaml: forwardConfig())
        defer { proxima.stop() }
        let script = """
            import urllib.request, sys
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": "http://127.0.0.1:\(proxima.port)"}))
            with opener.open("\(origin.url)/headers", timeout=10) as r:
                body = r.read().decode()
                print(r.status, "via" in {k.lower() for k in r.headers.keys()})
                print(body)
            req = urllib.request.Request("\(origin.url)/echo", data=b"posted by python", method="POST")
            with opener.open(req, timeout=10) as r:
                print(r.read().decode())
            """
        let r = try await run("/usr/bin/env", ["python3", "-c", script])
        #expect(r.status == 0, "\(r.error)")
        #expect(r.output.hasPrefix("200 True\n"))
        #expect(r.output.lowercased().contains("x-forwarded-for: 127.0.0.1"))
        #expect(r.output.hasSuffix("posted by python\n"))
    }

    @Test func checkCommandListsEveryProblem() async throws {
        let bad = makeTempPath("proxima-bad", ".yaml")
        defer { unlink(bad) }
        writeFile(bad, "listeners:\n  - role: forward\n    address: 127.0.0.1:99999\ntimeouts:\n  idle: forever\n")
        let r = try await run(ProximaProcess.binaryPath, ["check", "--config", bad])
        #expect(r.status == 2)
        #expect(r.error.contains("listeners[0].address: port 99999 is out of range (0-65535) (line 3)"))
        #expect(r.error.contains("timeouts.idle: 'forever' is not a duration"))
        let good = makeTempPath("proxima-good", ".yaml")
        defer { unlink(good) }
        writeFile(good, forwardConfig())
        let ok = try await run(ProximaProcess.binaryPath, ["check", "--config", good])
        #expect(ok.status == 0)
        #expect(ok.output.contains("OK"))
        // `serve` refuses a bad file the same way.
        let serve = try await run(ProximaProcess.binaryPath, ["serve", "--config", bad])
        #expect(serve.status == 2)
        #expect(serve.error.contains("(line 3)"))
    }

    @Test func versionAndHelp() async throws {
        let v = try await run(ProximaProcess.binaryPath, ["--version"])
        #expect(v.output.trimmingCharacters(in: .whitespacesAndNewlines) == "0.1.0")
        let h = try await run(ProximaProcess.binaryPath, ["--help"])
        #expect(h.output.contains("Examples:"))
        #expect(h.output.contains("127.0.0.1:3128"))
    }

    @Test func sighupReloadsAndRefusesABrokenFile() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        let proxima = try ProximaProcess(yaml: forwardConfig())
        defer { proxima.stop() }
        let url = "\(origin.url)/bytes/5"
        func status() async throws -> String {
            try await run(curlPath, ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://127.0.0.1:\(proxima.port)", url]).output
        }
        #expect(try await status() == "200")
        // Same listener (its port is now fixed), but nobody is allowed any more.
        let listenerBlock = "listeners:\n  - name: e2e\n    role: forward\n    address: 127.0.0.1:\(proxima.port)\n"
        writeFile(proxima.configPath, listenerBlock + "access:\n  - name: maintenance\n    action: deny\n")
        proxima.signal(SIGHUP)
        #expect(try await eventually { try await status() == "403" })
        // A broken file is refused; the running configuration stays.
        writeFile(proxima.configPath, listenerBlock + "access:\n  - action: perhaps\n")
        proxima.signal(SIGHUP)
        #expect(await eventually { proxima.stderrSoFar().contains("reload refused") })
        #expect(try await status() == "403")
    }

    /// logrotate's way: move the file away, send SIGUSR1, the next lines go to a new file.
    @Test func sigusr1ReopensTheAccessLog() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        let log = makeTempPath("proxima-e2e-access", ".log")
        defer { unlink(log); unlink(log + ".1") }
        let proxima = try ProximaProcess(yaml: """
            listeners:
              - name: e2e
                role: forward
                address: 127.0.0.1:0
            logging:
              access:
                - sink: file
                  path: \(log)
                  template: "$status $url"
            """)
        defer { proxima.stop() }
        func fetch(_ path: String) async throws {
            _ = try await run(curlPath, ["-s", "-o", "/dev/null", "-x", "http://127.0.0.1:\(proxima.port)", "\(origin.url)\(path)"])
        }
        try await fetch("/bytes/1")
        #expect(await eventually { (readFile(log) ?? "").contains("200 \(origin.url)/bytes/1") })
        #expect(rename(log, log + ".1") == 0)
        proxima.signal(SIGUSR1)
        #expect(await eventually { proxima.stderrSoFar().contains("SIGUSR1") })
        try await fetch("/bytes/2")
        #expect(await eventually { (readFile(log) ?? "") == "200 \(origin.url)/bytes/2\n" })
        #expect(readFile(log + ".1") == "200 \(origin.url)/bytes/1\n")
    }

    @Test func sigtermExitsZero() throws {
        let proxima = try ProximaProcess(yaml: forwardConfig())
        proxima.signal(SIGTERM)
        #expect(proxima.waitForExit() == 0)
        proxima.stop()
    }

    /// 1 GiB down and 1 GiB up through the proxy, with its resident memory sampled throughout.
    @Test func gigabyteTransfersKeepMemoryFlat() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        let proxima = try ProximaProcess(yaml: forwardConfig(logPath: "/dev/null"))
        defer { proxima.stop() }
        let baseline = proxima.rssKiB
        let peak = PeakSampler(pid: proxima.pid)
        peak.start()
        let gib = 1 << 30
        let down = try await run(curlPath, ["-s", "-S", "-o", "/dev/null", "-w", "%{size_download}", "-x", "http://127.0.0.1:\(proxima.port)", "\(origin.url)/stream/\(gib)"])
        #expect(down.output == String(gib), "\(down.error)")
        let up = try await run("/bin/bash", ["-c", "head -c \(gib) /dev/zero | \(curlPath) -s -S -x http://127.0.0.1:\(proxima.port) -T - \(origin.url)/count"])
        #expect(up.output == String(gib), "\(up.error)")
        let maxRSS = peak.stop()
        // A sampler that read nothing would pass the bound below; make sure it measured.
        #expect(baseline > 0 && maxRSS >= baseline)
        #expect(maxRSS - baseline < 64 * 1024, "RSS grew from \(baseline) KiB to \(maxRSS) KiB")
    }

    @Test func thousandIdleConnectionsCostLittleMemory() async throws {
        let proxima = try ProximaProcess(yaml: forwardConfig())
        defer { proxima.stop() }
        // Warm up: one request so lazily created state exists before the baseline.
        let clients = (0..<1000).map { _ in PersistentClient(port: proxima.port) }
        try await clients[0].open()
        let baseline = proxima.rssKiB
        for c in clients.dropFirst() { try await c.open() }
        // Each connection must be accepted (and counted) by the proxy before measuring.
        _ = try await clients[999].request("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        let after = proxima.rssKiB
        for c in clients { await c.close() }
        #expect(baseline > 0)
        #expect(after - baseline < 30 * 1024, "1000 idle connections added \(after - baseline) KiB")
    }
}

/// Samples a process's VmRSS every few milliseconds on a background thread.
final class PeakSampler: @unchecked Sendable {
    let pid: Int32
    private let lock = NSLock()
    private var peak = 0
    private var running = true
    private var thread: Thread?

    init(pid: Int32) { self.pid = pid }

    private func sample() {
        let status = readFile("/proc/\(pid)/status") ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        let kib = Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        lock.withLock { peak = max(peak, kib) }
    }

    func start() {
        let t = Thread { [self] in
            while lock.withLock({ running }) {
                sample()
                usleep(20_000)
            }
        }
        thread = t
        t.start()
    }

    /// Stops sampling and returns the peak, one last sample included.
    func stop() -> Int {
        sample()
        return lock.withLock {
            running = false
            return peak
        }
    }
}

/// A TLS origin (Python's http.server behind ssl) with a certificate made for the test.
final class TLSOrigin: @unchecked Sendable {
    let process = Process()
    let dir: String
    let port: Int
    var certPath: String { dir + "/cert.pem" }

    init(process: Process, dir: String, port: Int) {
        self.dir = dir
        self.port = port
    }

    static func start() async throws -> TLSOrigin {
        let dir = makeTempPath("proxima-tls", "")
        mkdir(dir, 0o700)
        let gen = try await run("/usr/bin/openssl", [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem",
        ])
        guard gen.status == 0 else { throw ProximaProcess.ServerError(message: "openssl: \(gen.error)") }
        writeFile(dir + "/hello.txt", "hello over tls\n")
        let script = """
            import http.server, ssl, os, sys, functools
            os.chdir(sys.argv[1])
            handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
            httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain("cert.pem", "key.pem")
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
            print(httpd.server_address[1], flush=True)
            httpd.serve_forever()
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script, dir]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let line = String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
        guard let port = Int(line.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            p.terminate()
            throw ProximaProcess.ServerError(message: "TLS origin did not start: \(line)")
        }
        let origin = TLSOrigin(process: p, dir: dir, port: port)
        origin.child = p
        return origin
    }

    var child: Process?

    func stop() {
        // SIGKILL: a child may inherit a signal mask with SIGTERM blocked from the test runner.
        if let child, child.isRunning { kill(child.processIdentifier, SIGKILL) }
        child?.waitUntilExit()
        _ = try? runBlocking("/bin/rm", ["-rf", dir])
    }
}
