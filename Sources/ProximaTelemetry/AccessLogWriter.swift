import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where access-log lines go.
public enum LogDestination: Sendable, Equatable {
    case stdout
    case file(String)
    /// RFC 5424 messages to a syslog server or the local syslog socket.
    case syslog(SyslogTarget, SyslogFacility)
}

/// A file sink rotating itself: when a write would take the file past `maxBytes`, `path.N`
/// become `path.N+1` (up to `keep`), `path` becomes `path.1` and a new `path` is started.
public struct FileRotation: Sendable, Equatable {
    public var maxBytes: Int
    public var keep: Int

    public init(maxBytes: Int, keep: Int = 5) {
        self.maxBytes = maxBytes
        self.keep = keep
    }
}

/// One access-log output: where, and in which format (a template, when given, replaces it).
public struct AccessLogOutput: Sendable, Equatable {
    public var destination: LogDestination
    public var format: AccessLogLineFormat
    public var template: LogTemplate?
    public var rotation: FileRotation?

    public init(_ destination: LogDestination, _ format: AccessLogLineFormat, template: LogTemplate? = nil, rotation: FileRotation? = nil) {
        self.destination = destination
        self.format = format
        self.template = template
        self.rotation = rotation
    }
}

/// Writes access-log records off the event loops: `record` only appends to a queue under a
/// lock; a serial dispatch queue formats and writes whatever accumulated, one `write` per
/// batch and sink.
public final class AccessLogWriter: Sendable {
    struct Sink {
        var fd: Int32
        var ownsFD: Bool
        var format: AccessLogLineFormat
        var template: LogTemplate?
        /// For syslog sinks: the sender (with its own queue and thread) and the framing.
        var syslog: (sender: SyslogSender, formatter: SyslogFormatter)?
        /// For file sinks: the path (to reopen and rotate), the rotation, the current size.
        var path: String?
        var rotation: FileRotation?
        var size = 0

        func appendLine(_ e: borrowing Exchange, to out: inout [UInt8], clock: inout LogClock) {
            if let template { template.appendLine(e, to: &out, clock: &clock) } else { format.appendLine(e, to: &out, clock: &clock) }
        }
    }

    struct State {
        var pending: [Exchange] = []
        var scheduled = false
        var dropped = 0
    }

    private let state = Mutex(State())
    private let sinks: Mutex<[Sink]>
    private let queue = DispatchQueue(label: "proxima.access-log")
    /// Records waiting beyond this are dropped (and counted) rather than growing without bound.
    public let maxPending: Int
    /// How long a record may wait for others to be written with it.
    public let batchDelay: DispatchTimeInterval

    public enum OpenError: Error, CustomStringConvertible {
        case cannotOpen(String, Int32)
        public var description: String {
            switch self {
            case .cannotOpen(let path, let err): return "cannot open access log \(path): \(String(cString: strerror(err)))"
            }
        }
    }

    public convenience init(
        _ outputs: [(LogDestination, AccessLogLineFormat)], maxPending: Int = 100_000, batchDelay: DispatchTimeInterval = .milliseconds(50),
        syslogCapacity: Int = 10_000
    ) throws {
        try self.init(
            outputs: outputs.map { AccessLogOutput($0.0, $0.1) }, maxPending: maxPending, batchDelay: batchDelay, syslogCapacity: syslogCapacity)
    }

    public init(
        outputs: [AccessLogOutput], maxPending: Int = 100_000, batchDelay: DispatchTimeInterval = .milliseconds(50),
        syslogCapacity: Int = 10_000
    ) throws {
        var opened: [Sink] = []
        for output in outputs {
            let format = output.format
            switch output.destination {
            case .stdout: opened.append(Sink(fd: 1, ownsFD: false, format: format, template: output.template))
            case .syslog(let target, let facility):
                let sender = SyslogSender(target: target, capacity: syslogCapacity)
                opened.append(Sink(
                    fd: -1, ownsFD: false, format: format, template: output.template, syslog: (sender, SyslogFormatter(facility: facility))))
            case .file(let path):
                let (fd, size) = openLogFile(path)
                if fd < 0 {
                    let err = errno
                    for s in opened where s.ownsFD { systemClose(s.fd) }
                    throw OpenError.cannotOpen(path, err)
                }
                opened.append(Sink(
                    fd: fd, ownsFD: true, format: format, template: output.template, path: path, rotation: output.rotation, size: size))
            }
        }
        self.sinks = Mutex(opened)
        self.maxPending = maxPending
        self.batchDelay = batchDelay
    }

