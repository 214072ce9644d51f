import Foundation
import Testing

@testable import ProximaTelemetry

#if canImport(Glibc)
import Glibc
#endif

/// A loopback receiver on an ephemeral port that collects what arrives (bounded in time).
final class Receiver: @unchecked Sendable {
    let fd: Int32
    let port: Int
    let tcp: Bool
    private let lock = NSLock()
    private var data: [UInt8] = []
    private var datagrams: [[UInt8]] = []
    private var stopped = false
    private var thread: Thread?
    /// When false (TCP), accepted connections are never read: the sender's socket fills up.
    let reads: Bool

    init(tcp: Bool, reads: Bool = true) throws {
        self.tcp = tcp
        self.reads = reads
        let fd = socket(AF_INET, Int32(tcp ? SOCK_STREAM.rawValue : SOCK_DGRAM.rawValue), 0)
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = Int(UInt16(bigEndian: addr.sin_port))
        if tcp { listen(fd, 16) }
        var timeout = timeval(tv_sec: 0, tv_usec: 50_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let t = Thread { [self] in run() }
        thread = t
        t.start()
    }

    private var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }

    private func run() {
        var buf = [UInt8](repeating: 0, count: 65536)
        var conns: [Int32] = []
        while !isStopped {
            if tcp {
                let c = accept(fd, nil, nil)
                if c >= 0 {
                    var timeout = timeval(tv_sec: 0, tv_usec: 20_000)
                    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                    conns.append(c)
                }
                guard reads else { continue }
                for c in conns {
                    let n = recv(c, &buf, buf.count, 0)
                    if n > 0 { lock.lock(); data += buf[0..<n]; lock.unlock() }
                }
            } else {
                let n = recv(fd, &buf, buf.count, 0)
                if n > 0 { lock.lock(); datagrams.append(Array(buf[0..<n])); lock.unlock() }
            }
        }
        for c in conns { close(c) }
    }

    var received: [UInt8] { lock.lock(); defer { lock.unlock() }; return data }
    var receivedDatagrams: [[UInt8]] { lock.lock(); defer { lock.unlock() }; return datagrams }

    /// Octet-counted frames (RFC 6587) of the TCP stream; nil if the stream is not well framed.
    var frames: [String]? {
        let bytes = received
        var out: [String] = []
        var i = 0
        while i < bytes.count {
            guard let space = bytes[i...].firstIndex(of: 0x20), let n = Int(String(decoding: bytes[i..<space], as: UTF8.self)) else { return nil }
            guard space + 1 + n <= bytes.count else { break }
            out.append(String(decoding: bytes[(space + 1)..<(space + 1 + n)], as: UTF8.self))
            i = space + 1 + n
        }
        return out
    }

    func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
        while thread?.isFinished == false { usleep(5_000) }
        close(fd)
    }
}

