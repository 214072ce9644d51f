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

/// Writes access-log records off the event loops: `record` only appends to a queue under a
/// lock; a serial dispatch queue formats and writes whatever accumulated, one `write` per
/// batch and sink.
public final class AccessLogWriter: Sendable {
    struct Sink {
        var fd: Int32
        var ownsFD: Bool
        var format: AccessLogLineFormat
        /// For syslog sinks: the sender (with its own queue and thread) and the framing.
        var syslog: (sender: SyslogSender, formatter: SyslogFormatter)?
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

    public init(
        _ outputs: [(LogDestination, AccessLogLineFormat)], maxPending: Int = 100_000, batchDelay: DispatchTimeInterval = .milliseconds(50),
        syslogCapacity: Int = 10_000
    ) throws {
        var opened: [Sink] = []
        for (dest, format) in outputs {
            switch dest {
            case .stdout: opened.append(Sink(fd: 1, ownsFD: false, format: format))
            case .syslog(let target, let facility):
                let sender = SyslogSender(target: target, capacity: syslogCapacity)
                opened.append(Sink(fd: -1, ownsFD: false, format: format, syslog: (sender, SyslogFormatter(facility: facility))))
            case .file(let path):
                let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
                if fd < 0 {
                    let err = errno
                    for s in opened where s.ownsFD { systemClose(s.fd) }
                    throw OpenError.cannotOpen(path, err)
                }
                opened.append(Sink(fd: fd, ownsFD: true, format: format))
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
                s.dropped += 1
                return false
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
            for sink in sinks {
                if let (sender, formatter) = sink.syslog {
                    var messages: [[UInt8]] = []
                    messages.reserveCapacity(batch.count)
                    var line: [UInt8] = []
                    for i in batch.indices {
                        line.removeAll(keepingCapacity: true)
                        sink.format.appendLine(batch[i], to: &line, clock: &clock)
                        messages.append(formatter.message(
                            line: line.dropLast(), seconds: batch[i].startSeconds, nanoseconds: batch[i].startNanoseconds, clock: &clock))
                    }
                    sender.enqueue(messages)
                    continue
                }
                var bytes: [UInt8] = []
                bytes.reserveCapacity(batch.count * 160)
                for i in batch.indices { sink.format.appendLine(batch[i], to: &bytes, clock: &clock) }
                writeAll(sink.fd, bytes)
            }
        }
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
