/// HTTP dates (RFC 9110 section 5.6.7): IMF-fixdate, and for receiving the obsolete RFC 850
/// and asctime forms too. Seconds since 1970, UTC. An unparseable date is nil (for `Expires`
/// that means "already expired", section 5.3 of RFC 9111).
public enum HTTPDate {
    static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let dayNames = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
    static let monthNames = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `now` (seconds since 1970) resolves RFC 850's two-digit years: a year that would be more
    /// than 50 years ahead is the most recent past year with those digits.
    public static func parse(_ text: String, now: Int = 0) -> Int? {
        let s = text.trimmingOWS()
        let words = s.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
        if words.count == 6, words[0].hasSuffix(","), words[5] == "GMT",
            let day = Int(words[1]), words[1].count == 2, let month = month(words[2]), let year = Int(words[3]), words[3].count == 4
        {
            return make(year, month, day, words[4])
        }
        // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"
        if words.count == 4, words[0].hasSuffix(","), words[3] == "GMT" {
            let parts = words[1].split(separator: "-").map(String.init)
            guard parts.count == 3, parts[0].count == 2, let day = Int(parts[0]), let month = month(parts[1]), parts[2].count == 2,
                let yy = Int(parts[2])
            else { return nil }
            let currentYear = civil(fromDays: now / 86400).year
            var year = currentYear / 100 * 100 + yy
            if year > currentYear + 50 { year -= 100 }
            return make(year, month, day, words[2])
        }
        // asctime: "Sun Nov  6 08:49:37 1994"
        if words.count == 5, let month = month(words[1]), let day = Int(words[2]), let year = Int(words[4]), words[4].count == 4 {
            return make(year, month, day, words[3])
        }
        return nil
    }

    /// IMF-fixdate.
    public static func format(_ seconds: Int) -> String {
        let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let rest = seconds - days * 86400
        let (y, m, d) = civil(fromDays: days)
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let weekday = dayNames[((days % 7) + 7) % 7]
        return "\(weekday), \(two(d)) \(monthNames[m - 1]) \(y) \(two(rest / 3600)):\(two(rest / 60 % 60)):\(two(rest % 60)) GMT"
    }

    static func month(_ s: String) -> Int? {
        months.firstIndex(of: s.lowercased()).map { $0 + 1 }
    }

    static func make(_ year: Int, _ month: Int, _ day: Int, _ time: String) -> Int? {
        let t = time.split(separator: ":")
        guard t.count == 3, t.allSatisfy({ $0.count == 2 }), let h = Int(t[0]), let m = Int(t[1]), let sec = Int(t[2]),
            (0...23).contains(h), (0...59).contains(m), (0...60).contains(sec), (1...31).contains(day), (1...12).contains(month)
        else { return nil }
        return days(fromCivil: year, month, day) * 86400 + h * 3600 + m * 60 + sec
    }

    /// Howard Hinnant's days-from-civil: days since 1970-01-01 in the proleptic Gregorian calendar.
    static func days(fromCivil year: Int, _ month: Int, _ day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }

    static func civil(fromDays z0: Int) -> (year: Int, month: Int, day: Int) {
        let z = z0 + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}
