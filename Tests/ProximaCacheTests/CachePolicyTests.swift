import Testing

@testable import ProximaCache

@Suite("Cache-Control parsing (RFC 9111 section 5.2)")
struct CacheControlTests {
    @Test func directivesAndArguments() {
        let cc = CacheControl(["max-age=60, s-maxage = 120", "No-Cache=\"Set-Cookie, X-A\", private, public", "must-revalidate,proxy-revalidate, immutable, stale-while-revalidate=30, stale-if-error=600, unknown=\"a,b\", no-transform"])
        #expect(cc.maxAge == 60 && cc.sMaxAge == 120)
        #expect(!cc.noCache && cc.noCacheFields == ["set-cookie", "x-a"])
        #expect(cc.isPrivate && cc.isPublic && cc.mustRevalidate && cc.proxyRevalidate && cc.immutable && cc.noTransform)
        #expect(cc.staleWhileRevalidate == 30 && cc.staleIfError == 600 && !cc.invalidFreshness)
    }

    @Test(arguments: [
        ("max-age=abc", true, nil as Int?),
        ("max-age=", true, nil),
        ("max-age", true, nil),
        ("max-age=-1", true, nil),
        ("max-age=1.5", true, nil),
        ("max-age=\"60\"", false, 60),
        ("max-age=99999999999999999999", false, CacheControl.deltaCap),
        ("max-age=60, max-age=60", false, 60),
        ("max-age=60, max-age=120", true, 60),
        ("MAX-AGE=7", false, 7),
    ])
    func freshnessArguments(value: String, invalid: Bool, maxAge: Int?) {
        let cc = CacheControl([value])
        #expect(cc.invalidFreshness == invalid && cc.maxAge == maxAge, "\(value)")
    }

    @Test func requestDirectives() {
        let cc = CacheControl(["max-stale, min-fresh=5, only-if-cached, no-store, no-cache"])
        #expect(cc.maxStale == CacheControl.deltaCap && cc.minFresh == 5 && cc.onlyIfCached && cc.noStore && cc.noCache)
        #expect(CacheControl(["max-stale=10"]).maxStale == 10)
    }
}

@Suite("HTTP dates (RFC 9110 section 5.6.7)")
struct HTTPDateTests {
    static let nov1994 = 784_111_777  // Sun, 06 Nov 1994 08:49:37 GMT

    @Test(arguments: [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "  Sun, 06 Nov 1994 08:49:37 GMT ",
    ])
    func theThreeForms(text: String) {
        #expect(HTTPDate.parse(text, now: 1_780_000_000) == Self.nov1994, "\(text)")
    }

    @Test(arguments: ["", "0", "-1", "Sun, 06 Nov 1994 08:49:37 PST", "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 06 Nov 1994 25:49:37 GMT", "yesterday"])
    func invalid(text: String) {
        #expect(HTTPDate.parse(text) == nil, "\(text)")
    }

    @Test func formatRoundTrips() {
        #expect(HTTPDate.format(Self.nov1994) == "Sun, 06 Nov 1994 08:49:37 GMT")
        for t in stride(from: 0, to: 4_000_000_000, by: 97_654_321) {
            #expect(HTTPDate.parse(HTTPDate.format(t)) == t)
        }
    }

    @Test func twoDigitYearsAreNeverMoreThan50YearsAhead() {
        let now2026 = HTTPDate.parse("Fri, 27 Nov 2026 00:00:00 GMT")!
        #expect(HTTPDate.parse("Friday, 01-Jan-60 00:00:00 GMT", now: now2026) == HTTPDate.parse("Fri, 01 Jan 2060 00:00:00 GMT"))
        #expect(HTTPDate.parse("Friday, 01-Jan-77 00:00:00 GMT", now: now2026) == HTTPDate.parse("Sat, 01 Jan 1977 00:00:00 GMT"))
    }
}

@Suite("Storing, freshness and age (RFC 9111 sections 3 and 4)")
struct FreshnessTests {
    static let now = 1_780_000_000
    static func facts(_ status: Int = 200, _ fields: [(String, String)]) -> ResponseFacts {
        ResponseFacts(status: status, fields: fields, now: now)
    }
    static let date = ("Date", HTTPDate.format(now))

