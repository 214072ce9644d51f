/// An element-hiding rule: `example.com,~shop.example.com##.ad-banner`, generic `##.ad`, or an
/// exception `example.com#@#.ad`. Only plain CSS selectors are taken; uBlock Origin's procedural
/// operators (`:has-text()`, `:xpath()`, ...) need a script in the page and are counted as skipped.
public struct CosmeticRule: Sendable, Equatable {
    public enum Exemption: Sendable, Hashable {
        /// `$generichide`: generic rules off, rules naming the site stay.
        case generic
        /// `$elemhide`: no element hiding at all.
        case all
    }

    public var includeDomains: [String] = []
    public var excludeDomains: [String] = []
    public var selector: String
    public var exception: Bool

    public struct Rejection: Error, Equatable {
        public let text: String
    }

    static let procedural = [
        ":has-text(", ":xpath(", ":upward(", ":matches-css", ":-abp-", ":style(", ":remove(", ":watch-attr(",
        ":min-text-length(", ":others(", ":matches-path(", ":matches-attr(", ":matches-media(", ":if(", ":if-not(",
        ":nth-ancestor(", ":remove-attr(", ":remove-class(", ":contains(", ":matches-prop(", ":spath(",
    ]

    static func parse(domains: Substring, selector: Substring, exception: Bool) -> Result<CosmeticRule, Rejection> {
        guard !selector.isEmpty else { return .failure(Rejection(text: "empty selector")) }
        if selector.hasPrefix("+js(") || selector.hasPrefix("^") { return .failure(Rejection(text: "scriptlet or HTML filter (##+js, ##^)")) }
        if selector.utf8.contains(UInt8(ascii: ":")) {
            let lower = Array(selector.lowercased().utf8)
            if let op = procedural.first(where: { lower.containsBytes(Array($0.utf8)) }) {
                return .failure(Rejection(text: "procedural cosmetic (\(op.dropLast()))"))
            }
        }
        // The selector is written into a style sheet: nothing may close the rule or the element.
        if !isSafe(selector) { return .failure(Rejection(text: "unsafe selector")) }
        var rule = CosmeticRule(selector: String(selector), exception: exception)
        for d in domains.split(separator: ",") {
            let name = d.trimmingSpaces().lowercased()
            if name.hasSuffix(".*") { return .failure(Rejection(text: "entity domain (name.*)")) }
            if name.hasPrefix("~") {
                rule.excludeDomains.append(String(name.dropFirst()))
            } else {
                rule.includeDomains.append(name)
            }
        }
        return .success(rule)
    }

    /// No `{`, `}` or `;` outside quoted attribute values (`[style="a;b"]` is fine), no `<` or
    /// line break anywhere, no unterminated quote.
    static func isSafe(_ selector: Substring) -> Bool {
        var quote: UInt8 = 0
        for b in selector.utf8 {
            if b == UInt8(ascii: "<") || b == 0x0A || b == 0x0D || b == 0 { return false }
            if quote != 0 {
                if b == quote { quote = 0 }
            } else if b == UInt8(ascii: "\"") || b == UInt8(ascii: "'") {
                quote = b
            } else if b == UInt8(ascii: "{") || b == UInt8(ascii: "}") || b == UInt8(ascii: ";") {
                return false
            }
        }
        return quote == 0
    }

    /// `.name` or `#name` at the start of the selector: an element it hides must carry that
    /// class or id, so the rule is only sent to pages that contain it.
    var key: String? {
        guard let first = selector.first, first == "." || first == "#" else { return nil }
        // A selector list may hide elements without that class.
        if selector.utf8.contains(UInt8(ascii: ",")) { return nil }
        let name = selector.dropFirst().prefix { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }
        guard !name.isEmpty else { return nil }
        return String(first) + name
    }
}

/// The element-hiding rules of all block lists, compiled: rules per site, generic rules filed
/// under the class or id they need, and the few generic rules that cannot be filed.
public struct CosmeticFilter: Sendable {
    /// Site (and its parent domains) → selectors naming it.
    var specific: [String: [Int]] = [:]
    /// `.class` / `#id` → generic selectors that need it.
    var keyed: [String: [Int]] = [:]
    /// Generic selectors without a class or id to file them under: sent to every page. Split at
    /// load into those that hold everywhere and those some sites exclude, so that a page
    /// load does not re-check thousands of selectors against the global exceptions.
    var unkeyed: [Int] = []
    var unkeyedEverywhere: [Int] = []
    var unkeyedExcludedSomewhere: [Int] = []
    var selectors: [String] = []
    var excludedOn: [Int: [String]] = [:]
    /// Exceptions: selectors not to hide anywhere, or on given sites.
    var exceptedEverywhere: Set<String> = []
    var exceptedOn: [String: Set<String>] = [:]
    var exemptions: [String: Set<CosmeticRule.Exemption>] = [:]

    public var isEmpty: Bool { selectors.isEmpty }

