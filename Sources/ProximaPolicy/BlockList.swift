/// A block list in one of the formats people already have, reduced to what can be decided from
/// the host name: hosts files (`0.0.0.0 ads.example`), plain domain lists, and the host rules
/// of Adblock Plus / uBlock Origin lists (`||ads.example^`, with `$important`, `$all`,
/// `$document`, and `@@` exceptions). Other lines are counted by kind and reported, never fatal.
public struct BlockList: Sendable, Equatable {
    public enum Format: String, Sendable, CaseIterable {
        case adblock, hosts, domains
    }

    public let name: String
    /// Where the rules came from (a file path), for messages and /config.
    public let source: String
    public let format: Format
    /// Blocked host names: the name itself and every subdomain.
    var blocked: Set<String> = []
    /// Blocked even when an exception matches (`$important`).
    var important: Set<String> = []
    /// `@@||name^` exceptions.
    var allowed: Set<String> = []
    /// Lines not applied, by reason ("cosmetic (##)", "URL pattern", "option $third-party", ...).
    public private(set) var skipped: [String: Int] = [:]

    public var ruleCount: Int { blocked.count + important.count + allowed.count }

    public static func == (a: BlockList, b: BlockList) -> Bool {
        a.name == b.name && a.source == b.source && a.format == b.format && a.blocked == b.blocked
            && a.important == b.important && a.allowed == b.allowed
    }

    public init(name: String, source: String, format: Format, text: String) {
        self.name = name
        self.source = source
        self.format = format
        for raw in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let line = raw.trimmingSpaces()
            if line.isEmpty { continue }
            switch format {
            case .hosts: addHostsLine(line)
            case .domains: addDomainLine(line)
            case .adblock: addAdblockLine(line)
            }
        }
    }

    mutating func skip(_ reason: String) { skipped[reason, default: 0] += 1 }

    mutating func addHostsLine(_ line: Substring) {
        if line.hasPrefix("#") { return }
        let fields = line.split(separator: "#", maxSplits: 1)[0].split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard fields.count >= 2 else { return skip("not 'address host'") }
        for host in fields.dropFirst() {
            let h = host.lowercased()
            if ["localhost", "localhost.localdomain", "local", "broadcasthost", "ip6-localhost", "ip6-loopback", "0.0.0.0"].contains(h) { continue }
            if let valid = Self.hostName(h) { blocked.insert(valid) } else { skip("not a host name") }
        }
    }

    mutating func addDomainLine(_ line: Substring) {
        if line.hasPrefix("#") || line.hasPrefix("!") { return }
        let entry = line.split(separator: "#", maxSplits: 1)[0].trimmingSpaces().lowercased()
        if let valid = Self.hostName(entry) { blocked.insert(valid) } else { skip("not a host name") }
    }

    mutating func addAdblockLine(_ line: Substring) {
        if line.hasPrefix("!") || line.hasPrefix("[") { return }
        if line.contains("##") || line.contains("#@#") || line.contains("#?#") || line.contains("#$#") || line.contains("#%#") {
            return skip("cosmetic (##), not applied yet")
        }
        var rule = line
        var exception = false
        if rule.hasPrefix("@@") {
            exception = true
            rule = rule.dropFirst(2)
        }
        var options: [Substring] = []
        if let dollar = rule.lastIndex(of: "$"), !rule.hasPrefix("/") {
            options = rule[rule.index(after: dollar)...].split(separator: ",")
            rule = rule[..<dollar]
        }
        let host: Substring
        if rule.hasPrefix("||"), rule.hasSuffix("^") {
            host = rule.dropFirst(2).dropLast()
        } else if rule.contains("."), Self.hostName(rule.lowercased()) != nil {
            // A bare host name is read as ||name^, as uBlock Origin does (URLhaus lists are
            // written that way).
            host = rule
        } else {
            return skip(rule.hasPrefix("/") && rule.hasSuffix("/") ? "regular expression" : "URL pattern")
        }
        guard let valid = Self.hostName(host.lowercased()) else { return skip("URL pattern") }
        var isImportant = false
        for option in options {
            switch option.lowercased() {
            case "important": isImportant = true
            // Options that mean "every request to this host": what a host decision honours.
            case "all", "document", "doc": break
            // Anything narrower (resource types, third-party, domain=) would over-block if
            // applied to the whole host: left for the full filter engine, and counted.
            default: return skip("option $\(option.split(separator: "=")[0])")
            }
        }
        if exception { allowed.insert(valid) } else if isImportant { important.insert(valid) } else { blocked.insert(valid) }
    }

    /// Lowercase host names only: letters, digits, '-', '.', '_' (some lists use it).
    static func hostName(_ s: String) -> String? {
        guard !s.isEmpty, s.count <= 253, !s.hasPrefix("."), !s.hasSuffix("."),
            s.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x2E || $0 == 0x5F })
        else { return nil }
        return s
    }

    /// The rule that blocks `host` (itself or a parent domain), if any, honouring exceptions.
    public func match(host: String) -> String? {
        var important: String?
        var blockedBy: String?
        var allowedBy: String?
        var name = Substring(host.hasSuffix(".") ? String(host.dropLast()) : host)
        while true {
            let key = String(name)
            if important == nil, self.important.contains(key) { important = key }
            if blockedBy == nil, blocked.contains(key) { blockedBy = key }
            if allowedBy == nil, allowed.contains(key) { allowedBy = key }
            guard let dot = name.firstIndex(of: ".") else { break }
            name = name[name.index(after: dot)...]
        }
        if let important { return ruleText(important, important: true) }
        if allowedBy != nil { return nil }
        return blockedBy.map { ruleText($0, important: false) }
    }

    func ruleText(_ host: String, important: Bool) -> String {
        switch format {
        case .adblock: return "||\(host)^" + (important ? "$important" : "")
        case .hosts, .domains: return host
        }
    }
}

extension Substring {
    func trimmingSpaces() -> Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}
