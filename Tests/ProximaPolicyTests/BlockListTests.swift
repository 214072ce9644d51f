import Foundation
import Testing

@testable import ProximaPolicy

@Suite("Block lists: hosts, domain lists, Adblock host rules")
struct BlockListTests {
    @Test func hostsFiles() {
        let list = BlockList(name: "h", source: "t", format: .hosts, text: """
            # comment
            127.0.0.1 localhost
            0.0.0.0 ads.example tracker.example  # two on a line
            ::1 ip6-localhost
            0.0.0.0
            0.0.0.0 Bad_Host!.example
            """)
        #expect(list.match(host: "ads.example") == "ads.example")
        #expect(list.match(host: "cdn.ads.example") == "ads.example")
        #expect(list.match(host: "tracker.example") == "tracker.example")
        #expect(list.match(host: "localhost") == nil)
        #expect(list.match(host: "example") == nil)
        #expect(list.match(host: "notads.example") == nil)
        #expect(list.skipped == ["not 'address host'": 1, "not a host name": 1])
    }

    @Test func domainLists() {
        let list = BlockList(name: "d", source: "t", format: .domains, text: "malware.example\n# c\n! c\n1.2.3.4\nbad host\n")
        #expect(list.match(host: "x.malware.example") == "malware.example")
        #expect(list.match(host: "1.2.3.4") == "1.2.3.4")
        #expect(list.skipped["not a host name"] == 1)
    }

    @Test func adblockHostRulesExceptionsAndImportant() {
        let list = BlockList(name: "a", source: "t", format: .adblock, text: """
            [Adblock Plus 2.0]
            ! title
            ||ads.example^
            ||tracker.example^$important
            @@||ok.ads.example^
            @@||tracker.example^
            ||all.example^$all
            ||images.example^$image
            ||3p.example^$third-party
            example.com##.ad-banner
            ##.ad
            /banner/*/img^
            /^https?://[a-z]+\\.evil\\//
            ||host.example/path^
            plain.example
            """)
        #expect(list.match(host: "x.ads.example") == "||ads.example^")
        #expect(list.match(host: "ok.ads.example") == nil)
        #expect(list.match(host: "sub.ok.ads.example") == nil)
        #expect(list.match(host: "tracker.example") == "||tracker.example^$important")
        #expect(list.match(host: "all.example") == "||all.example^")
        #expect(list.match(host: "www.plain.example") == "||plain.example^")
        #expect(list.match(host: "images.example") == nil)
        #expect(list.match(host: "3p.example") == nil)
        // The rest are not host rules: URL patterns, narrowed rules and element hiding.
        #expect(list.skipped.isEmpty)
        #expect(list.networkRuleCount == 5)
        #expect(list.cosmeticRuleCount == 2)
    }

    static let assets = "/usr/share/chromium/extensions/ublock-origin/assets/thirdparties"

    /// The real lists from Debian's webext-ublock-origin-chromium (.ci/run installs it).
    @Test(arguments: [("easylist", "easylist/easylist.txt"), ("easyprivacy", "easylist/easyprivacy.txt"), ("urlhaus", "urlhaus-filter/urlhaus-filter-online.txt")])
    func realListsLoad(_ name: String, _ file: String) throws {
        let path = "\(Self.assets)/\(file)"
        let text = try #require(try? String(contentsOfFile: path, encoding: .utf8), "\(path) is missing (apt-get install webext-ublock-origin-chromium)")
        let clock = ContinuousClock()
        let start = clock.now
        let list = BlockList(name: name, source: path, format: .adblock, text: text)
        let loadTime = clock.now - start
        #expect(list.ruleCount > 2500, "\(name): \(list.ruleCount) rules")
        #expect(loadTime < .seconds(20))
        // A host rule taken from the file itself is enforced, subdomains included.
        let line = try #require(text.split(separator: "\n").first {
            ($0.hasPrefix("||") && $0.hasSuffix("^") && !$0.dropFirst(2).dropLast().contains("/"))
                || (!$0.hasPrefix("!") && $0.contains(".") && BlockList.hostName(String($0)) != nil)
        })
        let host = line.hasPrefix("||") ? String(line.dropFirst(2).dropLast()) : String(line)
        try #require(BlockList.hostName(host) != nil, "\(host)")
        #expect(list.match(host: host) != nil || list.allowed.contains(host), "\(host)")
        #expect(list.match(host: "sub." + host) != nil || list.allowed.contains(host))
        #expect(list.match(host: "example.org") == nil)
    }
}

@Suite("Block lists compiled together")
struct BlockListSetTests {
    @Test func firstListWinsAndExceptionsStayInTheirList() {
        let a = BlockList(name: "a", source: "t", format: .adblock, text: "||ads.example^\n@@||ok.shared.example^\n||shared.example^\n")
        let b = BlockList(name: "b", source: "t", format: .hosts, text: "0.0.0.0 shared.example\n0.0.0.0 only-b.example\n")
        let c = BlockList(name: "c", source: "t", format: .adblock, text: "||ok.shared.example^$important\n")
        let set = BlockListSet([a, b, c])
        #expect(set.match(host: "x.ads.example")! == ("a", "||ads.example^"))
        #expect(set.match(host: "shared.example")! == ("a", "||shared.example^"))
        // a's exception does not silence b, and c's $important wins over it.
        #expect(set.match(host: "ok.shared.example")!.list == "b")
        #expect(BlockListSet([a, c]).match(host: "ok.shared.example")! == ("c", "||ok.shared.example^$important"))
        #expect(BlockListSet([a]).match(host: "ok.shared.example") == nil)
        #expect(set.match(host: "only-b.example")! == ("b", "only-b.example"))
        #expect(set.match(host: "example") == nil)
        #expect(BlockListSet([]).match(host: "ads.example") == nil)
    }

    /// Every host of a generated mix gets the same answer from the set as from the lists one by
    /// one (the set is only a faster index).
    @Test func agreesWithTheListsOneByOne() throws {
        let path = "\(BlockListTests.assets)/easylist/easyprivacy.txt"
        let text = try #require(try? String(contentsOfFile: path, encoding: .utf8), "\(path) is missing")
        let list = BlockList(name: "ep", source: path, format: .adblock, text: text)
        let hosts = HostMix.hosts(from: text, count: 3000)
        let set = BlockListSet([list])
        for h in hosts {
            #expect((set.match(host: h)?.rule) == list.match(host: h), "\(h)")
        }
    }
}

enum HostMix {
    static func hosts(from text: String, count: Int) -> [String] {
        var listed: [String] = []
        for line in text.split(separator: "\n") where line.hasPrefix("||") && line.hasSuffix("^") {
            let h = String(line.dropFirst(2).dropLast())
            if BlockList.hostName(h) != nil { listed.append(h) }
        }
        var rng = SystemRandomNumberGenerator()
        return (0..<count).map { i in
            switch i % 3 {
            case 0: return listed.randomElement(using: &rng) ?? "a.example"
            case 1: return "cdn." + (listed.randomElement(using: &rng) ?? "a.example")
            default: return "www.site\(i).example"
            }
        }
    }
}