    /// (what, method, status, response fields, request Cache-Control, Authorization, stored?)
    static let storing: [(String, String, Int, [(String, String)], String, Bool, Bool)] = [
        ("plain 200 (heuristic)", "GET", 200, [], "", false, true),
        ("POST", "POST", 200, [("Cache-Control", "max-age=60")], "", false, false),
        ("HEAD", "HEAD", 200, [("Cache-Control", "max-age=60")], "", false, false),
        ("no-store", "GET", 200, [("Cache-Control", "no-store, max-age=60")], "", false, false),
        ("request no-store", "GET", 200, [("Cache-Control", "max-age=60")], "no-store", false, false),
        ("private", "GET", 200, [("Cache-Control", "private, max-age=60")], "", false, false),
        ("private with fields", "GET", 200, [("Cache-Control", "private=\"set-cookie\", max-age=60")], "", false, true),
        ("302 without freshness", "GET", 302, [], "", false, false),
        ("302 with max-age", "GET", 302, [("Cache-Control", "max-age=60")], "", false, true),
        ("302 with Expires", "GET", 302, [("Expires", HTTPDate.format(now + 60))], "", false, true),
        ("500 without freshness", "GET", 500, [], "", false, false),
        ("404 (heuristic)", "GET", 404, [], "", false, true),
        ("206", "GET", 206, [("Cache-Control", "max-age=60")], "", false, false),
        ("304", "GET", 304, [("Cache-Control", "max-age=60")], "", false, false),
        ("Vary: *", "GET", 200, [("Cache-Control", "max-age=60"), ("Vary", "*")], "", false, false),
        ("Authorization, max-age", "GET", 200, [("Cache-Control", "max-age=60")], "", true, false),
        ("Authorization, public", "GET", 200, [("Cache-Control", "public, max-age=60")], "", true, true),
        ("Authorization, s-maxage", "GET", 200, [("Cache-Control", "s-maxage=60")], "", true, true),
        ("Authorization, must-revalidate", "GET", 200, [("Cache-Control", "must-revalidate, max-age=60")], "", true, true),
        ("must-understand on 200 overrides no-store", "GET", 200, [("Cache-Control", "must-understand, no-store, max-age=60")], "", false, true),
        ("must-understand on an unknown status", "GET", 299, [("Cache-Control", "must-understand, no-store, max-age=60")], "", false, false),
    ]

    @Test func whatMayBeStored() {
        for (what, method, status, fields, request, auth, stored) in Self.storing {
            let ok = CachePolicy.mayStore(method: method, request: CacheControl([request]), hasAuthorization: auth, response: Self.facts(status, fields))
            #expect(ok == stored, "\(what)")
        }
    }

    /// (what, fields, lifetime)
    static let lifetimes: [(String, [(String, String)], Int)] = [
        ("max-age", [date, ("Cache-Control", "max-age=100")], 100),
        ("s-maxage wins for a shared cache", [date, ("Cache-Control", "max-age=100, s-maxage=7")], 7),
        ("max-age wins over Expires", [date, ("Cache-Control", "max-age=100"), ("Expires", HTTPDate.format(now + 5000))], 100),
        ("Expires minus Date", [date, ("Expires", HTTPDate.format(now + 300))], 300),
        ("Expires in the past", [date, ("Expires", HTTPDate.format(now - 300))], 0),
        ("invalid Expires is expired", [date, ("Expires", "0")], 0),
        ("invalid max-age is stale", [date, ("Cache-Control", "max-age=x"), ("Expires", HTTPDate.format(now + 300))], 0),
        ("heuristic: 10% since Last-Modified", [date, ("Last-Modified", HTTPDate.format(now - 10_000))], 1_000),
        ("heuristic is capped at a day", [date, ("Last-Modified", HTTPDate.format(now - 100 * 86_400))], 86_400),
        ("no information", [date], 0),
    ]

    @Test func freshnessLifetime() {
        for (what, fields, lifetime) in Self.lifetimes {
            #expect(CachePolicy.freshnessLifetime(Self.facts(200, fields), responseTime: Self.now) == lifetime, "\(what)")
        }
        // A configured default lifetime replaces the heuristic, never explicit freshness.
        var configured = CachePolicy.Heuristic()
        configured.defaultLifetime = 120
        #expect(CachePolicy.freshnessLifetime(Self.facts(200, [Self.date]), responseTime: Self.now, heuristic: configured) == 120)
        #expect(CachePolicy.freshnessLifetime(Self.facts(200, [Self.date, ("Cache-Control", "max-age=5")]), responseTime: Self.now, heuristic: configured) == 5)
        #expect(CachePolicy.freshnessLifetime(Self.facts(302, [Self.date]), responseTime: Self.now, heuristic: configured) == 0)
        // No heuristic freshness for a status that is not heuristically cacheable.
        #expect(CachePolicy.freshnessLifetime(Self.facts(302, [Self.date, ("Last-Modified", HTTPDate.format(Self.now - 10_000))]), responseTime: Self.now) == 0)
    }

