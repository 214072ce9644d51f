import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where a syslog sink sends: `udp://host:port`, `tcp://host:port` (RFC 6587 octet counting) or
/// `unix:/path` (a local datagram socket such as /dev/log).
public struct SyslogTarget: Sendable, Hashable, CustomStringConvertible {
    public enum Transport: String, Sendable { case udp, tcp, unix }
    public var transport: Transport
    /// Host name or address; the socket path for `unix`.
    public var host: String
    public var port: Int

    public init(transport: Transport, host: String, port: Int = 0) {
        self.transport = transport
        self.host = host
        self.port = port
    }

    public static func parse(_ text: String) -> SyslogTarget? {
        if text.hasPrefix("unix:") {
            var path = String(text.dropFirst(5))
            if path.hasPrefix("//") { path = String(path.dropFirst(2)) }
            return path.hasPrefix("/") ? SyslogTarget(transport: .unix, host: path) : nil
        }
        let transport: Transport
        if text.hasPrefix("udp://") { transport = .udp } else if text.hasPrefix("tcp://") { transport = .tcp } else { return nil }
        let rest = text.dropFirst(6)
        let host: Substring
        let portText: Substring
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return nil }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            guard after.hasPrefix(":") else { return nil }
            portText = after.dropFirst()
        } else {
            guard let colon = rest.lastIndex(of: ":") else { return nil }
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (1...65535).contains(port) else { return nil }
        return SyslogTarget(transport: transport, host: String(host), port: port)
    }

    public var description: String {
        switch transport {
        case .unix: return "unix:\(host)"
        case .udp, .tcp: return "\(transport.rawValue)://\(host.contains(":") ? "[\(host)]" : host):\(port)"
        }
    }
}

/// RFC 5424 facilities by name.
public enum SyslogFacility: String, Sendable, CaseIterable {
    case kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp
    case local0, local1, local2, local3, local4, local5, local6, local7

    public var code: Int {
        switch self {
        case .kern: return 0
        case .user: return 1
        case .mail: return 2
        case .daemon: return 3
        case .auth: return 4
        case .syslog: return 5
        case .lpr: return 6
        case .news: return 7
        case .uucp: return 8
        case .cron: return 9
        case .authpriv: return 10
        case .ftp: return 11
        case .local0: return 16
        case .local1: return 17
        case .local2: return 18
        case .local3: return 19
        case .local4: return 20
        case .local5: return 21
        case .local6: return 22
        case .local7: return 23
        }
    }
}

/// RFC 5424 framing of access-log lines.
public struct SyslogFormatter: Sendable {
    public var facility: SyslogFacility
    public var hostname: String
    public var appName: String
    public var procID: String
    /// Severity of access records: informational.
    static let severity = 6
    /// Longer messages are cut (receivers accept at least 2 KiB; rsyslog 8 KiB by default).
    public static let maxMessage = 8 * 1024

