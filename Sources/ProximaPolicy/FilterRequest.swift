/// What a block list needs to know of a request besides its URL: what kind of resource it asks
/// for, and from which page. A proxy does not see the browser's own notion of either, so both are
/// inferred from the request's headers (see `ResourceType.infer` and `FilterRequest.thirdParty`).
public struct FilterRequest: Sendable {
    /// The absolute URL (`http://host/path?query`); for CONNECT, `https://host/` (or with the port).
    public var url: String
    /// The host name, lowercase, as parsed from the request target.
    public var host: String
    public var type: ResourceType
    /// The host of the page the request comes from (Referer or Origin), if known.
    public var sourceHost: String?
    /// Whether the request goes to another site than its page's; nil when that cannot be known.
    public var thirdParty: Bool?

    public init(url: String, host: String, type: ResourceType, sourceHost: String? = nil, thirdParty: Bool? = nil) {
        self.url = url
        self.host = host
        self.type = type
        self.sourceHost = sourceHost
        self.thirdParty = thirdParty
    }

    /// Third party when the registrable domains (eTLD+1) differ. `Sec-Fetch-Site` is the
    /// browser's own answer and wins; without it, the page comes from Referer or Origin.
    public static func thirdParty(host: String, sourceHost: String?, secFetchSite: String?, suffixes: PublicSuffixList) -> Bool? {
        switch secFetchSite?.lowercased() {
        case "cross-site": return true
        case "same-site", "same-origin", "none": return false
        default: break
        }
        guard let sourceHost else { return nil }
        return suffixes.registrableDomain(host) != suffixes.registrableDomain(sourceHost)
    }

    /// The host of a Referer or Origin value (`https://www.example.org/page` → `www.example.org`).
    public static func host(ofURL value: String) -> String? {
        // A byte scan for "://": Foundation's range(of:) would run for every filtered request.
        let u = value.utf8
        guard let colon = u.indices.first(where: { i in
            u[i] == UInt8(ascii: ":") && u[i...].starts(with: "://".utf8)
        }) else { return nil }
        var rest = value[u.index(colon, offsetBy: 3)...]
        if let at = rest.prefix(while: { $0 != "/" }).lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        let authority: Substring
        if rest.hasPrefix("[") {
            authority = rest.prefix { $0 != "]" }.dropFirst()
        } else {
            authority = rest.prefix { $0 != "/" && $0 != ":" && $0 != "?" && $0 != "#" }
        }
        return authority.isEmpty ? nil : authority.lowercased()
    }
}

