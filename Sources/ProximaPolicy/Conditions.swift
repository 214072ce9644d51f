import Foundation

/// A regular expression on URLs or header values (Swift's Regex syntax, which accepts the
/// usual PCRE-style patterns). Compared by its source text.
public struct URLPattern: Sendable, Equatable, CustomStringConvertible {
    public let source: String
    nonisolated(unsafe) let regex: Regex<AnyRegexOutput>

    public init(_ source: String) throws {
        self.source = source
        self.regex = try Regex(source)
    }

    public func matches(_ text: String) -> Bool { (try? regex.firstMatch(in: text)) != nil }

    public static func == (a: URLPattern, b: URLPattern) -> Bool { a.source == b.source }
    public var description: String { source }
}

/// A request header that must be present, and match `pattern` when one is given.
public struct HeaderCondition: Sendable, Equatable {
    /// Lowercase field name.
    public var name: String
    public var pattern: URLPattern?

    public init(name: String, pattern: URLPattern? = nil) {
        self.name = name.lowercased()
        self.pattern = pattern
    }
}

/// Days of the week and a time of day, in a time zone (Squid's `time` ACL): `09:00-17:30` on
/// weekdays; a window whose end is before its start runs over midnight into the next day.
public struct TimeWindow: Sendable, Equatable {
    /// 0 = Sunday ... 6 = Saturday.
    public var days: Set<Int>
    /// Minutes after midnight; `end` is exclusive.
    public var start: Int
    public var end: Int
    public var zone: String
    /// Resolved once here: looking the zone up by name on every request would cost a Foundation
    /// lookup and an allocation each time.
    let timeZone: TimeZone

    public static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    public enum ParseError: Error, Equatable { case hours, day(String), zone(String) }

    public init(days: Set<Int>, start: Int, end: Int, zone: String) throws(ParseError) {
        guard let tz = TimeZone(identifier: zone) else { throw .zone(zone) }
        self.timeZone = tz
        self.days = days
        self.start = start
        self.end = end
        self.zone = zone
    }

    /// `HH:MM-HH:MM` (24-hour clock; `24:00` allowed as an end).
    public static func parseHours(_ text: String) -> (Int, Int)? {
        let parts = text.split(separator: "-", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count == 2, let a = minutes(parts[0]), let b = minutes(parts[1]), a != b, a < 1440 else { return nil }
        return (a, b)
    }

    static func minutes(_ hhmm: String) -> Int? {
        let p = hhmm.split(separator: ":")
        guard p.count == 2, p[1].count == 2, let h = Int(p[0]), let m = Int(p[1]), (0...24).contains(h), (0...59).contains(m) else { return nil }
        let total = h * 60 + m
        return total <= 1440 ? total : nil
    }

    public static func parseDay(_ name: String) -> Int? { dayNames.firstIndex(of: String(name.lowercased().prefix(3))) }

    public func contains(unixSeconds: Int) -> Bool {
        let local = unixSeconds + timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(unixSeconds)))
        let days1970 = Int((Double(local) / 86400).rounded(.down))
        let weekday = ((days1970 + 4) % 7 + 7) % 7  // 1970-01-01 was a Thursday
        let minute = (local - days1970 * 86400) / 60
        if start < end { return days.contains(weekday) && minute >= start && minute < end }
        // Over midnight: the evening part belongs to the listed day, the morning part to the
        // day after it.
        if minute >= start { return days.contains(weekday) }
        return minute < end && days.contains((weekday + 6) % 7)
    }
}
