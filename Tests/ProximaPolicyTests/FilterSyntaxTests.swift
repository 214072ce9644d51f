import Foundation
import Testing

@testable import ProximaPolicy

/// The network-filter syntax, with the examples of the Adblock Plus filter documentation
/// (help.eyeo.com, "How to write filters") and uBlock Origin's wiki ("Static filter syntax").
@Suite("Adblock network filters")
struct FilterSyntaxTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let rules: String
        let url: String
        var type: ResourceType = .image
        var source: String? = nil
        var thirdParty: Bool? = nil
        let blocked: Bool
        var testDescription: String { "\(rules.replacingOccurrences(of: "\n", with: " ; ")) → \(url) [\(type.names.joined(separator: ","))\(source.map { " from " + $0 } ?? "")]" }
    }

    static let cases: [Case] = [
        // Wildcards and separators (ABP: "/banner/*/img^").
        Case(rules: "/banner/*/img^", url: "http://example.com/banner/foo/img", blocked: true),
        Case(rules: "/banner/*/img^", url: "http://example.com/banner/foo/bar/img?param", blocked: true),
        Case(rules: "/banner/*/img^", url: "http://example.com/banner//img/foo", blocked: true),
        Case(rules: "/banner/*/img^", url: "http://example.com/banner/img", blocked: false),
        Case(rules: "/banner/*/img^", url: "http://example.com/banner/foo/imgraph", blocked: false),
        Case(rules: "/banner/*/img^", url: "http://example.com/banner/foo/img.gif", blocked: false),
        // Domain anchor.
        Case(rules: "||ads.example.com^", url: "http://ads.example.com/foo.gif", blocked: true),
        Case(rules: "||ads.example.com^", url: "http://server1.ads.example.com/foo.gif", blocked: true),
        Case(rules: "||ads.example.com^", url: "https://ads.example.com:8000/", blocked: true),
        Case(rules: "||ads.example.com^", url: "http://ads.example.com.ua/foo.gif", blocked: false),
        Case(rules: "||ads.example.com^", url: "http://example.com/redirect/http://ads.example.com/", blocked: false),
        Case(rules: "||example.com/banner.gif", url: "http://www.example.com/banner.gif", blocked: true),
        Case(rules: "||example.com/banner.gif", url: "http://badexample.com/banner.gif", blocked: false),
        Case(rules: "||ads.", url: "http://ads.tracker.example/x.js", blocked: true),
        Case(rules: "||ads.", url: "http://uploads.example/x.js", blocked: false),
        // Start and end anchors.
        Case(rules: "|http://example.com/|", url: "http://example.com/", blocked: true),
        Case(rules: "|http://example.com/|", url: "http://example.com/foo.gif", blocked: false),
        Case(rules: "|http://example.com/|", url: "http://example.info/redirect/http://example.com/", blocked: false),
        Case(rules: "swf|", url: "http://example.com/annoyingflash.swf", blocked: true),
        Case(rules: "swf|", url: "http://example.com/swf/index.html", blocked: false),
        Case(rules: "|http://baddomain.example/", url: "http://baddomain.example/banner.gif", blocked: true),
        Case(rules: "|http://baddomain.example/", url: "http://gooddomain.example/analyze?http://baddomain.example", blocked: false),
        // Separator examples (ABP: "^example.com^" and friends).
        Case(rules: "^example.com^", url: "http://example.com:8000/foo.bar?a=12&b=%D1%82", blocked: true),
        Case(rules: "^foo.bar^", url: "http://example.com:8000/foo.bar?a=12&b=%D1%82", blocked: true),
        Case(rules: "^foo.bar^", url: "http://example.com:8000/foo.barista", blocked: false),
        Case(rules: "/adserver^", url: "http://example.com/adserver", blocked: true),
        // Plain substrings, case-insensitive unless $match-case.
        Case(rules: "/banner/", url: "http://example.com/BANNER/x.gif", blocked: true),
        Case(rules: "-ad-banner.", url: "http://example.com/top-ad-banner.png", blocked: true),
        Case(rules: "-didomi.js", url: "http://example.com/x-didomi.js", type: .script, blocked: true),
        Case(rules: "ad*.gif", url: "http://example.com/adverts/big.gif", blocked: true),
        Case(rules: "ad*.gif", url: "http://example.com/adverts/big.png", blocked: false),
        Case(rules: "/BannerAd$match-case", url: "http://example.com/BannerAd.gif", blocked: true),
        Case(rules: "/BannerAd$match-case", url: "http://example.com/bannerad.gif", blocked: false),
        // Regular expressions.
        Case(rules: "/^https?:\\/\\/[a-z]+\\.evil\\//", url: "http://www.evil/x", blocked: true),
        Case(rules: "/^https?:\\/\\/[a-z]+\\.evil\\//", url: "http://www.good/x", blocked: false),
        Case(rules: "/banner\\d+\\.gif/$image", url: "http://example.com/banner123.gif", blocked: true),
        Case(rules: "/banner\\d+\\.gif/$image", url: "http://example.com/banner123.gif", type: .script, blocked: false),
        // Types: explicit, negated, and the default that leaves the page itself alone.
        Case(rules: "||ads.example^$script", url: "http://ads.example/a.js", type: .script, blocked: true),
        Case(rules: "||ads.example^$script", url: "http://ads.example/a.png", type: .image, blocked: false),
        Case(rules: "||ads.example^$~script", url: "http://ads.example/a.png", type: .image, blocked: true),
        Case(rules: "||ads.example^$~script", url: "http://ads.example/a.js", type: .script, blocked: false),
        Case(rules: "||ads.example^$xhr,css", url: "http://ads.example/a", type: .stylesheet, blocked: true),
        Case(rules: "/ads/*", url: "http://example.com/ads/page.html", type: .document, blocked: false),
        Case(rules: "/ads/*", url: "http://example.com/ads/frame.html", type: .subdocument, blocked: true),
        Case(rules: "||ads.example^", url: "http://ads.example/", type: .document, blocked: true),
        Case(rules: "||ads.example^$document", url: "http://ads.example/", type: .document, blocked: true),
        Case(rules: "||ads.example^$document", url: "http://ads.example/a.png", type: .image, blocked: false),
        // Party.
        Case(rules: "||tracker.example^$third-party", url: "http://tracker.example/p.gif", thirdParty: true, blocked: true),
        Case(rules: "||tracker.example^$third-party", url: "http://tracker.example/p.gif", thirdParty: false, blocked: false),
        Case(rules: "||tracker.example^$third-party", url: "http://tracker.example/p.gif", thirdParty: nil, blocked: false),
        Case(rules: "||tracker.example^$~third-party", url: "http://tracker.example/p.gif", thirdParty: false, blocked: true),
        Case(rules: "||tracker.example^$1p", url: "http://tracker.example/p.gif", thirdParty: true, blocked: false),
        // Page domains.
        Case(rules: "/ads/*$domain=example.com|~foo.example.com", url: "http://cdn.example/ads/x.gif", source: "example.com", blocked: true),
        Case(rules: "/ads/*$domain=example.com|~foo.example.com", url: "http://cdn.example/ads/x.gif", source: "www.example.com", blocked: true),
        Case(rules: "/ads/*$domain=example.com|~foo.example.com", url: "http://cdn.example/ads/x.gif", source: "foo.example.com", blocked: false),
        Case(rules: "/ads/*$domain=example.com|~foo.example.com", url: "http://cdn.example/ads/x.gif", source: "other.org", blocked: false),
        Case(rules: "/ads/*$domain=example.com|~foo.example.com", url: "http://cdn.example/ads/x.gif", blocked: false),
        Case(rules: "/ads/*$domain=~example.com", url: "http://cdn.example/ads/x.gif", blocked: true),
        Case(rules: "/ads/*$domain=~example.com", url: "http://cdn.example/ads/x.gif", source: "example.com", blocked: false),
        Case(rules: "|https://$script,third-party,domain=streamsite.example", url: "https://x.example/a.js", type: .script, source: "streamsite.example", thirdParty: true, blocked: true),
        Case(rules: "|https://$script,third-party,domain=streamsite.example", url: "https://x.example/a.js", type: .script, source: "news.example", thirdParty: true, blocked: false),
        // Exceptions, $important, $badfilter.
        Case(rules: "||ads.example^\n@@||ads.example/allowed/", url: "http://ads.example/allowed/x.gif", blocked: false),
        Case(rules: "||ads.example^\n@@||ads.example/allowed/", url: "http://ads.example/other/x.gif", blocked: true),
        Case(rules: "/banner/*\n@@/banner/*$image", url: "http://example.com/banner/a.gif", blocked: false),
        Case(rules: "/banner/*\n@@/banner/*$image", url: "http://example.com/banner/a.js", type: .script, blocked: true),
        Case(rules: "/banner/*$important\n@@/banner/*", url: "http://example.com/banner/a.gif", blocked: true),
        Case(rules: "||ads.example^$important\n@@||ads.example^", url: "http://ads.example/a.gif", blocked: true),
        Case(rules: "/banner/*\n@@||site.example^$document", url: "http://cdn.example/banner/a.gif", source: "www.site.example", blocked: false),
        Case(rules: "/banner/*\n@@||site.example^$document", url: "http://cdn.example/banner/a.gif", source: "other.example", blocked: true),
        Case(rules: "/banner/*$image\n/banner/*$image,badfilter", url: "http://example.com/banner/a.gif", blocked: false),
        // uBlock Origin: a bare host name is a host rule; $redirect still blocks.
        Case(rules: "malware.example", url: "http://dl.malware.example/x.exe", type: .other, blocked: true),
        Case(rules: "||ads.example/pixel.gif$image,redirect=1x1.gif", url: "http://ads.example/pixel.gif", blocked: true),
        // Options that cannot be honoured leave the rule out instead of over-blocking.
        Case(rules: "||example.com^$popup", url: "http://example.com/x.gif", blocked: false),
        Case(rules: "||example.com^$csp=script-src 'none'", url: "http://example.com/x.gif", blocked: false),
        Case(rules: "||example.com^$removeparam=utm_source", url: "http://example.com/x.gif?utm_source=a", blocked: false),
    ]

    @Test(arguments: cases)
    func decides(_ c: Case) {
        let list = BlockList(name: "t", source: "t", format: .adblock, text: c.rules)
        let set = BlockListSet([list])
        let request = FilterRequest(
            url: c.url, host: FilterRequest.host(ofURL: c.url) ?? "", type: c.type, sourceHost: c.source,
            thirdParty: c.thirdParty)
        let hit = set.match(request)
        #expect((hit != nil) == c.blocked, "\(String(describing: hit))")
        if let hit { #expect(c.rules.split(separator: "\n").map(String.init).contains(hit.rule) || hit.rule.hasPrefix("||")) }
    }

    @Test func skippedLinesAreCountedByReason() {
        let list = BlockList(name: "t", source: "t", format: .adblock, text: """
            ||a.example^$popup
            ||b.example^$csp=default-src 'none'
            ||c.example^$nonsense
            example.com##+js(nobab)
            example.com#?#div:has-text(Ad)
            example.com#$#body { color: red }
            example.com##.ad:style(color: red)
            ##.ad { }
            """)
        #expect(list.skipped["option $popup"] == 1)
        #expect(list.skipped["option $csp"] == 1)
        #expect(list.skipped["unknown option $nonsense"] == 1)
        #expect(list.skipped["scriptlet or HTML filter (##+js, ##^)"] == 1)
        #expect(list.skipped["procedural cosmetic (#?#)"] == 1)
        #expect(list.skipped["scriptlet or style injection (#$#)"] == 1)
        #expect(list.skipped["procedural cosmetic (:style)"] == 1)
        #expect(list.skipped["unsafe selector"] == 1)
        #expect(list.ruleCount == 0)
    }

    @Test func tokensOnlyWhereAWildcardCannotExtendThem() {
        func tokens(_ rule: String) -> [String] {
            guard case .network(let f) = NetworkFilter.parse(Substring(rule)) else { return ["?"] }
            return f.tokens.map { String(decoding: $0.bytes, as: UTF8.self) + "@\($0.offset)" }
        }
        #expect(tokens("/banner/*/img^") == ["banner@1", "img@-1"])
        #expect(tokens("||ads.example^") == ["ads@0", "example@4"])
        #expect(tokens("ads.example") == [])
        #expect(tokens("|http://x") == ["http@0"])
        #expect(tokens("swf|") == [])
        #expect(tokens("/swf|") == ["swf@1"])
        #expect(tokens("a*bc/d") == [])
        #expect(NetworkFilter.regexTokens("^https?:\\/\\/ads\\.example\\/") .map { String(decoding: $0, as: UTF8.self) } == ["ads", "example"])
        #expect(NetworkFilter.regexTokens("(a|b)\\/ads\\/").map { String(decoding: $0, as: UTF8.self) } == ["ads"])
        #expect(NetworkFilter.regexTokens("ads|banner").isEmpty)
        #expect(NetworkFilter.regexTokens("\\/ads?\\/").isEmpty)
    }

    /// The engine's index must not change an answer: every rule of a real list, tried alone by
    /// brute force, against the indexed set, for a mix of URLs.
    @Test func indexAgreesWithBruteForce() async throws {
        let path = "\(BlockListTests.assets)/easylist/easyprivacy.txt"
        let text = try #require(try? String(contentsOfFile: path, encoding: .utf8), "\(path) is missing")
        // Tens of seconds of CPU: on a thread of its own, so that the two threads of the test
        // run's task pool stay free for the tests that wait on sockets.
        let (mismatches, checked, blocked) = await onOwnThread { Self.compareWithBruteForce(text, source: path) }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(10))")
        #expect(blocked > 100, "the URLs must exercise the rules")
        #expect(checked > 1000)
    }

    static func compareWithBruteForce(_ text: String, source path: String) -> (mismatches: [String], checked: Int, blocked: Int) {
        let lines = text.split(separator: "\n").filter { !$0.hasPrefix("!") && !$0.hasPrefix("[") && !$0.hasPrefix("||") && !$0.contains("#") }.prefix(3000)
        let filters: [NetworkFilter] = lines.compactMap {
            if case .network(let f) = NetworkFilter.parse($0), !f.exception { return f }
            return nil
        }
        let set = BlockListSet([BlockList(name: "ep", source: path, format: .adblock, text: filters.map(\.text).joined(separator: "\n"))])
        let paths = ["/", "/analytics.js", "/pixel.gif?e=view", "/collect?v=1&tid=UA-1", "/b/ss/x/1/JS-2.0/s123", "/api/track/event", "/static/main.css"]
        var checked = 0
        var blocked = 0
        var mismatches: [String] = []
        for (i, f) in filters.enumerated() where i % 7 == 0 {
            // A URL made to contain the rule's own literal text, and plain ones.
            let literal = String(decoding: f.pattern.filter { $0 != UInt8(ascii: "*") && $0 != UInt8(ascii: "^") && $0 != UInt8(ascii: "|") }, as: UTF8.self)
            let urls = ["https://host\(i).example/\(literal)", "https://\(literal.hasPrefix("/") ? "x.example" : literal)/"] + paths.map { "https://site\(i).example\($0)" }
            for url in urls {
                let request = FilterRequest(url: url, host: FilterRequest.host(ofURL: url) ?? "", type: .script, sourceHost: "page.example", thirdParty: true)
                let indexed = set.match(request) != nil
                let brute = filters.contains { $0.bruteForceMatches(request) }
                if indexed != brute { mismatches.append("\(url): indexed \(indexed), brute force \(brute)") }
                checked += 1
                if brute { blocked += 1 }
            }
        }
        return (mismatches, checked, blocked)
    }
}