    /// Queues a record. Never blocks on I/O.
    public func record(_ exchange: consuming Exchange) {
        // Moved into the queue rather than copied: a copy retains each of its strings.
        var item: Exchange? = consume exchange
        let schedule: Bool = state.withLock { s in
            if s.pending.count >= maxPending {
                // The writer is stalled (a file on a hung disk): the oldest records go, a
                // slice at a time so that each record costs O(1), and are counted.
                guard maxPending > 0 else {
                    s.dropped += 1
                    return false
                }
                let drop = min(s.pending.count, max(1, maxPending / 16))
                s.pending.removeFirst(drop)
                s.dropped += drop
            }
            s.pending.append(item.take()!)
            if s.scheduled { return false }
            s.scheduled = true
            return true
        }
        // Waking the writer per record costs a context switch each; waiting a little gathers a batch.
        if schedule { queue.asyncAfter(deadline: .now() + batchDelay) { self.drain() } }
    }

    /// Records dropped so far: by this writer's queue, and by syslog senders whose server was
    /// too slow or unreachable for their bounded queues.
    public var droppedCount: Int {
        state.withLock { $0.dropped } + sinks.withLock { $0.reduce(0) { $0 + ($1.syslog?.sender.droppedCount ?? 0) } }
    }

    /// Writes what has accumulated, once: records arriving meanwhile schedule the next batch
    /// (after `batchDelay`), so a busy proxy wakes the writer a few times a second, not per record.
    private func drain() {
        let batch: [Exchange] = state.withLock { s in
            let b = s.pending
            s.pending = []
            s.scheduled = false
            return b
        }
        if batch.isEmpty { return }
        var clock = LogClock()
        sinks.withLock { sinks in
            for index in sinks.indices {
                let sink = sinks[index]
                if let (sender, formatter) = sink.syslog {
                    var messages: [[UInt8]] = []
                    messages.reserveCapacity(batch.count)
                    var line: [UInt8] = []
                    for i in batch.indices {
                        line.removeAll(keepingCapacity: true)
                        sink.appendLine(batch[i], to: &line, clock: &clock)
                        messages.append(formatter.message(
                            line: line.dropLast(), seconds: batch[i].startSeconds, nanoseconds: batch[i].startNanoseconds, clock: &clock))
                    }
                    sender.enqueue(messages)
                    continue
                }
                var bytes: [UInt8] = []
                bytes.reserveCapacity(batch.count * 160)
                for i in batch.indices { sink.appendLine(batch[i], to: &bytes, clock: &clock) }
                if let rotation = sink.rotation, let path = sink.path, sink.size > 0, sink.size + bytes.count > rotation.maxBytes {
                    rotate(path, keep: rotation.keep)
                    reopen(&sinks[index])
                }
                writeAll(sinks[index].fd, bytes)
                sinks[index].size += bytes.count
            }
        }
    }

    /// Reopens every file sink at its path (after logrotate moved the files away: SIGUSR1).
    /// Records written meanwhile went to the old file, which is what logrotate expects.
    public func reopenFiles() {
        queue.sync {
            sinks.withLock { sinks in
                for i in sinks.indices where sinks[i].path != nil { reopen(&sinks[i]) }
            }
        }
    }

    private func reopen(_ sink: inout Sink) {
        guard let path = sink.path else { return }
        let (fd, size) = openLogFile(path)
        // If the new file cannot be opened, keep writing to the old one rather than lose lines.
        guard fd >= 0 else { return }
        systemClose(sink.fd)
        sink.fd = fd
        sink.size = size
    }

    /// Writes everything queued so far before returning (used at shutdown and by tests).
    public func flush() {
        queue.sync { self.drain() }
        for s in sinks.withLock({ $0.compactMap { $0.syslog?.sender } }) { s.flush() }
    }

    public func shutdown() {
        flush()
        let senders = sinks.withLock { sinks -> [SyslogSender] in
            for s in sinks where s.ownsFD { systemClose(s.fd) }
            defer { sinks.removeAll() }
            return sinks.compactMap { $0.syslog?.sender }
        }
        for s in senders { s.shutdown() }
    }
}

/// Opens (creating) a log file for appending; its descriptor and current size.
func openLogFile(_ path: String) -> (Int32, Int) {
    let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
    guard fd >= 0 else { return (-1, 0) }
    var st = stat()
    return (fd, fstat(fd, &st) == 0 ? Int(st.st_size) : 0)
}

/// `path.N` → `path.N+1` from the oldest kept down, then `path` → `path.1`; the oldest beyond
/// `keep` is removed.
func rotate(_ path: String, keep: Int) {
    guard keep > 0 else {
        unlink(path)
        return
    }
    unlink("\(path).\(keep)")
    if keep > 1 {
        for n in stride(from: keep - 1, through: 1, by: -1) { rename("\(path).\(n)", "\(path).\(n + 1)") }
    }
    rename(path, "\(path).1")
}

func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
    bytes.withUnsafeBytes { buf in
        var offset = 0
        while offset < buf.count {
            let n = write(fd, buf.baseAddress! + offset, buf.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            offset += n
        }
    }
}

func systemClose(_ fd: Int32) {
    #if canImport(Glibc)
    _ = Glibc.close(fd)
    #else
    _ = Darwin.close(fd)
    #endif
}
