/// What a shared cache may store, how long it stays fresh, and whether a stored response may
/// answer a request (RFC 9111 sections 3, 4 and 5; RFC 5861 for the stale extensions).
/// Pure: the times are seconds since 1970 handed in by the caller.

/// The fields of a response that caching looks at, read once when it arrives.
public struct ResponseFacts: Sendable, Equatable {
    public var status: Int
    public var cacheControl: CacheControl
    /// `Expires`: nil when absent; `.some(nil)` when present but not a valid date (which
    /// means already expired).
    public var expires: Int??
    public var date: Int?
    public var lastModified: Int?
    /// `Age` in seconds (nil when absent or invalid).
    public var age: Int?
    public var etag: String?
    /// Lowercase field names listed in `Vary` (`*` included as is).
    public var vary: [String]

    /// `fields`: name (any case) and value of every field line.
    public init(status: Int, fields: [(String, String)], now: Int = 0) {
        self.status = status
        var cc: [String] = []
        var vary: [String] = []
        var expires: Int??
        var date: Int?
        var lastModified: Int?
        var age: Int?
        var etag: String?
        for (name, value) in fields {
            switch name.lowercased() {
            case "cache-control": cc.append(value)
            case "expires": if expires == nil { expires = .some(HTTPDate.parse(value, now: now)) }
            case "date": if date == nil { date = HTTPDate.parse(value, now: now) }
            case "last-modified": if lastModified == nil { lastModified = HTTPDate.parse(value, now: now) }
            case "age": if age == nil { age = CacheControl.deltaSeconds(value.trimmingOWS()) }
            case "etag": if etag == nil { etag = value.trimmingOWS() }
            case "vary": vary += value.split(separator: ",").map { $0.trimmingOWS().lowercased() }.filter { !$0.isEmpty }
            default: break
            }
        }
        self.cacheControl = CacheControl(cc)
        self.expires = expires
        self.date = date
        self.lastModified = lastModified
        self.age = age
        self.etag = etag
        self.vary = vary
    }
}

/// When a stored response was fetched: what the age calculation needs (section 4.2.3).
public struct ResponseTiming: Sendable, Equatable, Codable {
    /// When the request that brought the response was sent, and when the response arrived.
    public var requestTime: Int
    public var responseTime: Int
    public var date: Int?
    public var age: Int

    public init(requestTime: Int, responseTime: Int, date: Int?, age: Int?) {
        self.requestTime = requestTime
        self.responseTime = responseTime
        self.date = date
        self.age = age ?? 0
    }

    /// RFC 9111 section 4.2.3, word for word.
    public func currentAge(now: Int) -> Int {
        let apparentAge = max(0, responseTime - (date ?? responseTime))
        let responseDelay = responseTime - requestTime
        let correctedAgeValue = age + responseDelay
        let correctedInitialAge = max(apparentAge, correctedAgeValue)
        let residentTime = now - responseTime
        return min(correctedInitialAge + residentTime, CacheControl.deltaCap)
    }
}

public enum CachePolicy {
    /// Status codes a cache may store without explicit freshness ("heuristically cacheable",
    /// RFC 9110 section 15.1).
    public static let heuristicallyCacheable: Set<Int> = [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501]
    /// Status codes this cache understands (for `must-understand`, RFC 9111 section 5.2.2.3).
    public static let understood: Set<Int> = [200, 203, 204, 300, 301, 302, 303, 307, 308, 400, 403, 404, 405, 410, 414, 451, 500, 501, 502, 503, 504]

    public struct Heuristic: Sendable, Equatable {
        /// Of the time since Last-Modified (RFC 9111 section 4.2.2 suggests 10 %).
        public var fraction = 0.1
        /// At most this long, seconds.
        public var maxLifetime = 86_400
        /// A configured lifetime for answers that state none (Varnish's `default_ttl`, nginx's
        /// `proxy_cache_valid`), used instead of the Last-Modified heuristic when set.
        public var defaultLifetime: Int?
        public init() {}
    }