    public init(facility: SyslogFacility, hostname: String = systemHostname(), appName: String = "proxima", procID: String = String(getpid())) {
        self.facility = facility
        self.hostname = hostname.isEmpty ? "-" : String(hostname.prefix(255))
        self.appName = appName
        self.procID = procID
    }

    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`, MSGID "access", no structured data.
    public func message(line: some Collection<UInt8>, seconds: Int, nanoseconds: Int, clock: inout LogClock) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(line.count + 96)
        out.append(UInt8(ascii: "<"))
        out.append(contentsOf: String(facility.code * 8 + Self.severity).utf8)
        out.append(contentsOf: ">1 ".utf8)
        out.append(contentsOf: clock.iso8601(seconds, millis: nanoseconds / 1_000_000).utf8)
        out.append(0x20)
        out.append(contentsOf: hostname.utf8)
        out.append(0x20)
        out.append(contentsOf: appName.utf8)
        out.append(0x20)
        out.append(contentsOf: procID.utf8)
        out.append(contentsOf: " access - ".utf8)
        out.append(contentsOf: line.prefix(Self.maxMessage))
        return out
    }
}

public func systemHostname() -> String {
    var buf = [CChar](repeating: 0, count: 256)
    guard gethostname(&buf, buf.count) == 0 else { return "-" }
    let name = String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) && !name.isEmpty ? name : "-"
}

/// Delivers syslog messages from its own thread, so a slow or dead log server never holds up
/// anything else: messages wait in a bounded queue, the oldest are dropped (and counted) when it
/// is full, and a lost connection is retried with a growing back-off.
public final class SyslogSender: Sendable {
    public let target: SyslogTarget
    public let capacity: Int

    struct State {
        var pending: [[UInt8]] = []
        var dropped = 0
        var sent = 0
        var scheduled = false
        var closed = false

        /// Keeps the newest `capacity` messages; the oldest beyond it are dropped and counted.
        mutating func trim(to capacity: Int) {
            guard pending.count > capacity else { return }
            let excess = pending.count - capacity
            pending.removeFirst(excess)
            dropped += excess
        }
    }

    /// Connection state, touched only on `queue`.
    struct Connection: ~Copyable {
        var fd: Int32 = -1
        var backoffNanos: UInt64 = 0
        var retryAt: UInt64 = 0

        /// Gives up on the socket (if any) until a back-off that doubles from 0.1 s to 30 s.
        mutating func backOff(now: UInt64) {
            if fd >= 0 {
                systemClose(fd)
                fd = -1
            }
            backoffNanos = min(max(backoffNanos * 2, SyslogSender.minBackoff), SyslogSender.maxBackoff)
            retryAt = now + backoffNanos
        }
    }

    private let state = Mutex(State())
    private let connection = Mutex(Connection())
    private let queue: DispatchQueue
    static let minBackoff: UInt64 = 100_000_000
    static let maxBackoff: UInt64 = 30_000_000_000

    public init(target: SyslogTarget, capacity: Int = 10_000) {
        self.target = target
        self.capacity = max(1, capacity)
        self.queue = DispatchQueue(label: "proxima.syslog.\(target)")
    }

    public var droppedCount: Int { state.withLock { $0.dropped } }
    public var sentCount: Int { state.withLock { $0.sent } }

    /// Queues messages; never blocks on the network.
    public func enqueue(_ messages: [[UInt8]]) {
        let schedule = state.withLock { s -> Bool in
            if s.closed { return false }
            s.pending.append(contentsOf: messages)
            s.trim(to: capacity)
            if s.scheduled { return false }
            s.scheduled = true
            return true
        }
        if schedule { queue.async { self.deliver() } }
    }

    /// Sends what is queued, once (used at shutdown and by tests).
    public func flush() { queue.sync { self.deliver() } }

    public func shutdown() {
        flush()
        state.withLock { $0.closed = true }
        queue.sync { connection.withLock { c in if c.fd >= 0 { systemClose(c.fd); c.fd = -1 } } }
    }

    private func deliver() {
        let batch = state.withLock { s -> [[UInt8]] in
            s.scheduled = false
            let b = s.pending
            s.pending = []
            return b
        }
        if batch.isEmpty { return }
        var sent = 0
        let retryAt = connection.withLock { c -> UInt64 in
            while sent < batch.count {
                if c.fd < 0 {
                    let now = monotonicNanos()
                    if now < c.retryAt { break }
                    c.fd = openSocket()
                    if c.fd < 0 {
                        c.backOff(now: now)
                        break
                    }
                }
                if send(batch[sent], on: c.fd) {
                    sent += 1
                    c.backoffNanos = 0
                } else if target.transport == .udp {
                    // Datagrams to a closed port bounce (ECONNREFUSED); the message is lost, as
                    // UDP syslog loses it anyway. Keep the socket.
                    sent += 1
                } else {
                    c.backOff(now: monotonicNanos())
                    break
                }
            }
            return c.retryAt
        }
        let retryDelay: UInt64? = state.withLock { s in
            s.sent += sent
            guard sent < batch.count, !s.closed else { return nil }
            // Unsent messages go back in front of newer ones, within the same bound.
            s.pending = Array(batch[sent...]) + s.pending
            s.trim(to: capacity)
            if s.scheduled { return nil }
            s.scheduled = true
            let now = monotonicNanos()
            return retryAt > now ? retryAt - now : Self.minBackoff
        }
        if let retryDelay {
            queue.asyncAfter(deadline: .now() + .nanoseconds(Int(min(retryDelay, Self.maxBackoff)))) { self.deliver() }
        }
    }

    private func send(_ message: [UInt8], on fd: Int32) -> Bool {
        var frame: [UInt8]
        if target.transport == .tcp {
            frame = Array(String(message.count).utf8)
            frame.append(0x20)
            frame.append(contentsOf: message)
        } else {
            frame = message
        }
        return frame.withUnsafeBytes { buf in
            var offset = 0
            while offset < buf.count {
                let n = Glibc.send(fd, buf.baseAddress! + offset, buf.count - offset, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += n
            }
            return true
        }
    }

    /// A connected socket for the target, or -1. Blocking with a 2-second send (and connect)
    /// timeout: this runs on the sender's own thread.
    private func openSocket() -> Int32 {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        if target.transport == .unix {
            let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return -1 }
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            let path = Array(target.host.utf8)
            guard path.count < MemoryLayout.size(ofValue: addr.sun_path) else {
                systemClose(fd)
                return -1
            }
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in
                for (i, b) in path.enumerated() { raw[i] = b }
                raw[path.count] = 0
            }
            let ok = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if ok != 0 {
                systemClose(fd)
                return -1
            }
            return fd
        }
        var hints = addrinfo()
        hints.ai_socktype = target.transport == .tcp ? Int32(SOCK_STREAM.rawValue) : Int32(SOCK_DGRAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(target.host, String(target.port), &hints, &list) == 0, let first = list else { return -1 }
        defer { freeaddrinfo(first) }
        var ai: UnsafeMutablePointer<addrinfo>? = first
        while let a = ai {
            let fd = socket(a.pointee.ai_family, a.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), a.pointee.ai_protocol)
            if fd >= 0 {
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                if connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0 { return fd }
                systemClose(fd)
            }
            ai = a.pointee.ai_next
        }
        return -1
    }
}

func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
