/// A time span from the configuration (`10s`, `500ms`, `5m`, `1h`, `1d`; a bare number is
/// seconds, as in nginx).
public struct TimeSpan: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }
    public static func seconds(_ s: Int64) -> TimeSpan { TimeSpan(nanoseconds: s * 1_000_000_000) }
    public static func milliseconds(_ ms: Int64) -> TimeSpan { TimeSpan(nanoseconds: ms * 1_000_000) }

    public static func < (a: TimeSpan, b: TimeSpan) -> Bool { a.nanoseconds < b.nanoseconds }

    public static func parse(_ text: String) -> TimeSpan? {
        let t = text.trimmingCharacters(in: " ")
        let digits = t.prefix(while: { $0.isASCII && $0.isNumber })
        guard !digits.isEmpty, digits.count <= 12, let n = Int64(digits) else { return nil }
        let unit = t.dropFirst(digits.count)
        let factor: Int64
        switch unit {
        case "", "s": factor = 1_000_000_000
        case "ms": factor = 1_000_000
        case "m": factor = 60_000_000_000
        case "h": factor = 3_600_000_000_000
        case "d": factor = 86_400_000_000_000
        default: return nil
        }
        let (v, overflow) = n.multipliedReportingOverflow(by: factor)
        return overflow ? nil : TimeSpan(nanoseconds: v)
    }

    public var description: String {
        let ms = nanoseconds / 1_000_000
        if ms % 1000 != 0 { return "\(ms)ms" }
        let s = ms / 1000
        if s != 0, s % 3600 == 0 { return "\(s / 3600)h" }
        if s != 0, s % 60 == 0 { return "\(s / 60)m" }
        return "\(s)s"
    }

}

/// A byte count from the configuration: `64KiB`, `8MiB`, `1GiB` (binary), `10KB`, `5MB`
/// (decimal), `8k`/`8m`/`1g` (binary, as nginx), or a bare number of bytes.
public struct ByteSize: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var bytes: Int

    public init(bytes: Int) { self.bytes = bytes }
    public static func < (a: ByteSize, b: ByteSize) -> Bool { a.bytes < b.bytes }

    public static func parse(_ text: String) -> ByteSize? {
        let t = text.trimmingCharacters(in: " ")
        let digits = t.prefix(while: { $0.isASCII && $0.isNumber })
        guard !digits.isEmpty, digits.count <= 15, let n = Int(digits) else { return nil }
        let unit = t.dropFirst(digits.count).trimmingCharacters(in: " ")
        let factor: Int
        switch unit {
        case "", "B", "b": factor = 1
        case "KiB", "k", "K": factor = 1 << 10
        case "MiB", "m", "M": factor = 1 << 20
        case "GiB", "g", "G": factor = 1 << 30
        case "KB", "kB": factor = 1000
        case "MB": factor = 1_000_000
        case "GB": factor = 1_000_000_000
        default: return nil
        }
        let (v, overflow) = n.multipliedReportingOverflow(by: factor)
        return overflow ? nil : ByteSize(bytes: v)
    }

    public var description: String {
        if bytes != 0, bytes % (1 << 30) == 0 { return "\(bytes >> 30)GiB" }
        if bytes != 0, bytes % (1 << 20) == 0 { return "\(bytes >> 20)MiB" }
        if bytes != 0, bytes % (1 << 10) == 0 { return "\(bytes >> 10)KiB" }
        return "\(bytes)B"
    }

}

/// A listening address: `127.0.0.1:3128`, `[::1]:3128`, `0.0.0.0:8080`. Port 0 asks the
/// system for a free port (used by tests).
public struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public enum Failure: Error, Equatable { case syntax, portOutOfRange(String) }

    public static func parse(_ text: String) -> Result<ListenAddress, Failure> {
        var host: Substring
        var port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return .failure(.syntax) }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return .failure(.syntax) }
            port = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else { return .failure(.syntax) }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, !port.isEmpty, port.allSatisfy({ $0.isASCII && $0.isNumber }) else { return .failure(.syntax) }
        guard port.count <= 6, let p = Int(port), p <= 65535 else { return .failure(.portOutOfRange(String(port))) }
        return .success(ListenAddress(host: String(host), port: p))
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

}

extension StringProtocol {
    func trimmingCharacters(in set: Character) -> String {
        var s = Substring(self)
        while s.first == set { s = s.dropFirst() }
        while s.last == set { s = s.dropLast() }
        return String(s)
    }
}