    /// Whether a shared cache may store this response to this request (section 3).
    public static func mayStore(method: String, request: CacheControl, hasAuthorization: Bool, response: ResponseFacts) -> Bool {
        guard method == "GET" else { return false }
        let status = response.status
        // 206 is never stored here (no partial content store) and 304 answers a validation.
        guard status >= 200, status != 206, status != 304 else { return false }
        let cc = response.cacheControl
        if cc.mustUnderstand {
            guard understood.contains(status) else { return false }
        } else if cc.noStore {
            return false
        }
        if request.noStore || cc.isPrivate { return false }
        if response.vary.contains("*") { return false }
        // Section 3.5: a response to a request with credentials only with explicit permission.
        if hasAuthorization, !(cc.mustRevalidate || cc.isPublic || cc.sMaxAge != nil) { return false }
        return cc.isPublic || cc.maxAge != nil || cc.sMaxAge != nil || response.expires != nil
            || heuristicallyCacheable.contains(status)
    }

    /// Seconds the response is fresh for, as a shared cache counts (section 4.2.1); heuristic
    /// only when nothing explicit was said and the status allows it.
    public static func freshnessLifetime(_ response: ResponseFacts, responseTime: Int, heuristic: Heuristic = Heuristic()) -> Int {
        let cc = response.cacheControl
        if cc.invalidFreshness { return 0 }
        if let s = cc.sMaxAge { return s }
        if let m = cc.maxAge { return m }
        if let expires = response.expires {
            guard let e = expires else { return 0 }
            return max(0, e - (response.date ?? responseTime))
        }
        guard heuristicallyCacheable.contains(response.status) || cc.isPublic else { return 0 }
        if let d = heuristic.defaultLifetime { return d }
        guard let lm = response.lastModified else { return 0 }
        let since = (response.date ?? responseTime) - lm
        guard since > 0 else { return 0 }
        return min(Int(Double(since) * heuristic.fraction), heuristic.maxLifetime)
    }

    /// What a stored response can do for a request.
    public enum Use: Sendable, Equatable {
        /// Fresh enough for this request: answer from the cache.
        case fresh
        /// Stale, but the request's `max-stale` accepts it.
        case staleAllowed
        /// Stale within `stale-while-revalidate`: answer now, refresh in the background.
        case staleWhileRevalidate
        /// Must be validated with the origin first. `staleIfErrorUntil`: until when (current
        /// age) a stale copy may still answer if the origin fails (RFC 5861), nil: never.
        case validate(staleIfError: Bool)
    }

    /// Section 4.2 and 4.3: whether `stored` (of this `age` and `lifetime`) may answer a
    /// request with directives `request` (and `Pragma: no-cache` when it has no Cache-Control).
    public static func use(request: CacheControl, pragmaNoCache: Bool = false, response: CacheControl, lifetime: Int, age: Int) -> Use {
        let requestNoCache = request.noCache || (pragmaNoCache && request.isEmpty)
        let staleness = age - lifetime
        let staleIfError = (response.staleIfError.map { staleness <= $0 } ?? false)
            || (request.staleIfError.map { staleness <= $0 } ?? false)
        let mayServeStale = !(response.mustRevalidate || response.proxyRevalidate || response.sMaxAge != nil)
        if requestNoCache || response.noCache { return .validate(staleIfError: staleIfError && mayServeStale) }
        var fresh = lifetime > age
        if let maxAge = request.maxAge, age > maxAge { fresh = false }
        if let minFresh = request.minFresh, lifetime - age < minFresh { fresh = false }
        if fresh { return .fresh }
        guard mayServeStale else { return .validate(staleIfError: false) }
        // A request's own max-age or min-fresh is not overridden by max-stale beyond them.
        if let maxStale = request.maxStale, staleness <= maxStale, request.maxAge.map({ age <= $0 }) ?? true {
            return .staleAllowed
        }
        if let swr = response.staleWhileRevalidate, staleness <= swr, staleness >= 0, !requestNoCache, request.maxAge == nil {
            return .staleWhileRevalidate
        }
        return .validate(staleIfError: staleIfError)
    }