    /// RFC 9111 section 4.2.3 with numbers.
    @Test func currentAge() {
        // The origin said Age 10, the response took 2 s to arrive, it has been stored 30 s.
        let t = ResponseTiming(requestTime: 1000, responseTime: 1002, date: 1001, age: 10)
        #expect(t.currentAge(now: 1032) == 10 + 2 + 30)
        // A Date in the past beyond the Age makes the apparent age win.
        let late = ResponseTiming(requestTime: 1000, responseTime: 1002, date: 900, age: nil)
        #expect(late.currentAge(now: 1002) == 102)
        // A Date in the future counts as 0, not negative.
        let clockSkew = ResponseTiming(requestTime: 1000, responseTime: 1000, date: 5000, age: nil)
        #expect(clockSkew.currentAge(now: 1010) == 10)
    }

    typealias Use = CachePolicy.Use
    /// (what, request Cache-Control, response Cache-Control, lifetime, age, expected)
    static let uses: [(String, String, String, Int, Int, Use)] = [
        ("fresh", "", "", 100, 10, .fresh),
        ("stale", "", "", 100, 150, .validate(staleIfError: false)),
        ("exactly the lifetime is stale", "", "", 100, 100, .validate(staleIfError: false)),
        ("response no-cache", "", "no-cache", 100, 10, .validate(staleIfError: false)),
        ("request no-cache", "no-cache", "", 100, 10, .validate(staleIfError: false)),
        ("request max-age below the age", "max-age=5", "", 100, 10, .validate(staleIfError: false)),
        ("request max-age=0", "max-age=0", "", 100, 0, .fresh),
        ("request min-fresh", "min-fresh=95", "", 100, 10, .validate(staleIfError: false)),
        ("max-stale without value", "max-stale", "", 100, 5000, .staleAllowed),
        ("max-stale too small", "max-stale=10", "", 100, 150, .validate(staleIfError: false)),
        ("max-stale but must-revalidate", "max-stale", "must-revalidate", 100, 150, .validate(staleIfError: false)),
        ("max-stale but s-maxage", "max-stale", "s-maxage=100", 100, 150, .validate(staleIfError: false)),
        ("stale-while-revalidate window", "", "stale-while-revalidate=60", 100, 150, .staleWhileRevalidate),
        ("after the window", "", "stale-while-revalidate=60", 100, 170, .validate(staleIfError: false)),
        ("stale-if-error window", "", "stale-if-error=600", 100, 150, .validate(staleIfError: true)),
        ("stale-if-error but must-revalidate", "", "stale-if-error=600, must-revalidate", 100, 150, .validate(staleIfError: false)),
    ]

    @Test func whetherAStoredResponseMayAnswer() {
        for (what, request, response, lifetime, age, expected) in Self.uses {
            let use = CachePolicy.use(request: CacheControl([request]), response: CacheControl([response]), lifetime: lifetime, age: age)
            #expect(use == expected, "\(what): \(use)")
        }
        // Pragma: no-cache counts only without Cache-Control in the request.
        #expect(CachePolicy.use(request: CacheControl(), pragmaNoCache: true, response: CacheControl(), lifetime: 100, age: 1) == .validate(staleIfError: false))
        #expect(CachePolicy.use(request: CacheControl(["max-age=50"]), pragmaNoCache: true, response: CacheControl(), lifetime: 100, age: 1) == .fresh)
    }
}

@Suite("Vary and conditional requests")
struct VaryAndConditionalTests {
    @Test func varyKeys() {
        let headers: [String: [String]] = ["accept-encoding": ["gzip,  br", "zstd"], "accept-language": ["de"]]
        let lookup: (String) -> [String] = { headers[$0] ?? [] }
        #expect(CachePolicy.varyKey([], header: lookup) == "")
        #expect(CachePolicy.varyKey(["*"], header: lookup) == nil)
        let a = CachePolicy.varyKey(["accept-encoding", "accept-language"], header: lookup)
        let b = CachePolicy.varyKey(["accept-language", "accept-encoding"], header: { ["accept-encoding": ["gzip,br,zstd"], "accept-language": ["de"]][$0] ?? [] })
        #expect(a != nil && a == b, "order of Vary and whitespace do not matter")
        #expect(a != CachePolicy.varyKey(["accept-encoding", "accept-language"], header: { _ in [] }), "absent fields are a different key")
    }

