import Testing

@testable import ProximaPolicy

@Suite("Access rule conditions: schemes, URLs, headers, time windows")
struct ConditionTests {
    func request(url: String = "http://example.com/a", scheme: String? = "http", method: String = "GET", time: Int = 0) -> AccessRequest {
        AccessRequest(client: IPAddress("10.0.0.1")!, method: method, host: "example.com", port: 80, url: url, scheme: scheme, time: time)
    }

    @Test func schemesAndURLs() throws {
        let rule = AccessRule(
            name: "r", action: .deny, schemes: ["http"], urlPrefixes: ["http://example.com/downloads/"],
            urlPatterns: [try URLPattern(#"\.(exe|msi)$"#)])
        #expect(rule.matches(request(url: "http://example.com/downloads/setup.exe")))
        #expect(!rule.matches(request(url: "http://example.com/downloads/readme.txt")))
        #expect(!rule.matches(request(url: "http://example.com/other/setup.exe")))
        // CONNECT has no scheme: a scheme condition never matches it.
        #expect(!AccessRule(name: "s", action: .deny, schemes: ["http"]).matches(request(url: "example.com:443", scheme: nil, method: "CONNECT")))
        #expect(throws: (any Error).self) { try URLPattern("(unclosed") }
    }

    @Test func headers() throws {
        let rule = AccessRule(name: "h", action: .deny, headers: [
            HeaderCondition(name: "User-Agent", pattern: try URLPattern("^curl/")), HeaderCondition(name: "X-Debug"),
        ])
        #expect(rule.matches(request(), headers: ["user-agent": "curl/8.0", "x-debug": "1"]))
        #expect(!rule.matches(request(), headers: ["user-agent": "Mozilla/5.0", "x-debug": "1"]))
        #expect(!rule.matches(request(), headers: ["user-agent": "curl/8.0"]))
        #expect(!rule.matches(request()))
    }

    /// 2024-01-01 was a Monday.
    static let mondayMidnightUTC = 1_704_067_200

    @Test func timeWindowsInAZone() throws {
        let office = try TimeWindow(days: [1, 2, 3, 4, 5], start: 9 * 60, end: 17 * 60 + 30, zone: "UTC")
        let m = Self.mondayMidnightUTC
        #expect(!office.contains(unixSeconds: m + 8 * 3600 + 59 * 60))
        #expect(office.contains(unixSeconds: m + 9 * 3600))
        #expect(office.contains(unixSeconds: m + 17 * 3600 + 29 * 60))
        #expect(!office.contains(unixSeconds: m + 17 * 3600 + 30 * 60))
        #expect(!office.contains(unixSeconds: m - 12 * 3600))  // Sunday noon
        // Berlin is UTC+1 in January: 08:30 UTC is 09:30 there.
        let berlin = try TimeWindow(days: [1], start: 9 * 60, end: 10 * 60, zone: "Europe/Berlin")
        #expect(berlin.contains(unixSeconds: m + 8 * 3600 + 30 * 60))
        #expect(!berlin.contains(unixSeconds: m + 9 * 3600 + 30 * 60))
        // Over midnight: Friday 22:00 to Saturday 06:00.
        let night = try TimeWindow(days: [5], start: 22 * 60, end: 6 * 60, zone: "UTC")
        let friday = m + 4 * 86400
        #expect(night.contains(unixSeconds: friday + 23 * 3600))
        #expect(night.contains(unixSeconds: friday + 86400 + 5 * 3600))
        #expect(!night.contains(unixSeconds: friday + 86400 + 7 * 3600))
        #expect(!night.contains(unixSeconds: friday + 5 * 3600))  // Friday morning belongs to Thursday's night
        #expect(throws: TimeWindow.ParseError.zone("Mars/Olympus")) { try TimeWindow(days: [1], start: 0, end: 60, zone: "Mars/Olympus") }
        #expect(TimeWindow.parseHours("09:00-17:30")! == (540, 1050))
        #expect(TimeWindow.parseHours("9-17") == nil)
        #expect(TimeWindow.parseHours("25:00-26:00") == nil)
        #expect(TimeWindow.parseDay("Monday") == 1)
    }
}

@Suite("Rules that need the user")
struct IdentityRuleTests {
    let policy = AccessPolicy(rules: [
        AccessRule(name: "open", action: .allow, domains: [DomainPattern("public.example")!]),
        AccessRule(name: "login", action: .authenticate, clients: [CIDR("10.0.0.0/8")!]),
        AccessRule(name: "admins", action: .allow, users: ["root"]),
        AccessRule(name: "staff", action: .allow, groups: ["staff"]),
    ])

    func decide(host: String = "x.example", user: String? = nil, groups: Set<String> = [], client: String = "10.1.1.1") -> AccessDecision {
        var r = AccessRequest(client: IPAddress(client)!, method: "GET", host: host, port: 80)
        r.user = user
        r.groups = groups
        return policy.evaluate(r)
    }

    @Test func challengeOnlyWhereTheUserMatters() {
        #expect(policy.usesIdentity)
        #expect(decide(host: "public.example").allowed)  // decided before any login rule
        #expect(decide() == AccessDecision(allowed: false, rule: "login", challenge: true))
        #expect(decide(user: "root").allowed && decide(user: "root").rule == "admins")
        #expect(decide(user: "ann", groups: ["staff"]).rule == "staff")
        #expect(decide(user: "eve") == AccessDecision(allowed: false, rule: nil))
        // Outside 10/8 the login rule does not apply, but the user rules still need a user.
        #expect(decide(client: "192.168.1.1") == AccessDecision(allowed: false, rule: "admins", challenge: true))
        #expect(!AccessPolicy.localNetworksOnly.usesIdentity)
    }
}

@Suite("Destination networks")
struct DestinationConditionTests {
    @Test func anyResolvedAddressCounts() {
        let rule = AccessRule(name: "internal", action: .deny, destinations: [CIDR("10.0.0.0/8")!, CIDR("fd00::/8")!])
        var r = AccessRequest(client: IPAddress("192.168.1.1")!, method: "GET", host: "intranet", port: 80)
        #expect(!rule.matches(r))  // nothing resolved: no match
        r.destinations = [IPAddress("93.184.216.34")!, IPAddress("10.1.2.3")!]
        #expect(rule.matches(r))
        r.destinations = [IPAddress("fd12::1")!]
        #expect(rule.matches(r))
        r.destinations = [IPAddress("2001:db8::1")!]
        #expect(!rule.matches(r))
        #expect(AccessPolicy(rules: [rule]).usesDestinations)
        #expect(!AccessPolicy.localNetworksOnly.usesDestinations)
    }
}