/// Runs CPU-bound work on a thread of its own and waits for it without holding a thread of
/// the concurrency pool.
func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: work()) }
    }
}

extension NetworkFilter {
    /// The slow, obvious reading of a rule, for comparison with the index.
    func bruteForceMatches(_ r: FilterRequest) -> Bool {
        guard types.contains(r.type) || !types.intersection(r.type).isEmpty else { return false }
        switch party {
        case .any: break
        case .third: if r.thirdParty != true { return false }
        case .first: if r.thirdParty != false { return false }
        }
        if !includeDomains.isEmpty || !excludeDomains.isEmpty {
            guard let source = r.sourceHost else { return includeDomains.isEmpty }
            let under = { (d: String) in source == d || source.hasSuffix("." + d) }
            if excludeDomains.contains(where: under) { return false }
            if !includeDomains.isEmpty, !includeDomains.contains(where: under) { return false }
        }
        let url = Array((matchCase ? r.url : r.url.lowercased()).utf8)
        if let regex {
            return (try? Regex(regex).ignoresCase().firstMatch(in: r.url.lowercased())) != nil
        }
        return url.withUnsafeBufferPointer { u in
            pattern.withUnsafeBufferPointer { p in
                let (hs, he) = FilterEngine.hostRange(u)
                var flags: FilterEngine.Flags = []
                if hostAnchored { flags.insert(.hostAnchored) }
                if leftAnchored { flags.insert(.leftAnchored) }
                if rightAnchored { flags.insert(.rightAnchored) }
                return FilterEngine.matches(p, flags, u, hostStart: hs, hostEnd: he)
            }
        }
    }
}