    static let etag = "\"v1\""
    static let modified = 1_000_000
    /// (what, If-None-Match, If-Modified-Since, 304?)
    static let conditionals: [(String, [String], String?, Bool)] = [
        ("same tag", ["\"v1\""], nil, true),
        ("weak comparison", ["W/\"v1\""], nil, true),
        ("one of a list", ["\"a\", \"v1\""], nil, true),
        ("a comma inside a tag", ["\"a,b\""], nil, false),
        ("star", ["*"], nil, true),
        ("other tag", ["\"v2\""], nil, false),
        ("If-None-Match wins over If-Modified-Since", ["\"v2\""], HTTPDate.format(2_000_000), false),
        ("not modified since", [], HTTPDate.format(1_000_000), true),
        ("modified since", [], HTTPDate.format(999_999), false),
        ("invalid date ignored", [], "yesterday", false),
        ("a date in the future is ignored", [], HTTPDate.format(5_000_000), false),
    ]

    @Test func conditionalRequestsAnsweredFromTheStore() {
        for (what, inm, ims, expected) in Self.conditionals {
            let r = CachePolicy.notModified(ifNoneMatch: inm, ifModifiedSince: ims, etag: Self.etag, lastModified: Self.modified, date: nil, now: 3_000_000)
            #expect(r == expected, "\(what)")
        }
    }
}

@Suite("LRU store by size")
struct LRUStoreTests {
    @Test func evictsTheLeastRecentlyUsedFirst() {
        var store = LRUStore<Int>(capacity: 100)
        store.insert("a", 1, size: 40)
        store.insert("b", 2, size: 40)
        #expect(store.get("a") == 1)  // a is now the most recent
        let evicted = store.insert("c", 3, size: 40)
        #expect(evicted.map(\.key) == ["b"] && evicted.map(\.value) == [2] && store.keysByRecency == ["c", "a"] && store.totalSize == 80)
        #expect(store.insert("huge", 9, size: 101).isEmpty && store.peek("huge") == nil)
        store.insert("a", 4, size: 10)  // replaced, not added
        #expect(store.count == 2 && store.totalSize == 50 && store.peek("a") == 4)
        #expect(store.remove("c") == 3 && store.keysByRecency == ["a"])
    }

    /// Random operations against a plain model: same contents, same order, total within bounds.
    @Test func agreesWithAModel() {
        var store = LRUStore<Int>(capacity: 1000)
        var model: [(String, Int, Int)] = []  // most recent first
        var rng = SystemRandomNumberGenerator()
        for step in 0..<5000 {
            let key = "k\(Int.random(in: 0..<40, using: &rng))"
            switch Int.random(in: 0..<3, using: &rng) {
            case 0:
                let size = Int.random(in: 1...300, using: &rng)
                store.insert(key, step, size: size)
                model.removeAll { $0.0 == key }
                model.insert((key, step, size), at: 0)
                while model.reduce(0, { $0 + $1.2 }) > 1000 { model.removeLast() }
            case 1:
                let got = store.get(key)
                if let i = model.firstIndex(where: { $0.0 == key }) {
                    #expect(got == model[i].1)
                    model.insert(model.remove(at: i), at: 0)
                } else {
                    #expect(got == nil)
                }
            default:
                store.remove(key)
                model.removeAll { $0.0 == key }
            }
            #expect(store.keysByRecency == model.map(\.0))
            #expect(store.totalSize == model.reduce(0) { $0 + $1.2 } && store.totalSize <= 1000)
        }
    }
}

@Suite("Byte ranges from stored answers (RFC 9110 section 14)")
struct ByteRangeTests {
    @Test(arguments: [
        ("bytes=0-9", ByteRange.satisfiable(0...9)),
        ("bytes=5-", .satisfiable(5...99)),
        ("bytes=-10", .satisfiable(90...99)),
        ("bytes=-500", .satisfiable(0...99)),
        ("bytes=90-500", .satisfiable(90...99)),
        ("Bytes=1-2", .satisfiable(1...2)),
        ("bytes = 1-2", .ignore),
        ("bytes=100-", .unsatisfiable),
        ("bytes=-0", .unsatisfiable),
        ("bytes=0-1,5-6", .ignore),
        ("items=0-1", .ignore),
        ("bytes=5-1", .ignore),
        ("bytes=a-b", .ignore),
        ("bytes=-", .ignore),
    ])
    func ranges(value: String, expected: ByteRange) {
        #expect(ByteRange.parse(value, length: 100) == expected, "\(value)")
    }
}