    public init(_ lists: [BlockList]) {
        for list in lists {
            for (host, kinds) in list.cosmeticExceptions { exemptions[host, default: []].formUnion(kinds) }
            for rule in list.cosmetic {
                if rule.exception {
                    if rule.includeDomains.isEmpty {
                        exceptedEverywhere.insert(rule.selector)
                    } else {
                        for d in rule.includeDomains { exceptedOn[d, default: []].insert(rule.selector) }
                    }
                    continue
                }
                let id = selectors.count
                selectors.append(rule.selector)
                if !rule.excludeDomains.isEmpty { excludedOn[id] = rule.excludeDomains }
                if !rule.includeDomains.isEmpty {
                    for d in rule.includeDomains { specific[d, default: []].append(id) }
                } else if let key = rule.key {
                    keyed[key, default: []].append(id)
                } else {
                    unkeyed.append(id)
                }
            }
        }
        for id in unkeyed where !exceptedEverywhere.contains(selectors[id]) {
            if excludedOn[id] == nil { unkeyedEverywhere.append(id) } else { unkeyedExcludedSomewhere.append(id) }
        }
    }

    /// The site and its parent domains, most specific first.
    static func domains(of host: String) -> [Substring] {
        var result: [Substring] = []
        var name = Substring(host.lowercased())
        while !name.isEmpty {
            result.append(name)
            guard let dot = name.firstIndex(of: ".") else { break }
            name = name[name.index(after: dot)...]
        }
        return result
    }

    /// What applies to pages of one site.
    public func page(host: String) -> PageCosmetics {
        let domains = Self.domains(of: host)
        var exempt: Set<CosmeticRule.Exemption> = []
        var excepted = exceptedEverywhere
        for d in domains {
            exempt.formUnion(exemptions[String(d)] ?? [])
            excepted.formUnion(exceptedOn[String(d)] ?? [])
        }
        if exempt.contains(.all) { return PageCosmetics(filter: self, domains: [], upFront: [], generic: false, excepted: excepted) }
        let names = domains.map(String.init)
        var upFront: [Int] = []
        for d in names { upFront += (specific[d] ?? []).filter { allowed($0, on: names, excepted: excepted) } }
        let generic = !exempt.contains(.generic)
        if generic {
            let siteExcepted = excepted.count > exceptedEverywhere.count
            upFront += siteExcepted ? unkeyedEverywhere.filter { !excepted.contains(selectors[$0]) } : unkeyedEverywhere
            upFront += unkeyedExcludedSomewhere.filter { allowed($0, on: names, excepted: excepted) }
        }
        return PageCosmetics(filter: self, domains: names, upFront: upFront, generic: generic, excepted: excepted)
    }

    func allowed(_ id: Int, on domains: [String], excepted: Set<String>) -> Bool {
        if excepted.contains(selectors[id]) { return false }
        if let excluded = excludedOn[id], domains.contains(where: excluded.contains) { return false }
        return true
    }
}

/// Element hiding for one page: the style sheet that goes near the top (rules naming the site,
/// unfiled generic rules), and the generic rules whose class or id the page turned out to use.
public struct PageCosmetics: Sendable {
    let filter: CosmeticFilter
    let domains: [String]
    let upFront: [Int]
    let generic: Bool
    let excepted: Set<String>

    public var hasWork: Bool { !upFront.isEmpty || generic }

    /// Generic selectors for the classes and ids seen in the page (`.ad`, `#banner`).
    func selectors(forKeys keys: Set<String>) -> [Int] {
        guard generic else { return [] }
        var ids: [Int] = []
        for key in keys.sorted() {
            for id in filter.keyed[key] ?? [] where filter.allowed(id, on: domains, excepted: excepted) { ids.append(id) }
        }
        return ids
    }

    func isKey(_ key: String) -> Bool { generic && filter.keyed[key] != nil }

    /// `<style>` with one rule per selector, so that a selector a browser does not know spoils
    /// only its own rule.
    func styleElement(_ ids: [Int], marker: String) -> [UInt8] {
        guard !ids.isEmpty else { return [] }
        var css = "<style data-proxima=\"\(marker)\">"
        for id in ids { css += filter.selectors[id] + "{display:none!important}" }
        css += "</style>"
        return Array(css.utf8)
    }

    public var upFrontStyle: [UInt8] { styleElement(upFront, marker: "site") }
}

/// Finds where the up-front style sheet goes (right after `<head …>`, else after `<body …>`) and
/// collects the class and id names of the page, as the HTML streams past in pieces. A small tag
/// tokenizer, not an HTML parser: what it misreads (a `<` in a script) costs at most a rule sent
/// or missed, never a change to the page's bytes.
public struct ElementHidingStream: Sendable {
    public let page: PageCosmetics
    enum State: Sendable { case text, tagName, inTag, attributeName, afterName, beforeValue, value(quote: UInt8) }
    var state: State = .text
    var tagName: [UInt8] = []
    var attributeName: [UInt8] = []
    var attributeValue: [UInt8] = []
    var seenKeys: Set<String> = []
    /// Bytes before the up-front style went in; it stops being looked for after `searchLimit`.
    var offset = 0
    public private(set) var insertedUpFront = false
    var pendingInsert = false
    static let searchLimit = 64 * 1024
    /// Bounds the memory a page can make this take.
    static let maxKeys = 4096
    static let maxValueBytes = 4096