/// Polls without holding a thread of the concurrency pool (other tests need them).
func waitFor(_ seconds: Double = 10, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

@Suite("Syslog sinks: RFC 5424 over UDP and TCP, bounded queues, reconnection")
struct SyslogTests {
    @Test func targetsParse() {
        #expect(SyslogTarget.parse("udp://127.0.0.1:514") == SyslogTarget(transport: .udp, host: "127.0.0.1", port: 514))
        #expect(SyslogTarget.parse("tcp://logs.example:601") == SyslogTarget(transport: .tcp, host: "logs.example", port: 601))
        #expect(SyslogTarget.parse("tcp://[::1]:6514") == SyslogTarget(transport: .tcp, host: "::1", port: 6514))
        #expect(SyslogTarget.parse("unix:/dev/log") == SyslogTarget(transport: .unix, host: "/dev/log"))
        #expect(SyslogTarget.parse("unix:///run/x.sock") == SyslogTarget(transport: .unix, host: "/run/x.sock"))
        for bad in ["udp://h", "udp://:514", "tcp://h:0", "tcp://h:70000", "http://h:1", "unix:rel/path", "udp://[::1:514", ""] {
            #expect(SyslogTarget.parse(bad) == nil, "\(bad)")
        }
        for text in ["udp://127.0.0.1:514", "tcp://[::1]:6514", "unix:/dev/log"] {
            #expect(SyslogTarget.parse(text)?.description == text)
        }
    }

    @Test func messagesAreRFC5424() {
        let f = SyslogFormatter(facility: .local3, hostname: "gw1", appName: "proxima", procID: "42")
        var clock = LogClock()
        let msg = f.message(line: Array("a line".utf8), seconds: 1_700_000_000, nanoseconds: 7_000_000, clock: &clock)
        // PRI = local3 (19) * 8 + informational (6) = 158
        #expect(String(decoding: msg, as: UTF8.self) == "<158>1 2023-11-14T22:13:20.007Z gw1 proxima 42 access - a line")
        let long = f.message(line: [UInt8](repeating: 0x41, count: 20_000), seconds: 0, nanoseconds: 0, clock: &clock)
        #expect(long.count < SyslogFormatter.maxMessage + 100)
    }

    @Test func udpDeliversOneDatagramPerRecord() async throws {
        let r = try Receiver(tcp: false)
        defer { r.stop() }
        let w = try AccessLogWriter([(.syslog(SyslogTarget(transport: .udp, host: "127.0.0.1", port: r.port), .local0), .squid)])
        for i in 0..<50 {
            var e = sampleExchange()
            e.url = "http://example.com/\(i)"
            w.record(e)
        }
        w.flush()
        #expect(await waitFor { r.receivedDatagrams.count == 50 })
        let texts = r.receivedDatagrams.map { String(decoding: $0, as: UTF8.self) }
        #expect(texts.allSatisfy { $0.hasPrefix("<134>1 2023-11-14T22:13:20.007Z ") && $0.contains(" proxima ") })
        #expect(texts.first?.hasSuffix("TCP_MISS/200 1234 GET http://example.com/0 - HIER_DIRECT/93.184.216.34:80 text/html;%20charset=utf-8") == true)
        #expect(Set(texts).count == 50)
        w.shutdown()
    }

    @Test func tcpUsesOctetCountingInOrder() async throws {
        let r = try Receiver(tcp: true)
        defer { r.stop() }
        let w = try AccessLogWriter([(.syslog(SyslogTarget(transport: .tcp, host: "127.0.0.1", port: r.port), .local0), .json)])
        for i in 0..<200 {
            var e = sampleExchange()
            e.url = "http://example.com/\(i) with space"
            w.record(e)
        }
        w.flush()
        #expect(await waitFor { r.frames?.count == 200 })
        let frames = try #require(r.frames)
        for (i, f) in frames.enumerated() {
            #expect(f.contains("\"url\":\"http://example.com/\(i) with space\""), "frame \(i) out of order or damaged")
        }
        w.shutdown()
    }

    /// A log server that accepts but never reads: the sender's queue stays bounded, the oldest
    /// records are dropped and counted, and recording never waits.
    @Test func aStalledServerCostsOnlyTheBoundedQueue() async throws {
        let r = try Receiver(tcp: true, reads: false)
        defer { r.stop() }
        let w = try AccessLogWriter([(.syslog(SyslogTarget(transport: .tcp, host: "127.0.0.1", port: r.port), .local0), .squid)], syslogCapacity: 1000)
        let start = Date()
        for _ in 0..<50_000 { w.record(sampleExchange()) }
        // Recording only queues: it does not wait for the stalled server.
        #expect(Date().timeIntervalSince(start) < 5)
        // The socket's buffers fill, then the sender's queue, then the oldest are dropped.
        #expect(await waitFor(30) { w.droppedCount > 0 })
        w.shutdown()
    }

    /// A server that is down loses at most what the queue cannot hold; once it is up, delivery
    /// resumes after the back-off, oldest kept records first.
    @Test func reconnectsWhenTheServerComesBack() async throws {
        // A port with nobody listening: take one and close it.
        let probe = try Receiver(tcp: true)
        let port = probe.port
        probe.stop()
        let sender = SyslogSender(target: SyslogTarget(transport: .tcp, host: "127.0.0.1", port: port), capacity: 10)
        sender.enqueue((0..<25).map { Array("m\($0)".utf8) })
        sender.flush()
        #expect(sender.droppedCount == 15)
        #expect(sender.sentCount == 0)
        // Bring a server up on that port and wait for the retry.
        let server = try TCPServerOnPort(port)
        defer { server.stop() }
        #expect(await waitFor { sender.sentCount == 10 })
        #expect(await waitFor { server.text.contains("3 m24") })
        #expect(server.text.hasPrefix("3 m15"))
        sender.shutdown()
    }
}

/// A minimal TCP collector bound to a given loopback port (for the reconnection test).
final class TCPServerOnPort: @unchecked Sendable {
    let fd: Int32
    private let lock = NSLock()
    private var bytes: [UInt8] = []
    private var stopped = false
    private var thread: Thread?

    init(_ port: Int) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw POSIXError(.EADDRINUSE) }
        listen(fd, 4)
        var timeout = timeval(tv_sec: 0, tv_usec: 50_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let t = Thread { [self] in
            var buf = [UInt8](repeating: 0, count: 4096)
            var conns: [Int32] = []
            while !isStopped {
                let c = accept(fd, nil, nil)
                if c >= 0 {
                    var short = timeval(tv_sec: 0, tv_usec: 50_000)
                    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &short, socklen_t(MemoryLayout<timeval>.size))
                    conns.append(c)
                }
                for c in conns {
                    let n = recv(c, &buf, buf.count, 0)
                    if n > 0 { lock.lock(); bytes += buf[0..<n]; lock.unlock() }
                }
            }
            for c in conns { close(c) }
        }
        thread = t
        t.start()
    }

    private var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }
    var text: String { lock.lock(); defer { lock.unlock() }; return String(decoding: bytes, as: UTF8.self) }

    func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
        while thread?.isFinished == false { usleep(5_000) }
        close(fd)
    }
}
