import Foundation
import Testing

@testable import ProximaPolicy

@Suite("Element hiding")
struct CosmeticTests {
    static let rules = """
        ##.ad-banner
        ###sponsor-box
        ##div[data-ad]
        ##.unused-class
        example.com##.site-ad
        example.com,~shop.example.com##.promo
        example.com#@#.ad-banner
        example.com#@#div[data-ad]
        ##.story
        #@#.story
        @@||quiet.example^$elemhide
        @@||plain.example^$generichide
        """

    static func page(_ host: String) -> PageCosmetics {
        CosmeticFilter([BlockList(name: "c", source: "t", format: .adblock, text: rules)]).page(host: host)
    }

    static func selectors(_ ids: [Int], _ page: PageCosmetics) -> [String] { ids.map { page.filter.selectors[$0] } }

    @Test func rulesForASiteAndGenericRulesByClassAndId() {
        let news = Self.page("www.news.example")
        #expect(Self.selectors(news.upFront, news) == ["div[data-ad]"])
        #expect(Self.selectors(news.selectors(forKeys: [".ad-banner", "#sponsor-box", ".story"]), news) == ["#sponsor-box", ".ad-banner"])
        let ex = Self.page("www.example.com")
        // example.com#@#div[data-ad]: an everywhere rule excepted on one site (and its subdomains).
        #expect(Set(Self.selectors(ex.upFront, ex)) == [".site-ad", ".promo"])
        // example.com#@#.ad-banner: not on this site.
        #expect(Self.selectors(ex.selectors(forKeys: [".ad-banner"]), ex).isEmpty)
        let shop = Self.page("shop.example.com")
        #expect(Set(Self.selectors(shop.upFront, shop)) == [".site-ad"])
        // $elemhide: nothing; $generichide: only rules naming the site (none here).
        #expect(!Self.page("quiet.example").hasWork)
        let plain = Self.page("plain.example")
        #expect(plain.upFront.isEmpty && !plain.generic)
    }

    @Test func parsingKeepsPlainSelectorsOnly() {
        let list = BlockList(name: "c", source: "t", format: .adblock, text: """
            ##.ok
            example.*##.entity
            ##.x:has-text(Sponsored)
            ##a[href^="http://ads."]
            ##.evil{color:red}
            ##.a, .b
            ##div[style="width:1px;height:1px"]
            ##div[title="a</style><script>"]
            ##div[title="open
            """)
        #expect(list.cosmetic.map(\.selector) == [".ok", "a[href^=\"http://ads.\"]", ".a, .b", "div[style=\"width:1px;height:1px\"]"])
        #expect(list.cosmetic.compactMap(\.key) == [".ok"])
        #expect(list.skipped["entity domain (name.*)"] == 1)
        #expect(list.skipped["procedural cosmetic (:has-text)"] == 1)
        #expect(list.skipped["unsafe selector"] == 3)
    }

    /// The page cut at every position, and in pieces of every size: the style sheet goes in
    /// once, right after `<HEAD …>` (not `<header>`), and the classes and ids are found.
    @Test func streamedInAnyPiecesTheStyleGoesAfterTheHeadTag() {
        let html = Array("""
            <!DOCTYPE html><html><HEAD data-x='a>b'><title>t</title></HEAD><body><header>h</header>
            <div class="ad-banner wide" id=sponsor-box>AD</div><p class='story'>text</p></body></html>
            """.utf8)
        let expectedAt = html.indices.first { html[$0...].starts(with: Array("<title>".utf8)) }!
        let page = Self.page("news.example")
        for size in [1, 2, 3, 7, 13, 64, html.count] {
            var stream = ElementHidingStream(page: page)
            var inserted: [Int] = []
            var offset = 0
            while offset < html.count {
                let piece = Array(html[offset..<min(offset + size, html.count)])
                if let at = piece.withUnsafeBytes({ stream.scan($0) }) { inserted.append(offset + at) }
                offset += piece.count
            }
            #expect(inserted == [expectedAt], "pieces of \(size)")
            let tail = String(decoding: stream.finish(), as: UTF8.self)
            #expect(tail == "<style data-proxima=\"generic\">#sponsor-box{display:none!important}.ad-banner{display:none!important}</style>", "pieces of \(size)")
        }
    }

