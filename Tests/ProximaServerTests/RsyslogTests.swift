import Foundation
import ProximaConfig
import ProximaTelemetry
import ProximaTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real rsyslogd (Debian package `rsyslog`) in the foreground with its own configuration: a
/// TCP input on an ephemeral port and a Unix datagram socket, both written to one file as the
/// bare message.
final class Rsyslog: @unchecked Sendable {
    let dir: String
    let process: Process
    let tcpPort: Int
    var socketPath: String { dir + "/log.sock" }
    var outputPath: String { dir + "/out.log" }

    static func start() async throws -> Rsyslog {
        guard let exe = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw TestFailure("rsyslogd is not installed (apt-get install rsyslog; .ci/run does)")
        }
        let dir = makeTempPath("proxima-rsyslog", "")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        writeFile(dir + "/rsyslog.conf", """
            global(workDirectory="\(dir)" maxMessageSize="16k")
            module(load="imtcp")
            module(load="imuxsock" SysSock.Use="off")
            input(type="imtcp" port="0" listenPortFileName="\(dir)/tcp.port" ruleset="r")
            input(type="imuxsock" Socket="\(dir)/log.sock" useSpecialParser="off" parseHostname="on" ruleset="r")
            template(name="raw" type="string" string="%msg%\\n")
            ruleset(name="r") { action(type="omfile" file="\(dir)/out.log" template="raw" flushOnTXEnd="on" asyncWriting="off") }

            """)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = ["-n", "-f", dir + "/rsyslog.conf", "-i", dir + "/rsyslog.pid"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        var port: Int?
        _ = await eventually {
            port = readFile(dir + "/tcp.port").flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            return port != nil && FileManager.default.fileExists(atPath: dir + "/log.sock")
        }
        guard let port else {
            p.terminate()
            throw TestFailure("rsyslogd did not start (see \(dir))")
        }
        return Rsyslog(dir: dir, process: p, tcpPort: port)
    }

    init(dir: String, process: Process, tcpPort: Int) {
        self.dir = dir
        self.process = process
        self.tcpPort = tcpPort
    }

    var lines: [String] { (readFile(outputPath) ?? "").split(separator: "\n").map(String.init) }

    func kill() {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    func stop() {
        kill()
        try? FileManager.default.removeItem(atPath: dir)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

@Suite("Access log shipped to a real rsyslog over TCP and the local socket")
struct RsyslogTests {
    /// Sends `count` requests, `concurrency` at a time, each on its own connection; returns statuses.
    func burst(_ proxy: RunningProxy, _ origin: TestOrigin, from: Int, count: Int, concurrency: Int = 8) async throws -> [Int] {
        try await withThrowingTaskGroup(of: [Int].self) { group in
            for worker in 0..<concurrency {
                group.addTask {
                    var statuses: [Int] = []
                    var i = from + worker
                    while i < from + count {
                        let r = try await send(proxy, ["GET \(origin.url)/bytes/10?n=\(i) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"])
                        statuses.append(r.replies.first?.status ?? 0)
                        i += concurrency
                    }
                    return statuses
                }
            }
            var all: [Int] = []
            for try await s in group { all += s }
            return all
        }
    }

    @Test func everyRecordArrivesIntactOverBothTransports() async throws {
        let rsyslog = try await Rsyslog.start()
        defer { rsyslog.stop() }
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        let n = 400
        try await ProxyHarness.withProxy({ c in
            c.logging.access = [
                AccessLogConfig(sink: .syslog(SyslogTarget(transport: .tcp, host: "127.0.0.1", port: rsyslog.tcpPort), .local0), format: .json),
                AccessLogConfig(sink: .syslog(SyslogTarget(transport: .unix, host: rsyslog.socketPath), .local1), format: .squid),
            ]
        }) { proxy in
            let statuses = try await burst(proxy, origin, from: 0, count: n)
            #expect(statuses.count == n && statuses.allSatisfy { $0 == 200 })
            proxy.server.flushAccessLog()
            #expect(await eventually(timeout: .seconds(20)) { rsyslog.lines.count >= 2 * n })
            let lines = rsyslog.lines
            #expect(lines.count == 2 * n)
            // JSON over TCP: every record parses and names its request exactly once.
            let json = jsonRecords(lines.filter { $0.hasPrefix("{") })
            #expect(json.count == n)
            let urls = Set(json.compactMap { $0["url"] as? String })
            #expect(urls == Set((0..<n).map { "\(origin.url)/bytes/10?n=\($0)" }))
            #expect(json.allSatisfy { $0["status"] as? Int == 200 && $0["result"] as? String == "TCP_MISS" })
            // Squid's format over the local socket: the same requests.
            let squid = lines.filter { !$0.hasPrefix("{") }
            #expect(squid.count == n)
            let squidURLs = Set(squid.compactMap { line in line.split(separator: " ").first { $0.hasPrefix("http://") }.map(String.init) })
            #expect(squidURLs == urls)
        }
    }

    /// rsyslog killed in the middle of a burst: every request is still answered, in about the
    /// time the same burst takes with rsyslog up; the records that could not be delivered are
    /// dropped and counted, never waited for.
    @Test func killingRsyslogMidBurstLosesNoRequest() async throws {
        let rsyslog = try await Rsyslog.start()
        defer { rsyslog.stop() }
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ c in
            c.logging.access = [
                AccessLogConfig(sink: .syslog(SyslogTarget(transport: .tcp, host: "127.0.0.1", port: rsyslog.tcpPort), .local0), format: .squid)
            ]
        }) { proxy in
            let clock = ContinuousClock()
            let warm = try await burst(proxy, origin, from: 0, count: 200)
            #expect(warm.allSatisfy { $0 == 200 })
            let upStart = clock.now
            let up = try await burst(proxy, origin, from: 200, count: 300)
            let upTime = clock.now - upStart
            #expect(up.allSatisfy { $0 == 200 })

            let downStart = clock.now
            async let rest = burst(proxy, origin, from: 500, count: 300)
            rsyslog.kill()
            let down = try await rest
            let downTime = clock.now - downStart
            #expect(down.count == 300 && down.allSatisfy { $0 == 200 })
            #expect(downTime < max(upTime * 4, .seconds(5)), "burst took \(downTime) with rsyslog down, \(upTime) with it up")
            // Records after the kill are either still queued for a reconnect or counted as dropped.
            let more = try await burst(proxy, origin, from: 800, count: 50)
            #expect(more.allSatisfy { $0 == 200 })
        }
    }
}
