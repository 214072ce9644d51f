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
    /// Host names with what the list says of them (the name itself and every subdomain): one
    /// table, so a lookup per label of the host answers all three questions.
    var rules: [String: Kind] = [:]

    struct Kind: OptionSet, Hashable, Sendable {
        let rawValue: UInt8
        static let blocked = Kind(rawValue: 1)
        /// Blocked even when an exception matches (`$important`).
        static let important = Kind(rawValue: 2)
        /// `@@||name^` exceptions.
        static let allowed = Kind(rawValue: 4)
    }

    var allowed: Set<String> { Set(rules.filter { $0.value.contains(.allowed) }.keys) }

    mutating func add(_ host: String, _ kind: Kind) { rules[host, default: []].insert(kind) }
    /// Lines not applied, by reason ("cosmetic (##)", "URL pattern", "option $third-party", ...).
    public private(set) var skipped: [String: Int] = [:]

    public var ruleCount: Int { rules.values.reduce(0) { $0 + $1.rawValue.nonzeroBitCount } }

    public static func == (a: BlockList, b: BlockList) -> Bool {
        a.name == b.name && a.source == b.source && a.format == b.format && a.rules == b.rules
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
            if let valid = Self.hostName(h) { add(valid, .blocked) } else { skip("not a host name") }
        }
    }

    mutating func addDomainLine(_ line: Substring) {
        if line.hasPrefix("#") || line.hasPrefix("!") { return }
        let entry = line.split(separator: "#", maxSplits: 1)[0].trimmingSpaces().lowercased()
        if let valid = Self.hostName(entry) { add(valid, .blocked) } else { skip("not a host name") }
    }

    mutating func addAdblockLine(_ line: Substring) {
        if line.hasPrefix("!") || line.hasPrefix("[") { return }
        if Self.isCosmetic(line) { return skip("cosmetic (##), not applied yet") }
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
        add(valid, exception ? .allowed : isImportant ? .important : .blocked)
    }

    /// `##`, `#@#`, `#?#`, `#$#`, `#%#`: element hiding and scriptlets. One pass over the bytes
    /// (Foundation's `contains` on substrings costs a bridge per call, 130k lines a list).
    static func isCosmetic(_ line: Substring) -> Bool {
        var previousHash = false
        for b in line.utf8 {
            if previousHash, b == UInt8(ascii: "#") || b == UInt8(ascii: "@") || b == UInt8(ascii: "?") || b == UInt8(ascii: "$") || b == UInt8(ascii: "%") {
                return true
            }
            previousHash = b == UInt8(ascii: "#")
        }
        return false
    }

    /// Lowercase host names only: letters, digits, '-', '.', '_' (some lists use it).
    static func hostName(_ s: String) -> String? {
        guard !s.isEmpty, s.utf8.count <= 253, !s.hasPrefix("."), !s.hasSuffix("."),
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
            if let kind = rules[key] {
                if important == nil, kind.contains(.important) { important = key }
                if blockedBy == nil, kind.contains(.blocked) { blockedBy = key }
                if allowedBy == nil, kind.contains(.allowed) { allowedBy = key }
            }
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

/// Several block lists compiled into one table, so a request costs one walk over its host's
/// labels whatever the number of lists (up to 64): per host name, a bit per list for "blocked",
/// "important" and "allowed".
public struct BlockListSet: Sendable, Equatable {
    public let lists: [BlockList]
    struct Masks: Sendable, Equatable {
        var blocked: UInt64 = 0
        var important: UInt64 = 0
        var allowed: UInt64 = 0
    }
    let index: [String: Masks]

    public static let maxLists = 64

    public init(_ lists: [BlockList]) {
        precondition(lists.count <= Self.maxLists, "at most \(Self.maxLists) block lists")
        self.lists = lists
        var index: [String: Masks] = [:]
        index.reserveCapacity(lists.reduce(0) { $0 + $1.rules.count })
        for (i, list) in lists.enumerated() {
            let bit = UInt64(1) << UInt64(i)
            for (host, kind) in list.rules {
                var m = index[host, default: Masks()]
                if kind.contains(.blocked) { m.blocked |= bit }
                if kind.contains(.important) { m.important |= bit }
                if kind.contains(.allowed) { m.allowed |= bit }
                index[host] = m
            }
        }
        self.index = index
    }

    public var isEmpty: Bool { lists.isEmpty }

    /// The first list (in configuration order) that blocks `host`, and its rule.
    public func match(host: String) -> (list: String, rule: String)? {
        guard !lists.isEmpty else { return nil }
        var blocked: UInt64 = 0
        var important: UInt64 = 0
        var allowed: UInt64 = 0
        var name = Substring(host.hasSuffix(".") ? String(host.dropLast()) : host)
        while true {
            if let m = index[String(name)] {
                blocked |= m.blocked
                important |= m.important
                allowed |= m.allowed
            }
            guard let dot = name.firstIndex(of: ".") else { break }
            name = name[name.index(after: dot)...]
        }
        let decisive = important | (blocked & ~allowed)
        guard decisive != 0 else { return nil }
        let list = lists[decisive.trailingZeroBitCount]
        // A hit is the rare case: the list itself names the rule.
        guard let rule = list.match(host: host) else { return nil }
        return (list.name, rule)
    }
}
