/// One network rule of an Adblock Plus / uBlock Origin list, parsed: the URL pattern with its
/// anchors (`||`, `|`), wildcards (`*`) and separators (`^`), or a `/regular expression/`, and
/// the options that narrow it (`$third-party`, `$domain=`, resource types, `$important`).
struct NetworkFilter: Sendable, Equatable {
    enum Party: UInt8, Sendable { case any, first, third }

    /// The line as written, for logs and deny pages.
    var text: String
    var exception = false
    var important = false
    /// Lowercase unless `$match-case`; `*` and `^` keep their filter meaning.
    var pattern: [UInt8] = []
    /// `||`: the pattern starts at a label of the host name.
    var hostAnchored = false
    /// `|` at the start: the pattern starts at the start of the URL.
    var leftAnchored = false
    /// `|` at the end: the pattern ends at the end of the URL.
    var rightAnchored = false
    var regex: String?
    var matchCase = false
    var types: ResourceType = .allButDocument
    var party: Party = .any
    var includeDomains: [String] = []
    var excludeDomains: [String] = []

    /// `||host^` (or `||host`) with nothing after the host.
    var isHostOnly: Bool {
        guard hostAnchored, regex == nil else { return false }
        var body = pattern[...]
        if body.last == UInt8(ascii: "^") { body = body.dropLast() }
        return !body.isEmpty && body.allSatisfy { BlockList.isHostByte($0) }
    }

    var hostOnlyName: String? {
        guard isHostOnly else { return nil }
        let name = String(decoding: pattern.last == UInt8(ascii: "^") ? pattern.dropLast() : pattern[...], as: UTF8.self)
        return BlockList.hostName(name)
    }

    enum ParseOutcome {
        case network(NetworkFilter)
        /// `@@…$generichide` / `$elemhide`: turns cosmetic filtering off for pages.
        case cosmeticException(hosts: [String], generic: Bool)
        case badfilter(String)
        case skipped(String)
    }

    /// Options that change the answer into something other than block or allow, which a proxy
    /// cannot honour faithfully: the rule is left out rather than turned into a block.
    static let unsupportedOptions: Set<String> = [
        "csp", "rewrite", "removeparam", "queryprune", "header", "permissions", "replace", "urltransform",
        "redirect-rule", "method", "denyallow", "to", "cname", "inline-script", "inline-font", "strict1p",
        "strict3p", "strict-first-party", "strict-third-party", "sitekey", "genericblock", "urlblock", "content",
        "jsinject", "webrtc", "popunder", "uritransform", "ipaddress", "reason",
    ]