    public init(page: PageCosmetics) {
        self.page = page
        if page.upFront.isEmpty { insertedUpFront = true }
    }

    /// Scans one piece of the body. Returns the offset in `piece` after which the up-front style
    /// sheet must be inserted, the one time that point is found.
    public mutating func scan(_ piece: UnsafeRawBufferPointer) -> Int? {
        var insertion: Int?
        for (i, b) in piece.enumerated() {
            let lower = b >= 0x41 && b <= 0x5A ? b | 0x20 : b
            switch state {
            case .text:
                if b == UInt8(ascii: "<") {
                    state = .tagName
                    tagName.removeAll(keepingCapacity: true)
                }
            case .tagName:
                if Self.isSpace(b) || b == UInt8(ascii: ">") || b == UInt8(ascii: "/") {
                    pendingInsert = !insertedUpFront && offset + i < Self.searchLimit && (tagName == Self.head || tagName == Self.body)
                    if b == UInt8(ascii: ">") {
                        state = .text
                        if endTag(at: i) { insertion = i + 1 }
                    } else {
                        state = .inTag
                    }
                } else if tagName.count < 16 {
                    tagName.append(lower)
                }
            case .inTag:
                if b == UInt8(ascii: ">") {
                    state = .text
                    if endTag(at: i) { insertion = i + 1 }
                } else if !Self.isSpace(b) && b != UInt8(ascii: "/") {
                    attributeName = [lower]
                    state = .attributeName
                }
            case .attributeName:
                if b == UInt8(ascii: "=") {
                    state = .beforeValue
                } else if Self.isSpace(b) {
                    state = .afterName
                } else if b == UInt8(ascii: ">") {
                    state = .text
                    if endTag(at: i) { insertion = i + 1 }
                } else if attributeName.count < 16 {
                    attributeName.append(lower)
                }
            case .afterName:
                if b == UInt8(ascii: "=") {
                    state = .beforeValue
                } else if b == UInt8(ascii: ">") {
                    state = .text
                    if endTag(at: i) { insertion = i + 1 }
                } else if !Self.isSpace(b) {
                    attributeName = [lower]
                    state = .attributeName
                }
            case .beforeValue:
                attributeValue.removeAll(keepingCapacity: true)
                if b == UInt8(ascii: "\"") || b == UInt8(ascii: "'") {
                    state = .value(quote: b)
                } else if b == UInt8(ascii: ">") {
                    state = .text
                    if endTag(at: i) { insertion = i + 1 }
                } else if !Self.isSpace(b) {
                    attributeValue.append(b)
                    state = .value(quote: 0)
                }
            case .value(let quote):
                let ends = quote == 0 ? (Self.isSpace(b) || b == UInt8(ascii: ">")) : b == quote
                if ends {
                    valueDone()
                    state = .inTag
                    if quote == 0, b == UInt8(ascii: ">") {
                        state = .text
                        if endTag(at: i) { insertion = i + 1 }
                    }
                } else if attributeValue.count < Self.maxValueBytes {
                    attributeValue.append(b)
                }
            }
        }
        offset += piece.count
        return insertion
    }

    static let head = Array("head".utf8)
    static let body = Array("body".utf8)

    @inline(__always) static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A || b == 0x09 || b == 0x0D || b == 0x0C }

    private mutating func endTag(at i: Int) -> Bool {
        guard pendingInsert else { return false }
        pendingInsert = false
        insertedUpFront = true
        return true
    }

    private mutating func valueDone() {
        guard page.generic, seenKeys.count < Self.maxKeys else { return }
        let prefix: String
        if attributeName == [UInt8(ascii: "c"), UInt8(ascii: "l"), UInt8(ascii: "a"), UInt8(ascii: "s"), UInt8(ascii: "s")] {
            prefix = "."
        } else if attributeName == [UInt8(ascii: "i"), UInt8(ascii: "d")] {
            prefix = "#"
        } else {
            return
        }
        for name in attributeValue.split(whereSeparator: Self.isSpace) {
            let key = prefix + String(decoding: name, as: UTF8.self)
            if page.isKey(key) { seenKeys.insert(key) }
        }
    }

    /// The style sheet to append at the end of the body: the up-front rules if no `<head>` or
    /// `<body>` tag was found for them, and the generic rules for the classes and ids seen.
    public mutating func finish() -> [UInt8] {
        var out: [UInt8] = []
        if !insertedUpFront {
            insertedUpFront = true
            out += page.upFrontStyle
        }
        out += page.styleElement(page.selectors(forKeys: seenKeys), marker: "generic")
        return out
    }
}

extension Array where Element == UInt8 {
    /// Byte-wise substring search (Foundation's `contains` on strings costs a bridge per call).
    func containsBytes(_ needle: [UInt8]) -> Bool {
        guard needle.count <= count else { return false }
        if needle.isEmpty { return true }
        for start in 0...(count - needle.count) where self[start] == needle[0] {
            if self[start..<start + needle.count].elementsEqual(needle) { return true }
        }
        return false
    }
}
