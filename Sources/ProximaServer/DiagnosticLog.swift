import Logging
import ProximaTelemetry

#if canImport(Glibc)
import Glibc
#endif

/// The server's own diagnostic log as JSON lines on stderr (for log collectors): time, level,
/// label, message, source and metadata, one object per line, written with a single `write`.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    let output: @Sendable (String) -> Void

    public init(label: String, output: @escaping @Sendable (String) -> Void = JSONLogHandler.standardError) {
        self.label = label
        self.output = output
    }

    public static let standardError: @Sendable (String) -> Void = { line in
        var l = line
        l.withUTF8 { buf in _ = write(2, buf.baseAddress, buf.count) }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { $1 } }
        if let extra = event.metadata { all.merge(extra) { $1 } }
        var (sec, nsec) = (0, 0)
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        (sec, nsec) = (Int(ts.tv_sec), Int(ts.tv_nsec))
        var clock = LogClock()
        var line = "{\"time\":\"" + clock.iso8601(sec, millis: nsec / 1_000_000) + "\""
        line += ",\"level\":\"\(event.level.rawValue)\",\"label\":" + AccessLogLineFormat.jsonString(label)
        line += ",\"message\":" + AccessLogLineFormat.jsonString(event.message.description)
        line += ",\"source\":" + AccessLogLineFormat.jsonString(event.source)
        for key in all.keys.sorted() {
            line += "," + AccessLogLineFormat.jsonString(key) + ":" + AccessLogLineFormat.jsonString(all[key]!.description)
        }
        output(line + "}\n")
    }
}