    static func parse(_ line: Substring) -> ParseOutcome {
        var filter = NetworkFilter(text: String(line))
        var rule = line
        if rule.hasPrefix("@@") {
            filter.exception = true
            rule = rule.dropFirst(2)
        }
        var options: [Substring] = []
        if rule.hasPrefix("/"), let close = rule.dropFirst().lastIndex(of: "/"), close > rule.startIndex {
            let after = rule[rule.index(after: close)...]
            if after.isEmpty || after.hasPrefix("$") {
                filter.regex = String(rule[rule.index(after: rule.startIndex)..<close])
                options = after.isEmpty ? [] : after.dropFirst().split(separator: ",")
                rule = ""
            }
        }
        if filter.regex == nil, let dollar = rule.lastIndex(of: "$") {
            options = rule[rule.index(after: dollar)...].split(separator: ",")
            rule = rule[..<dollar]
        }

        var positiveTypes: ResourceType = []
        var negativeTypes: ResourceType = []
        var popupOnly = false
        var cosmeticKind: (generic: Bool, set: Bool) = (false, false)
        var isBadfilter = false
        for raw in options {
            let option = raw.lowercased()
            var negated = false
            var name = Substring(option)
            if name.hasPrefix("~") {
                negated = true
                name = name.dropFirst()
            }
            let key = name.split(separator: "=", maxSplits: 1).first.map(String.init) ?? ""
            let value = name.split(separator: "=", maxSplits: 1).dropFirst().first
            switch key {
            case "important": filter.important = true
            case "match-case": filter.matchCase = true
            case "third-party", "3p": filter.party = negated ? .first : .third
            case "first-party", "1p": filter.party = negated ? .third : .first
            case "all": positiveTypes = .all
            case "domain", "from":
                guard let value else { return .skipped("option $domain without domains") }
                for d in value.split(separator: "|") {
                    if d.hasPrefix("~") {
                        filter.excludeDomains.append(String(d.dropFirst()))
                    } else {
                        filter.includeDomains.append(String(d))
                    }
                }
            case "popup":
                if !negated { popupOnly = true }
            case "generichide", "ghide", "elemhide", "ehide", "specifichide", "shide":
                cosmeticKind = (key.hasPrefix("g"), true)
            case "badfilter": isBadfilter = true
            // uBlock Origin's redirects still block: the proxy answers with its own empty reply.
            case "redirect", "empty", "mp4": break
            default:
                if let type = ResourceType.byOptionName[key] {
                    if negated { negativeTypes.formUnion(type) } else { positiveTypes.formUnion(type) }
                } else if unsupportedOptions.contains(key) {
                    return .skipped("option $\(key)")
                } else {
                    return .skipped("unknown option $\(key)")
                }
            }
        }
        if isBadfilter {
            let kept = options.filter { $0.lowercased() != "badfilter" }
            return .badfilter(String((filter.exception ? "@@" : "") + (filter.regex.map { "/\($0)/" } ?? String(rule))) + (kept.isEmpty ? "" : "$" + kept.joined(separator: ",")))
        }
        if cosmeticKind.set {
            guard filter.exception else { return .skipped("option $\(cosmeticKind.generic ? "generichide" : "elemhide") on a blocking rule") }
            var hosts = filter.includeDomains
            if let host = hostFromAnchoredRule(rule) { hosts.append(host) }
            guard !hosts.isEmpty else { return .skipped("option $generichide without a host") }
            return .cosmeticException(hosts: hosts.map { $0.lowercased() }, generic: cosmeticKind.generic)
        }
        if popupOnly && positiveTypes.isEmpty { return .skipped("option $popup") }

        if !positiveTypes.isEmpty {
            filter.types = positiveTypes.subtracting(negativeTypes)
        } else if !negativeTypes.isEmpty {
            filter.types = ResourceType.allButDocument.subtracting(negativeTypes)
        }
        if filter.types.isEmpty { return .skipped("no request type left") }

        if filter.regex == nil {
            if rule.hasPrefix("||") {
                filter.hostAnchored = true
                rule = rule.dropFirst(2)
            } else if rule.hasPrefix("|") {
                filter.leftAnchored = true
                rule = rule.dropFirst()
            }
            if rule.hasSuffix("|") {
                filter.rightAnchored = true
                rule = rule.dropLast()
            }
            while !filter.hostAnchored, !filter.leftAnchored, rule.hasPrefix("*") { rule = rule.dropFirst() }
            while !filter.rightAnchored, rule.hasSuffix("*") { rule = rule.dropLast() }
            filter.pattern = Array((filter.matchCase ? String(rule) : rule.lowercased()).utf8)
            if filter.pattern.isEmpty, filter.includeDomains.isEmpty, positiveTypes.isEmpty, filter.party == .any {
                return .skipped("rule matching every URL")
            }
            // A pure host rule with no type option covers the page itself too, as in uBlock
            // Origin (the "strict blocking" of a whole site).
            if positiveTypes.isEmpty, negativeTypes.isEmpty, filter.isHostOnly { filter.types = .all }
        } else if let source = filter.regex, (try? Regex(source)) == nil {
            return .skipped("regular expression Swift cannot compile")
        }
        filter.includeDomains = filter.includeDomains.map { $0.lowercased() }
        filter.excludeDomains = filter.excludeDomains.map { $0.lowercased() }
        return .network(filter)
    }

    static func hostFromAnchoredRule(_ rule: Substring) -> String? {
        guard rule.hasPrefix("||") else { return nil }
        var host = rule.dropFirst(2)
        if host.hasSuffix("^") { host = host.dropLast() }
        return BlockList.hostName(host.lowercased())
    }

    // MARK: - Tokens

    /// The next run of token bytes at or after `from`: how URLs and patterns are cut alike.
    @inline(__always) static func nextToken<C: RandomAccessCollection>(in bytes: C, from: Int) -> Range<Int>? where C.Element == UInt8, C.Index == Int {
        var i = from
        while i < bytes.endIndex, !isTokenByte(bytes[i]) { i += 1 }
        guard i < bytes.endIndex else { return nil }
        let start = i
        while i < bytes.endIndex, isTokenByte(bytes[i]) { i += 1 }
        return start..<i
    }