/// The request types of Adblock Plus / uBlock Origin filter options, one bit each.
public struct ResourceType: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let other = ResourceType(rawValue: 1 << 0)
    public static let script = ResourceType(rawValue: 1 << 1)
    public static let image = ResourceType(rawValue: 1 << 2)
    public static let stylesheet = ResourceType(rawValue: 1 << 3)
    public static let object = ResourceType(rawValue: 1 << 4)
    public static let xmlhttprequest = ResourceType(rawValue: 1 << 5)
    public static let subdocument = ResourceType(rawValue: 1 << 6)
    public static let document = ResourceType(rawValue: 1 << 7)
    public static let font = ResourceType(rawValue: 1 << 8)
    public static let media = ResourceType(rawValue: 1 << 9)
    public static let websocket = ResourceType(rawValue: 1 << 10)
    public static let ping = ResourceType(rawValue: 1 << 11)

    public static let all = ResourceType(rawValue: (1 << 12) - 1)
    /// What a filter without type options applies to: everything but the page itself.
    public static let allButDocument = all.subtracting(.document)

    /// Option names as the lists write them (with uBlock Origin's aliases).
    /// Option names as the lists write them: the canonical `names` and uBlock Origin's aliases.
    static let byOptionName: [String: ResourceType] = Dictionary(
        uniqueKeysWithValues: names.map { ($0.1, $0.0) } + [
            ("css", .stylesheet), ("object-subrequest", .object), ("xhr", .xmlhttprequest), ("frame", .subdocument),
            ("doc", .document), ("beacon", .ping),
        ])

    /// A type by its option name (`script`, `xhr`, `stylesheet`, ...).
    public init?(optionName: String) {
        guard let type = Self.byOptionName[optionName.lowercased()] else { return nil }
        self = type
    }

    static let names: [(ResourceType, String)] = [
        (.other, "other"), (.script, "script"), (.image, "image"), (.stylesheet, "stylesheet"), (.object, "object"),
        (.xmlhttprequest, "xmlhttprequest"), (.subdocument, "subdocument"), (.document, "document"), (.font, "font"),
        (.media, "media"), (.websocket, "websocket"), (.ping, "ping"),
    ]

    /// The option names of the types in this set, as the lists write them.
    public var names: [String] { Self.names.filter { contains($0.0) }.map(\.1) }

    /// The type of a request as a browser would have labelled it. `Sec-Fetch-Dest` says it
    /// outright (browsers send it on secure and local requests); without it, `Accept` and then
    /// the path's extension decide, and `Upgrade: websocket` marks WebSockets.
    public static func infer(secFetchDest: String?, accept: String?, path: String, requestedWith: String? = nil, upgrade: String? = nil) -> ResourceType {
        if let dest = secFetchDest?.lowercased() {
            switch dest {
            case "document": return .document
            case "iframe", "frame", "fencedframe": return .subdocument
            case "script", "worker", "sharedworker", "serviceworker", "audioworklet", "paintworklet": return .script
            case "image": return .image
            case "style": return .stylesheet
            case "font": return .font
            case "audio", "video", "track": return .media
            case "object", "embed": return .object
            case "empty":
                return upgrade?.lowercased() == "websocket" ? .websocket : .xmlhttprequest
            case "report": return .ping
            default: break
            }
        }
        if upgrade?.lowercased() == "websocket" { return .websocket }
        if requestedWith?.lowercased() == "xmlhttprequest" { return .xmlhttprequest }
        let accept = accept?.lowercased() ?? ""
        if accept.hasPrefix("text/html") || accept.hasPrefix("application/xhtml") { return .document }
        if accept.hasPrefix("text/css") { return .stylesheet }
        if accept.hasPrefix("image/") { return .image }
        if accept.hasPrefix("application/json") { return .xmlhttprequest }
        let file = path.prefix { $0 != "?" && $0 != "#" }.lowercased()
        guard let dot = file.lastIndex(of: "."), !file[dot...].contains("/") else { return .other }
        switch file[file.index(after: dot)...] {
        case "js", "mjs": return .script
        case "css": return .stylesheet
        case "gif", "png", "jpg", "jpeg", "webp", "svg", "ico", "avif", "bmp": return .image
        case "woff", "woff2", "ttf", "otf", "eot": return .font
        case "mp4", "webm", "mp3", "ogg", "m4a", "m3u8", "wav": return .media
        case "html", "htm", "php", "asp", "aspx": return .subdocument
        case "json": return .xmlhttprequest
        default: return .other
        }
    }
}

/// The Public Suffix List (publicsuffix.org): which part of a host name is the registrable
/// domain (`news.bbc.co.uk` → `bbc.co.uk`). Wildcard (`*.ck`) and exception (`!www.ck`) rules
/// are honoured. Without a list, the last two labels are taken.
public struct PublicSuffixList: Sendable {
    var rules: Set<String> = []
    var wildcards: Set<String> = []
    var exceptions: Set<String> = []
    public private(set) var ruleCount = 0

    /// Debian's `publicsuffix` package installs the list here.
    public static let systemPath = "/usr/share/publicsuffix/public_suffix_list.dat"

    public init() {}

    public init(text: String) {
        for raw in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let line = raw.prefix { $0 != " " && $0 != "\t" }.lowercased()
            if line.isEmpty || line.hasPrefix("//") { continue }
            ruleCount += 1
            if line.hasPrefix("!") {
                exceptions.insert(String(line.dropFirst()))
            } else if line.hasPrefix("*.") {
                wildcards.insert(String(line.dropFirst(2)))
            } else {
                rules.insert(line)
            }
        }
    }

    public var isEmpty: Bool { ruleCount == 0 }

    /// The public suffix's length in labels for `host`.
    func suffixLabels(_ labels: [Substring]) -> Int {
        if isEmpty { return 1 }
        // Longest matching rule wins; exception rules beat everything and take one label off.
        var best = 1
        for i in 0..<labels.count {
            let candidate = labels[i...].joined(separator: ".")
            let count = labels.count - i
            if exceptions.contains(candidate) { return count - 1 }
            if rules.contains(candidate) { best = max(best, count) }
            if i + 1 < labels.count, wildcards.contains(labels[(i + 1)...].joined(separator: ".")) { best = max(best, count) }
        }
        return best
    }

    /// eTLD+1, or the host itself when it is an address or a public suffix.
    public func registrableDomain(_ host: String) -> String {
        let h = host.hasSuffix(".") ? String(host.dropLast()) : host.lowercased()
        if h.contains(":") || h.allSatisfy({ $0.isNumber || $0 == "." }) { return h }
        let labels = h.split(separator: ".", omittingEmptySubsequences: false)
        let suffix = suffixLabels(labels)
        guard labels.count > suffix else { return h }
        return labels.suffix(suffix + 1).joined(separator: ".")
    }
}
