/// Turns Exchanges into access-log lines.
public enum AccessLogLineFormat: String, Sendable, CaseIterable {
    /// Squid's native format: `time elapsed client code/status bytes method URL user hierarchy/peer type`.
    case squid
    /// Apache/nginx combined format.
    case combined
    /// One JSON object per line.
    case json

    /// Appends one line and its newline to a batch buffer.
    public func appendLine(_ e: borrowing Exchange, to out: inout [UInt8], clock: inout LogClock) {
        switch self {
        case .squid: Self.appendSquid(e, to: &out)
        case .combined, .json: Self.appendUTF8(line(e, clock: &clock), to: &out)
        }
        out.append(UInt8(ascii: "\n"))
    }

    public func line(_ e: Exchange, clock: inout LogClock) -> String {
        switch self {
        case .squid: return Self.squidLine(e)
        case .combined: return Self.combinedLine(e, clock: &clock)
        case .json: return Self.jsonLine(e, clock: &clock)
        }
    }

    static func squidLine(_ e: Exchange) -> String {
        var bytes: [UInt8] = []
        appendSquid(e, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Squid's line written straight into bytes: the busiest format, so no intermediate Strings
    /// (string interpolation of integers alone costs a dynamic protocol check per value).
    static func appendSquid(_ e: Exchange, to out: inout [UInt8]) {
        appendInt(e.startSeconds, to: &out)
        out.append(UInt8(ascii: "."))
        let ms = e.startNanoseconds / 1_000_000
        if ms < 100 { out.append(UInt8(ascii: "0")) }
        if ms < 10 { out.append(UInt8(ascii: "0")) }
        appendInt(ms, to: &out)
        out.append(0x20)
        let elapsed = Int(e.durationNanoseconds / 1_000_000)
        var width = 1
        var t = elapsed
        while t >= 10 { t /= 10; width += 1 }
        for _ in width..<6 { out.append(0x20) }
        appendInt(elapsed, to: &out)
        out.append(0x20)
        appendUTF8(e.client, to: &out)
        out.append(0x20)
        appendUTF8(e.result.rawValue, to: &out)
        out.append(UInt8(ascii: "/"))
        appendInt(e.status, to: &out)
        out.append(0x20)
        appendInt(e.bytesOut, to: &out)
        out.append(0x20)
        appendUTF8(e.method, to: &out)
        out.append(0x20)
        appendEncoded(e.url, to: &out)
        out.append(0x20)
        // Squid's fields are space-separated: spaces inside a field are encoded.
        if let user = e.user { appendEncoded(user, to: &out) } else { out.append(UInt8(ascii: "-")) }
        if let upstream = e.upstream {
            appendUTF8(" HIER_DIRECT/", to: &out)
            appendUTF8(upstream, to: &out)
        } else {
            appendUTF8(" HIER_NONE/-", to: &out)
        }
        out.append(0x20)
        if let type = e.contentType { appendEncoded(type, to: &out) } else { out.append(UInt8(ascii: "-")) }
    }

    static func appendInt(_ value: Int, to out: inout [UInt8]) {
        if value < 0 {
            out.append(UInt8(ascii: "-"))
            appendInt(-value, to: &out)
            return
        }
        if value < 10 {
            out.append(UInt8(truncatingIfNeeded: 0x30 + value))
            return
        }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = value
        var count = 0
        withUnsafeMutableBytes(of: &digits) { d in
            while n > 0 {
                d[count] = UInt8(truncatingIfNeeded: 0x30 + n % 10)
                n /= 10
                count += 1
            }
            for i in stride(from: count - 1, through: 0, by: -1) { out.append(d[i]) }
        }
    }

    /// A string's bytes with one copy (appending a `String.UTF8View` goes byte by byte).
    @inline(__always)
    static func appendUTF8(_ text: String, to out: inout [UInt8]) {
        let copied: Void? = text.utf8.withContiguousStorageIfAvailable { out.append(contentsOf: $0) }
        if copied == nil { out.append(contentsOf: text.utf8) }
    }

    /// Bytes at or below space (and DEL) as %XX, so one field stays one field.
    static func appendEncoded(_ text: String, to out: inout [UInt8]) {
        let clean: Bool? = text.utf8.withContiguousStorageIfAvailable { bytes in
            for b in bytes where b <= 0x20 || b == 0x7F { return false }
            out.append(contentsOf: bytes)
            return true
        }
        if clean == true { return }
        let hex: StaticString = "0123456789ABCDEF"
        for b in text.utf8 {
            if b <= 0x20 || b == 0x7F {
                out.append(UInt8(ascii: "%"))
                out.append(hex.utf8Start[Int(b >> 4)])
                out.append(hex.utf8Start[Int(b & 0xF)])
            } else {
                out.append(b)
            }
        }
    }

    static func combinedLine(_ e: Exchange, clock: inout LogClock) -> String {
        let t = clock.clf(e.startSeconds)
        let bytes = e.bytesOut == 0 ? "-" : String(e.bytesOut)
        return "\(e.client) - \(e.user ?? "-") [\(t)] \"\(escapeQuoted(e.method)) \(escapeQuoted(e.url)) \(e.version)\" \(e.status) \(bytes) \"\(escapeQuoted(e.referer ?? "-"))\" \"\(escapeQuoted(e.userAgent ?? "-"))\""
    }

    static func jsonLine(_ e: Exchange, clock: inout LogClock) -> String {
        var s = "{\"time\":\""
        s += clock.iso8601(e.startSeconds, millis: e.startNanoseconds / 1_000_000)
        s += "\",\"duration_ms\":" + String(Double(e.durationNanoseconds / 1000) / 1000)
        s += ",\"client\":" + jsonString(e.client)
        s += ",\"listener\":" + jsonString(e.listener)
        s += ",\"method\":" + jsonString(e.method)
        s += ",\"url\":" + jsonString(e.url)
        s += ",\"version\":" + jsonString(e.version)
        s += ",\"status\":" + String(e.status)
        s += ",\"result\":" + jsonString(e.result.rawValue)
        s += ",\"bytes_in\":" + String(e.bytesIn) + ",\"bytes_out\":" + String(e.bytesOut)
        s += ",\"upstream\":" + (e.upstream.map(jsonString) ?? "null")
        s += ",\"content_type\":" + (e.contentType.map(jsonString) ?? "null")
        s += ",\"user\":" + (e.user.map(jsonString) ?? "null")
        s += ",\"user_agent\":" + (e.userAgent.map(jsonString) ?? "null")
        s += ",\"referer\":" + (e.referer.map(jsonString) ?? "null")
        s += ",\"detail\":" + (e.detail.map(jsonString) ?? "null")
        s += ",\"request_id\":" + (e.requestID.map(jsonString) ?? "null")
        s += "}"
        return s
    }

    public static func jsonString(_ v: String) -> String {
        var out = "\""
        for u in v.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x7F {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }

    /// Quotes in combined-format fields are escaped, and control bytes too, so a client cannot
    /// forge log lines.
    static func escapeQuoted(_ v: String) -> String {
        guard v.utf8.contains(where: { $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 < 0x20 || $0 == 0x7F }) else { return v }
        var out = ""
        for u in v.unicodeScalars {
            if u == "\"" || u == "\\" {
                out += "\\" + String(u)
            } else if u.value < 0x20 || u.value == 0x7F {
                out += "\\x" + (u.value < 16 ? "0" : "") + String(u.value, radix: 16)
            } else {
                out.unicodeScalars.append(u)
            }
        }
        return out
    }
}

/// Formats timestamps, reusing the text while the second has not changed (log lines come in
/// bursts of the same second).
public struct LogClock: Sendable {
    var clfSecond = -1
    var clfText = ""
    var isoSecond = -1
    var isoText = ""

    public init() {}

    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `10/Oct/2000:13:55:36 +0000`
    public mutating func clf(_ seconds: Int) -> String {
        if seconds != clfSecond {
            let c = CivilTime(seconds)
            clfText = "\(two(c.day))/\(Self.months[c.month - 1])/\(c.year):\(two(c.hour)):\(two(c.minute)):\(two(c.second)) +0000"
            clfSecond = seconds
        }
        return clfText
    }

    /// `2000-10-10T13:55:36.123Z`
    public mutating func iso8601(_ seconds: Int, millis: Int) -> String {
        if seconds != isoSecond {
            let c = CivilTime(seconds)
            isoText = "\(c.year)-\(two(c.month))-\(two(c.day))T\(two(c.hour)):\(two(c.minute)):\(two(c.second))"
            isoSecond = seconds
        }
        let m = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return "\(isoText).\(m)Z"
    }

    func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
}

/// UTC calendar fields from Unix seconds (Howard Hinnant's civil-from-days algorithm), so
/// formatting needs neither Foundation nor the C library's locale-dependent functions.
public struct CivilTime: Equatable {
    public var year, month, day, hour, minute, second: Int

    public init(_ unixSeconds: Int) {
        let days = unixSeconds >= 0 ? unixSeconds / 86400 : (unixSeconds - 86399) / 86400
        let secs = unixSeconds - days * 86400
        hour = secs / 3600
        minute = secs % 3600 / 60
        second = secs % 60
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        day = doy - (153 * mp + 2) / 5 + 1
        month = mp < 10 ? mp + 3 : mp - 9
        year = yoe + era * 400 + (month <= 2 ? 1 : 0)
    }
}