    /// Bytes that make up a token, in URLs and in patterns alike.
    @inline(__always) static func isTokenByte(_ b: UInt8) -> Bool {
        (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x25 || (b >= 0x41 && b <= 0x5A)
    }

    /// The tokens of the pattern that any URL it matches must contain as whole tokens: runs of
    /// letters, digits and `%` that a wildcard cannot extend.
    /// Each with its offset in the pattern when nothing of variable length (`*`) comes before
    /// it, so that a URL token found at a position fixes where the pattern must start (-1 when
    /// not; always -1 for regular expressions).
    var tokens: [(bytes: [UInt8], offset: Int)] {
        if let regex { return Self.regexTokens(regex).map { ($0, -1) } }
        var result: [(bytes: [UInt8], offset: Int)] = []
        let p = pattern.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }
        var from = 0
        while let token = Self.nextToken(in: p, from: from) {
            from = token.upperBound
            let (start, i) = (token.lowerBound, token.upperBound)
            let leftBounded = start == 0 ? (hostAnchored || leftAnchored) : p[start - 1] != UInt8(ascii: "*")
            let rightBounded = i == p.count ? rightAnchored : p[i] != UInt8(ascii: "*")
            let fixed = !p[..<start].contains(UInt8(ascii: "*"))
            if leftBounded, rightBounded { result.append((Array(p[start..<i]), fixed ? start : -1)) }
        }
        return result
    }

    /// Literal runs of a regular expression that stand between literal separators at the top
    /// level (`\/ads\/` gives `ads`). Anything unclear (alternation at the top, classes, groups,
    /// quantifiers on the run) gives no token, and the rule is checked for every URL.
    static func regexTokens(_ source: String) -> [[UInt8]] {
        let s = Array(source.utf8)
        // Elements at depth 0: literal byte, literal separator, or "other".
        enum Element: Equatable { case letter(UInt8), separator, other, quantifier }
        var elements: [Element] = []
        var depth = 0
        var i = 0
        while i < s.count {
            let b = s[i]
            if b == UInt8(ascii: "\\"), i + 1 < s.count {
                let n = s[i + 1]
                if depth == 0 {
                    if isTokenByte(n) { elements.append(.other) } else { elements.append(.separator) }
                }
                i += 2
                continue
            }
            switch b {
            case UInt8(ascii: "("), UInt8(ascii: "["):
                if depth == 0 { elements.append(.other) }
                depth += 1
                if b == UInt8(ascii: "[") {
                    // A class ends at the first unescaped ']' (not counting a leading one).
                    i += 1
                    if i < s.count, s[i] == UInt8(ascii: "]") { i += 1 }
                    while i < s.count, s[i] != UInt8(ascii: "]") { i += s[i] == UInt8(ascii: "\\") ? 2 : 1 }
                    depth -= 1
                }
            case UInt8(ascii: ")"):
                depth -= 1
            case UInt8(ascii: "|"):
                if depth == 0 { return [] }
            case UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "?"), UInt8(ascii: "{"):
                if depth == 0 { elements.append(.quantifier) }
                if b == UInt8(ascii: "{") { while i < s.count, s[i] != UInt8(ascii: "}") { i += 1 } }
            case UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "$"):
                if depth == 0 { elements.append(.other) }
            default:
                if depth == 0 { elements.append(isTokenByte(b) ? .letter(b | (b >= 0x41 && b <= 0x5A ? 0x20 : 0)) : .separator) }
            }
            i += 1
        }
        var tokens: [[UInt8]] = []
        var j = 0
        while j < elements.count {
            guard case .letter = elements[j] else {
                j += 1
                continue
            }
            let start = j
            var run: [UInt8] = []
            while j < elements.count, case .letter(let b) = elements[j] {
                run.append(b)
                j += 1
            }
            let before = start > 0 ? elements[start - 1] : .other
            let after = j < elements.count ? elements[j] : .other
            let afterQuantified = j + 1 < elements.count && elements[j + 1] == .quantifier
            if before == .separator, after == .separator, !afterQuantified { tokens.append(run) }
        }
        return tokens
    }
}