    /// The secondary key of a request for a response with this `Vary` (section 4.1): the
    /// listed fields' values, normalised (whitespace around commas dropped, several lines
    /// joined). nil when `Vary: *` (never matches).
    public static func varyKey(_ vary: [String], header: (String) -> [String]) -> String? {
        guard !vary.isEmpty else { return "" }
        if vary.contains("*") { return nil }
        var key = ""
        for name in vary.sorted() {
            let values = header(name).flatMap { $0.split(separator: ",").map { $0.trimmingOWS() } }.filter { !$0.isEmpty }
            key += name + ":" + values.joined(separator: ",") + "\n"
        }
        return key
    }

    /// Whether a client's conditional GET or HEAD can be answered 304 from the stored
    /// response's validators (RFC 9110 section 13.2.2: `If-None-Match` first, weak comparison;
    /// `If-Modified-Since` only without it).
    public static func notModified(ifNoneMatch: [String], ifModifiedSince: String?, etag: String?, lastModified: Int?, date: Int?, now: Int) -> Bool {
        if !ifNoneMatch.isEmpty {
            let tags = ifNoneMatch.flatMap { entityTags($0) }
            if tags.contains("*") { return etag != nil }
            guard let etag else { return false }
            let mine = weak(etag)
            return tags.contains { weak($0) == mine }
        }
        guard let ims = ifModifiedSince.flatMap({ HTTPDate.parse($0, now: now) }), ims <= now else { return false }
        guard let modified = lastModified ?? date else { return false }
        return modified <= ims
    }

    /// The entity tags of an `If-None-Match` value (commas inside quotes do not split).
    static func entityTags(_ value: String) -> [String] {
        var tags: [String] = []
        var current = ""
        var quoted = false
        for c in value {
            if c == "\"" { quoted.toggle() }
            if c == ",", !quoted {
                tags.append(current.trimmingOWS())
                current = ""
            } else {
                current.append(c)
            }
        }
        tags.append(current.trimmingOWS())
        return tags.filter { !$0.isEmpty }
    }

    static func weak(_ tag: String) -> String { tag.hasPrefix("W/") ? String(tag.dropFirst(2)) : tag }
}

/// A `Range: bytes=…` request against a stored answer of `length` bytes (RFC 9110 section
/// 14): one range is served as 206; several, or another unit, are ignored (the whole answer
/// is a valid reply); a range past the end is 416.
public enum ByteRange: Sendable, Equatable {
    case ignore
    case satisfiable(ClosedRange<Int>)
    case unsatisfiable

    public static func parse(_ value: String, length: Int) -> ByteRange {
        let v = value.trimmingOWS()
        guard v.lowercased().hasPrefix("bytes=") else { return .ignore }
        let spec = v.dropFirst(6).trimmingOWS()
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return .ignore }
        let first = String(spec[..<dash]).trimmingOWS()
        let last = String(spec[spec.index(after: dash)...]).trimmingOWS()
        func number(_ s: String) -> Int? {
            guard !s.isEmpty, s.utf8.count <= 18, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            return Int(s)
        }
        if first.isEmpty {
            // The last N bytes.
            guard let n = number(last) else { return .ignore }
            guard n > 0, length > 0 else { return .unsatisfiable }
            return .satisfiable(max(0, length - n)...(length - 1))
        }
        guard let start = number(first) else { return .ignore }
        let end: Int
        if last.isEmpty {
            end = length - 1
        } else {
            guard let e = number(last) else { return .ignore }
            guard e >= start else { return .ignore }
            end = min(e, length - 1)
        }
        guard start < length else { return .unsatisfiable }
        return .satisfiable(start...end)
    }
}