    @Test func withoutAHeadOrBodyTagTheStyleGoesAtTheEnd() {
        let page = Self.page("news.example")
        var stream = ElementHidingStream(page: page)
        let fragment = Array("<div class=\"ad-banner\">x</div>".utf8)
        #expect(fragment.withUnsafeBytes { stream.scan($0) } == nil)
        let tail = String(decoding: stream.finish(), as: UTF8.self)
        #expect(tail.hasPrefix("<style data-proxima=\"site\">div[data-ad]{display:none!important}</style>"))
        #expect(tail.hasSuffix(".ad-banner{display:none!important}</style>"))
    }
}

@Suite("Request type, party and public suffixes")
struct FilterRequestTests {
    @Test(arguments: [
        ("script", nil, "/x", ResourceType.script), ("image", nil, "/x", .image), ("iframe", nil, "/", .subdocument),
        ("document", nil, "/", .document), ("style", nil, "/", .stylesheet), ("font", nil, "/", .font), ("video", nil, "/", .media),
        ("empty", nil, "/api", .xmlhttprequest), (nil, "text/html,application/xhtml+xml", "/", .document),
        (nil, "text/css,*/*;q=0.1", "/s", .stylesheet), (nil, "image/avif,image/webp,*/*", "/p", .image),
        (nil, "*/*", "/app.js?v=2", .script), (nil, "*/*", "/a/b.PNG", .image), (nil, "*/*", "/f.woff2", .font),
        (nil, "*/*", "/v.mp4", .media), (nil, "*/*", "/data", .other), (nil, "*/*", "/dir.js/file", .other),
    ] as [(String?, String?, String, ResourceType)])
    func typeFromHeaders(_ dest: String?, _ accept: String?, _ path: String, _ type: ResourceType) {
        #expect(ResourceType.infer(secFetchDest: dest, accept: accept, path: path) == type)
    }

    @Test func xhrAndWebSockets() {
        #expect(ResourceType.infer(secFetchDest: nil, accept: "*/*", path: "/", requestedWith: "XMLHttpRequest") == .xmlhttprequest)
        #expect(ResourceType.infer(secFetchDest: nil, accept: nil, path: "/ws", upgrade: "websocket") == .websocket)
    }

    @Test func registrableDomainsWithTheRealList() throws {
        let text = try #require(try? String(contentsOfFile: PublicSuffixList.systemPath, encoding: .utf8), "apt-get install publicsuffix")
        let psl = PublicSuffixList(text: text)
        #expect(psl.registrableDomain("news.bbc.co.uk") == "bbc.co.uk")
        #expect(psl.registrableDomain("a.b.example.com") == "example.com")
        #expect(psl.registrableDomain("foo.github.io") == "foo.github.io")
        #expect(psl.registrableDomain("co.uk") == "co.uk")
        #expect(psl.registrableDomain("127.0.0.1") == "127.0.0.1")
        // Wildcard and exception rules (*.ck, !www.ck).
        #expect(psl.registrableDomain("a.b.ck") == "a.b.ck")
        #expect(psl.registrableDomain("www.ck") == "www.ck")
        #expect(PublicSuffixList().registrableDomain("news.bbc.co.uk") == "co.uk")
    }

    @Test func thirdPartyFromFetchMetadataOrThePage() {
        let psl = PublicSuffixList(text: "com\nco.uk\n")
        func third(_ host: String, _ source: String?, _ site: String? = nil) -> Bool? {
            FilterRequest.thirdParty(host: host, sourceHost: source, secFetchSite: site, suffixes: psl)
        }
        #expect(third("cdn.news.com", "www.news.com") == false)
        #expect(third("ads.tracker.com", "www.news.com") == true)
        #expect(third("a.bbc.co.uk", "www.bbc.co.uk") == false)
        #expect(third("x.com", nil) == nil)
        #expect(third("x.com", "x.com", "cross-site") == true)
        #expect(third("x.com", "y.com", "same-site") == false)
        #expect(FilterRequest.host(ofURL: "https://user@WWW.Example.org:8443/a?b") == "www.example.org")
        #expect(FilterRequest.host(ofURL: "http://[::1]:80/") == "::1")
        #expect(FilterRequest.host(ofURL: "not a url") == nil)
    }
}
