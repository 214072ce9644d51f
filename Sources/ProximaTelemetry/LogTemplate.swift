/// A custom access-log line, as nginx's `log_format`: text with `$field` or `${field}`
/// placeholders. Strings are escaped as nginx does by default (`"`, `\` and control bytes as
/// `\xXX`), so a client cannot forge a line or a field.
public struct LogTemplate: Sendable, Equatable {
    public enum Field: String, Sendable, CaseIterable {
        /// Start time: ISO 8601 UTC with milliseconds, common log format, Unix seconds.milliseconds.
        case time_iso8601, time_local, msec
        case duration_ms, client, listener, method, url, version, status, result
        case bytes_in, bytes_out, upstream, content_type, user, user_agent, referer, detail, request_id
    }

    enum Part: Sendable, Equatable {
        case text([UInt8])
        case field(Field)
    }

    public let source: String
    let parts: [Part]

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case unknownField(String)
        case unterminatedBrace
        case empty
        public var description: String {
            switch self {
            case .unknownField(let name):
                return "unknown field '$\(name)' (known: \(Field.allCases.map { "$" + $0.rawValue }.joined(separator: " ")))"
            case .unterminatedBrace: return "'${' without a closing '}'"
            case .empty: return "the template is empty"
            }
        }
    }

    public init(_ source: String) throws(ParseError) {
        self.source = source
        var parts: [Part] = []
        var text: [UInt8] = []
        let bytes = Array(source.utf8)
        var i = 0
        func isNameByte(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x5F }
        while i < bytes.count {
            guard bytes[i] == UInt8(ascii: "$"), i + 1 < bytes.count else {
                text.append(bytes[i])
                i += 1
                continue
            }
            var name: [UInt8]
            if bytes[i + 1] == UInt8(ascii: "{") {
                guard let close = bytes[(i + 2)...].firstIndex(of: UInt8(ascii: "}")) else { throw .unterminatedBrace }
                name = Array(bytes[(i + 2)..<close])
                i = close + 1
            } else {
                var j = i + 1
                while j < bytes.count, isNameByte(bytes[j]) { j += 1 }
                if j == i + 1 {
                    text.append(bytes[i])  // a lone '$' is text
                    i += 1
                    continue
                }
                name = Array(bytes[(i + 1)..<j])
                i = j
            }
            let nameText = String(decoding: name, as: UTF8.self)
            guard let field = Field(rawValue: nameText) else { throw .unknownField(nameText) }
            if !text.isEmpty {
                parts.append(.text(text))
                text = []
            }
            parts.append(.field(field))
        }
        if !text.isEmpty { parts.append(.text(text)) }
        if parts.isEmpty { throw .empty }
        self.parts = parts
    }

    public static func == (a: LogTemplate, b: LogTemplate) -> Bool { a.source == b.source }

    public func appendLine(_ e: borrowing Exchange, to out: inout [UInt8], clock: inout LogClock) {
        for part in parts {
            switch part {
            case .text(let t): out.append(contentsOf: t)
            case .field(let f): Self.append(f, of: e, to: &out, clock: &clock)
            }
        }
        out.append(UInt8(ascii: "\n"))
    }

    static func append(_ f: Field, of e: borrowing Exchange, to out: inout [UInt8], clock: inout LogClock) {
        switch f {
        case .time_iso8601: out.append(contentsOf: clock.iso8601(e.startSeconds, millis: e.startNanoseconds / 1_000_000).utf8)
        case .time_local: out.append(contentsOf: clock.clf(e.startSeconds).utf8)
        case .msec:
            AccessLogLineFormat.appendInt(e.startSeconds, to: &out)
            out.append(UInt8(ascii: "."))
            let ms = e.startNanoseconds / 1_000_000
            if ms < 100 { out.append(UInt8(ascii: "0")) }
            if ms < 10 { out.append(UInt8(ascii: "0")) }
            AccessLogLineFormat.appendInt(ms, to: &out)
        case .duration_ms: out.append(contentsOf: String(Double(e.durationNanoseconds / 1000) / 1000).utf8)
        case .client: escaped(e.client, to: &out)
        case .listener: escaped(e.listener, to: &out)
        case .method: escaped(e.method, to: &out)
        case .url: escaped(e.url, to: &out)
        case .version: escaped(e.version, to: &out)
        case .status: AccessLogLineFormat.appendInt(e.status, to: &out)
        case .result: out.append(contentsOf: e.result.rawValue.utf8)
        case .bytes_in: AccessLogLineFormat.appendInt(e.bytesIn, to: &out)
        case .bytes_out: AccessLogLineFormat.appendInt(e.bytesOut, to: &out)
        case .upstream: escaped(e.upstream, to: &out)
        case .content_type: escaped(e.contentType, to: &out)
        case .user: escaped(e.user, to: &out)
        case .user_agent: escaped(e.userAgent, to: &out)
        case .referer: escaped(e.referer, to: &out)
        case .detail: escaped(e.detail, to: &out)
        case .request_id: escaped(e.requestID, to: &out)
        }
    }

    /// `-` for a missing value, as nginx writes.
    static func escaped(_ v: String?, to out: inout [UInt8]) {
        guard let v else { return out.append(UInt8(ascii: "-")) }
        let hex: StaticString = "0123456789ABCDEF"
        for b in v.utf8 {
            if b < 0x20 || b == 0x7F || b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") {
                out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "x"), hex.utf8Start[Int(b >> 4)], hex.utf8Start[Int(b & 0xF)]])
            } else {
                out.append(b)
            }
        }
    }
}
