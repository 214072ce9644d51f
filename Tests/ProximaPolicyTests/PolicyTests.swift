import Testing

@testable import ProximaPolicy

@Suite("IP addresses and CIDR")
struct CIDRTests {
    @Test(arguments: [
        ("10.0.0.0/8", "10.255.1.2", true), ("10.0.0.0/8", "11.0.0.1", false),
        ("192.168.1.7", "192.168.1.7", true), ("192.168.1.7", "192.168.1.8", false),
        ("0.0.0.0/0", "8.8.8.8", true), ("172.16.0.0/12", "172.31.255.255", true), ("172.16.0.0/12", "172.32.0.0", false),
        ("::1", "::1", true), ("fc00::/7", "fd12:3456::1", true), ("fc00::/7", "fe80::1", false),
        ("2001:db8::/32", "2001:db8:ffff::1", true), ("2001:db8::/32", "2001:db9::1", false),
        ("10.0.0.0/8", "::ffff:10.1.2.3", true), ("::/0", "2001::1", true),
    ])
    func containment(_ c: (String, String, Bool)) throws {
        let cidr = try #require(CIDR(c.0))
        let ip = try #require(IPAddress(c.1))
        #expect(cidr.contains(ip) == c.2, "\(c.0) ∋ \(c.1)")
    }

    @Test(arguments: ["10.0.0.0/33", "256.0.0.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "::1/129", "1::2::3", "gggg::1", "10.0.0.0/", "10.0.0.0/-1", "", ":::"])
    func rejectsInvalid(_ s: String) {
        #expect(CIDR(s) == nil)
    }

    @Test(arguments: [("::1", "::1"), ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"), ("fe80::", "fe80::"), ("1.2.3.4", "1.2.3.4"), ("0:0:0:0:0:0:0:0", "::")])
    func printsCanonically(_ c: (String, String)) {
        #expect(IPAddress(c.0)?.description == c.1)
    }
}

@Suite("Access rules")
struct AccessRuleTests {
    let policy = AccessPolicy(rules: [
        AccessRule(name: "block-social", action: .deny, domains: [DomainPattern(".facebook.com")!]),
        AccessRule(name: "lan-web", action: .allow, clients: [CIDR("192.168.0.0/16")!], methods: ["GET", "CONNECT"], ports: [80, 443]),
    ])

    func decide(_ ip: String, _ method: String, _ host: String, _ port: Int) -> AccessDecision {
        policy.evaluate(AccessRequest(client: IPAddress(ip)!, method: method, host: host, port: port))
    }

    @Test func firstMatchWins() {
        #expect(decide("192.168.1.1", "GET", "www.facebook.com", 80) == AccessDecision(allowed: false, rule: "block-social"))
        #expect(decide("192.168.1.1", "GET", "example.com", 80) == AccessDecision(allowed: true, rule: "lan-web"))
    }

    @Test func everyConditionMustMatchAndDefaultIsDeny() {
        #expect(decide("192.168.1.1", "POST", "example.com", 80) == AccessDecision(allowed: false, rule: nil))
        #expect(decide("192.168.1.1", "GET", "example.com", 8080).allowed == false)
        #expect(decide("10.0.0.1", "GET", "example.com", 80).allowed == false)
    }

    @Test(arguments: [
        ("example.com", "example.com", true), ("example.com", "www.example.com", false),
        (".example.com", "example.com", true), (".example.com", "a.b.example.com", true), (".example.com", "badexample.com", false),
        ("*.example.com", "example.com", false), ("*.example.com", "www.example.com", true), ("Example.COM", "example.com.", true),
    ])
    func domains(_ c: (String, String, Bool)) throws {
        #expect(try #require(DomainPattern(c.0)).matches(c.1) == c.2)
    }
}
