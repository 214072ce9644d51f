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
    /// The rules that need more than the host name: URL patterns, regular expressions, rules
    /// with type, party or page-domain options.
    var network: [NetworkFilter] = []
    /// Rules switched off by `$badfilter` lines (their text without that option).
    var badfilters: Set<String> = []
    /// Element-hiding rules (`##`, `#@#`).
    public internal(set) var cosmetic: [CosmeticRule] = []
    /// Sites where `@@…$generichide` or `$elemhide` turns element hiding (partly) off.
    var cosmeticExceptions: [String: Set<CosmeticRule.Exemption>] = [:]
    /// Lines not applied, by reason ("cosmetic (##)", "URL pattern", "option $third-party", ...).
    public private(set) var skipped: [String: Int] = [:]

    public var hostRuleCount: Int { rules.values.reduce(0) { $0 + $1.rawValue.nonzeroBitCount } }
    public var networkRuleCount: Int { network.count }
    public var cosmeticRuleCount: Int { cosmetic.count }
    public var ruleCount: Int { hostRuleCount + networkRuleCount + cosmeticRuleCount }

    public static func == (a: BlockList, b: BlockList) -> Bool {
        a.name == b.name && a.source == b.source && a.format == b.format && a.rules == b.rules && a.network == b.network
            && a.cosmetic == b.cosmetic
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
        if !badfilters.isEmpty {
            let before = network.count
            network.removeAll { badfilters.contains($0.text) }
            skipped["disabled by $badfilter", default: 0] += before - network.count
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
        if let separator = Self.cosmeticSeparator(line) { return addCosmetic(line, separator) }
        // Most lines of every list are `||host^`: taken without the general parser.
        let u = line.utf8
        if u.count > 3, u.first == UInt8(ascii: "|"), u.last == UInt8(ascii: "^"), line.hasPrefix("||") {
            let host = u.dropFirst(2).dropLast()
            if host.allSatisfy(Self.isHostByte), host.first != UInt8(ascii: "."), host.last != UInt8(ascii: ".") {
                return add(String(decoding: host, as: UTF8.self), .blocked)
            }
        }
        var rule = line
        // A bare host name is read as ||name^, as uBlock Origin does (URLhaus lists are
        // written that way).
        if u.first != UInt8(ascii: "@"), !u.contains(UInt8(ascii: "$")), u.contains(UInt8(ascii: ".")), let host = Self.hostName(rule.lowercased()) {
            rule = Substring("||\(host)^")
        }
        switch NetworkFilter.parse(rule) {
        case .skipped(let reason): skip(reason)
        case .badfilter(let text): badfilters.insert(text)
        case .cosmeticException(let hosts, let generic):
            for host in hosts { cosmeticExceptions[host, default: []].insert(generic ? .generic : .all) }
        case .network(let filter):
            if let host = filter.hostOnlyName, filter.types == .all, filter.party == .any, !filter.matchCase,
                filter.includeDomains.isEmpty, filter.excludeDomains.isEmpty
            {
                add(host, filter.exception ? .allowed : filter.important ? .important : .blocked)
            } else {
                network.append(filter)
            }
        }
    }

    /// Where a cosmetic rule's `##`, `#@#`, `#?#`, `#$#`, `#%#` (and their `@` forms) is, if
    /// the line is one. One pass over the bytes (Foundation's `range(of:)` on substrings costs a
    /// bridge per call, 130k lines a list).
    static func cosmeticSeparator(_ line: Substring) -> (String.Index, String.Index)? {
        let u = line.utf8
        var i = u.startIndex
        while i != u.endIndex {
            if u[i] == UInt8(ascii: "#") {
                var j = u.index(after: i)
                if j != u.endIndex, u[j] == UInt8(ascii: "@") { j = u.index(after: j) }
                if j != u.endIndex, [UInt8(ascii: "?"), UInt8(ascii: "$"), UInt8(ascii: "%")].contains(u[j]) { j = u.index(after: j) }
                if j != u.endIndex, u[j] == UInt8(ascii: "#") { return (i, u.index(after: j)) }
            }
            i = u.index(after: i)
        }
        return nil
    }

    mutating func addCosmetic(_ line: Substring, _ separator: (String.Index, String.Index)) {
        let marker = line[separator.0..<separator.1]
        let selector = line[separator.1...].trimmingSpaces()
        guard marker == "##" || marker == "#@#" else {
            return skip(marker.contains("%") || marker.contains("$") ? "scriptlet or style injection (\(marker))" : "procedural cosmetic (\(marker))")
        }
        switch CosmeticRule.parse(domains: line[..<separator.0], selector: selector, exception: marker == "#@#") {
        case .success(let rule): cosmetic.append(rule)
        case .failure(let reason): skip(reason.text)
        }
    }

    static func isHostByte(_ b: UInt8) -> Bool {
        (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x2D || b == 0x2E || b == 0x5F
    }

    /// Lowercase host names only: letters, digits, '-', '.', '_' (some lists use it), no empty
    /// label and no label that starts or ends with '-' (`-ad-banner.` is a URL pattern).
    static func hostName(_ s: String) -> String? {
        guard !s.isEmpty, s.utf8.count <= 253, s.utf8.allSatisfy(isHostByte) else { return nil }
        for label in s.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            guard let first = label.first, let last = label.last, first != 0x2D, last != 0x2D else { return nil }
        }
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

/// Several block lists compiled together (see `FilterEngine`): a request costs one walk over
/// its host's labels and its URL's tokens whatever the number of lists (up to 64).
public struct BlockListSet: Sendable, Equatable {
    public let lists: [BlockList]
    let engine: FilterEngine
    /// The element-hiding rules of all the lists.
    public let cosmetics: CosmeticFilter

    public static let maxLists = 64

    public init(_ lists: [BlockList]) {
        precondition(lists.count <= Self.maxLists, "at most \(Self.maxLists) block lists")
        self.lists = lists
        self.engine = FilterEngine(lists)
        self.cosmetics = CosmeticFilter(lists)
    }

    public static func == (a: BlockListSet, b: BlockListSet) -> Bool { a.lists == b.lists }

    public var isEmpty: Bool { lists.isEmpty }

    /// How the rules were filed (for benchmarks and tuning): rules tried for every URL, and the
    /// largest buckets with their sizes.
    public var indexStatistics: String {
        func describe(_ index: TokenIndex) -> String {
            let largest = index.slots.filter { $0.count > 0 }.sorted { $0.count > $1.count }.prefix(8)
            let samples = largest.map { slot -> String in "\(slot.count) e.g. \(engine.texts[Int(index.ids[Int(slot.start)])])" }
            return "untokenized \(index.untokenized.count) (e.g. \(index.untokenized.prefix(5).map { engine.texts[Int($0)] })), buckets \(index.bucketCount), largest: \(samples)"
        }
        let common = ["https", "http", "www", "com", "js", "net", "static", "api", "me", "de", "org"].map { name -> String in
            let n = engine.blocking.bucket(TokenIndex.hash(Array(name.utf8))).map { $0.1 } ?? 0
            return "\(name): \(n)"
        }
        return "blocking: \(describe(engine.blocking))\nexceptions: \(describe(engine.exceptions))\ncommon tokens: \(common)"
    }

    /// The URL's tokens and how many rules each would have tried (for tuning).
    public func candidates(url: String) -> [(String, Int)] {
        let bytes = Array(url.lowercased().utf8)
        var result: [(String, Int)] = []
        var from = 0
        while let range = NetworkFilter.nextToken(in: bytes, from: from) {
            from = range.upperBound
            let token = Array(bytes[range])
            result.append((String(decoding: token, as: UTF8.self), engine.blocking.bucket(TokenIndex.hash(token))?.1 ?? 0))
        }
        return result + [("(untokenized)", engine.blocking.untokenized.count)]
    }

    /// The first list (in configuration order) that blocks the request, and its rule.
    public func match(_ request: FilterRequest) -> (list: String, rule: String)? {
        guard !lists.isEmpty, let (list, rule) = engine.match(request, lists: lists) else { return nil }
        return (lists[list].name, rule)
    }

    /// A CONNECT tunnel: only the host is known, and the tunnel may carry the page itself, so
    /// rules for documents apply as well as rules without a type.
    public func match(host: String, port: Int = 443) -> (list: String, rule: String)? {
        let authority = host.contains(":") ? "[\(host)]" : host
        let url = port == 443 ? "https://\(authority)/" : "https://\(authority):\(port)/"
        return match(FilterRequest(url: url, host: host, type: [.document, .other]))
    }
}
