import Foundation
import NIOCore
import ProximaConfig
import ProximaHTTP1
import ProximaPolicy
import ProximaTesting
import Testing

@Suite("URL rules, element hiding, header rules and page templates through the proxy")
struct FilteringProxyTests {
    @Test func urlRulesWithTypesPartyAndExceptions() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        // The port is part of what a pattern sees (`||host/path` does not match `host:8080/path`).
        let site = "127.0.0.1:\(origin.port)"
        let list = BlockList(name: "ads", source: "inline", format: .adblock, text: """
            /banner/*/img^
            ||\(site)/tracker/$third-party
            ||127.0.0.1^*/ads/$script
            @@||\(site)/ads/ok.js
            """)
        try await ProxyHarness.withProxy({ c in c.blocklists = [list] }) { proxy in
            func ask(_ path: String, _ headers: String = "") async throws -> Reply {
                try #require(try await send(proxy, ["GET \(origin.url)\(path) HTTP/1.1\r\nHost: x\r\n\(headers)\r\n"]).replies.first)
            }
            let banner = try await ask("/banner/x/img", "Accept: image/avif,image/*\r\n")
            #expect(banner.status == 200 && banner.header("content-type") == "image/gif")
            // Not blocked: the origin answers (404 for paths it does not know).
            #expect(try await ask("/banner/x/imgraph").status == 404)
            // Third party only when the page is another site.
            #expect(try await ask("/tracker/p", "Referer: http://news.example/article\r\n").status == 204)
            #expect(try await ask("/tracker/p", "Referer: http://127.0.0.1/home\r\n").status == 404)
            #expect(try await ask("/tracker/p").status == 404)
            #expect(try await ask("/tracker/p", "Sec-Fetch-Site: cross-site\r\n").status == 204)
            // Scripts only; the exception lets one through.
            #expect(try await ask("/ads/x.js").status == 204)
            #expect(try await ask("/ads/x.png", "Sec-Fetch-Dest: image\r\n").status == 404)
            #expect(try await ask("/ads/ok.js").status == 404)
            let json = try await ask("/ads/y.js", "Accept: application/json\r\nSec-Fetch-Dest: document\r\n")
            #expect(json.status == 404, "a page load is not a script")
            let records = jsonRecords(await proxy.waitForAccessLog(count: 10))
            let details = records.compactMap { $0["detail"] as? String }
            #expect(details.contains("blocklist ads: /banner/*/img^"))
            #expect(details.contains("blocklist ads: ||\(site)/tracker/$third-party"))
            #expect(details.contains("blocklist ads: ||127.0.0.1^*/ads/$script"))
        }
    }

    static let hidingList = BlockList(name: "cosmetic", source: "inline", format: .adblock, text: """
        ##.ad-banner
        ###sponsor-box
        ##.unused-class
        127.0.0.1##.story
        """)

    /// The page with the proxy's style elements taken out again.
    static func withoutInsertedStyles(_ body: String) -> String {
        var text = body
        while let start = text.range(of: "<style data-proxima="), let end = text.range(of: "</style>", range: start.upperBound..<text.endIndex) {
            text.removeSubrange(start.lowerBound..<end.upperBound)
        }
        return text
    }

    @Test func elementHidingIsStreamedIntoPages() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ c in c.blocklists = [Self.hidingList] }) { proxy in
            for path in ["/html/0", "/htmlchunked/7", "/htmlchunked/1"] {
                let r = try #require(try await send(proxy, [
                    "GET \(origin.url)\(path) HTTP/1.1\r\nHost: x\r\nAccept: text/html,application/xhtml+xml\r\nAccept-Encoding: gzip, br\r\n\r\n",
                ]).replies.first)
                #expect(r.status == 200 && r.header("transfer-encoding") == "chunked" && r.header("content-length") == nil, "\(path)")
                #expect(r.header("x-accept-encoding") == "none", "the page must be asked for uncompressed")
                #expect(r.body.contains("<HEAD data-x='a>b'><style data-proxima=\"site\">.story{display:none!important}</style><title>"), "\(path): \(r.body)")
                let tail = "<style data-proxima=\"generic\">#sponsor-box{display:none!important}.ad-banner{display:none!important}</style>"
                #expect(r.body.hasSuffix(tail), "\(path): \(r.body)")
                #expect(!r.body.contains("unused-class"))
                #expect(Self.withoutInsertedStyles(r.body) == OriginPages.html, "\(path): the page is otherwise untouched")
            }
            // An HTTP/1.0 client gets the page until the connection closes.
            let old = try await send(proxy, ["GET \(origin.url)/html/0 HTTP/1.0\r\nAccept: text/html\r\n\r\n"])
            let page = try #require(old.replies.first)
            #expect(old.closed && page.header("transfer-encoding") == nil && page.body.contains(".story{display:none!important}"))
            // Not a page load, a HEAD, or a compressed page: untouched.
            let script = try #require(try await send(proxy, ["GET \(origin.url)/html/0 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"]).replies.first)
            #expect(script.body == OriginPages.html && script.header("content-length") == String(OriginPages.html.utf8.count))
            let head = try #require(try await send(proxy, ["HEAD \(origin.url)/html/0 HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n"], responses: 1).replies.first)
            #expect(head.header("content-length") == String(OriginPages.html.utf8.count))
        }
        try await ProxyHarness.withProxy({ c in
            c.blocklists = [Self.hidingList]
            c.filtering.elementHiding = false
        }) { proxy in
            let r = try #require(try await send(proxy, ["GET \(origin.url)/html/0 HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nAccept-Encoding: gzip\r\n\r\n"]).replies.first)
            #expect(r.body == OriginPages.html && r.header("x-accept-encoding") == "gzip")
        }
    }

    @Test func headerRulesBothWays() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ c in
            c.headerRules = [
                HeaderRule(direction: .request, name: "X-Client-Data", action: .remove),
                HeaderRule(direction: .request, name: "User-Agent", action: .replace(try! HeaderValuePattern("Chrome/[0-9.]+"), with: "Chrome/130.0")),
                HeaderRule(direction: .request, name: "DNT", action: .set("1")),
                HeaderRule(direction: .response, name: "Server", action: .remove),
                HeaderRule(direction: .response, name: "X-Powered-By", action: .set("nothing")),
            ]
        }) { proxy in
            let r = try await run(curlPath, [
                "-s", "-i", "-x", proxy.url, "-H", "X-Client-Data: CIu2yQE=", "-A", "Mozilla/5.0 Chrome/131.0.6778.85 Safari/537.36",
                "\(origin.url)/headers",
            ])
            let seen = r.output.lowercased()
            #expect(!seen.contains("x-client-data") && seen.contains("dnt: 1") && seen.contains("chrome/130.0 safari"), "\(r.output)")
            let page = try await run(curlPath, ["-s", "-D", "-", "-o", "/dev/null", "-x", proxy.url, "\(origin.url)/html/0"]).output.lowercased()
            #expect(!page.contains("server:") && page.contains("x-powered-by: nothing"), "\(page)")
        }
    }

    @Test func accessRuleTurnsOnThePrivacyProfile() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ c in
            var privateRule = AccessRule(name: "private", action: .allow, headers: [HeaderCondition(name: "x-mode", pattern: try! URLPattern("private"))])
            privateRule.anonymize = true
            c.access = AccessPolicy(rules: [privateRule, AccessRule(name: "local", action: .allow, clients: [CIDR("127.0.0.0/8")!])])
            c.proxy.userAgent = "Mozilla/5.0 (common)"
        }) { proxy in
            let plain = try await run(curlPath, ["-s", "-x", proxy.url, "-A", "MyBrowser/1", "-e", "http://127.0.0.1/page/secret", "\(origin.url)/headers"]).output
            #expect(plain.contains("MyBrowser/1") && plain.contains("/page/secret"))
            let hidden = try await run(curlPath, [
                "-s", "-x", proxy.url, "-A", "MyBrowser/1", "-e", "http://127.0.0.1/page/secret", "-H", "X-Mode: private", "\(origin.url)/headers",
            ]).output
            #expect(!hidden.contains("MyBrowser/1") && hidden.contains("Mozilla/5.0 (common)") && !hidden.contains("/page/secret"), "\(hidden)")
        }
    }

    @Test func pagesFromTemplatesAndStructuredFields() async throws {
        let dir = NSTemporaryDirectory() + "proxima-pages-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "<html><body><h1>Not here</h1><p>$message</p><p id=rule>$rule</p><p id=list>$list</p><p id=id>$request_id</p></body></html>"
            .write(toFile: dir + "/403.html", atomically: true, encoding: .utf8)
        let pages = try ConfigLoader.load(yaml: "pages:\n  directory: \(dir)\n").get().pages
        try await ProxyHarness.withProxy({ c in
            c.pages = pages
            c.blocklists = [BlockList(name: "malware", source: "inline", format: .hosts, text: "0.0.0.0 bad.example\n")]
            c.access = AccessPolicy(rules: [
                AccessRule(name: "no-social", action: .deny, domains: [DomainPattern(".social.example")!]),
                AccessRule(name: "local", action: .allow, clients: [CIDR("127.0.0.0/8")!]),
            ])
        }) { proxy in
            let html = try #require(try await send(proxy, ["GET http://www.social.example/ HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n"]).replies.first)
            #expect(html.status == 403 && html.body.hasPrefix("<html><body><h1>Not here</h1>") && html.body.contains("<p id=rule>no-social</p>"))
            #expect(html.body.contains("<p id=id>\(html.header("x-request-id") ?? "?")</p>"))
            let blocked = try #require(try await send(proxy, ["GET http://bad.example/ HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n"]).replies.first)
            #expect(blocked.body.contains("<p id=list>malware</p><") && blocked.body.contains("<p id=rule>bad.example</p>"))
            // No JSON template: the built-in JSON page, with the rule and list as fields.
            let json = try #require(try await send(proxy, ["GET http://bad.example/x HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nSec-Fetch-Dest: document\r\n\r\n"]).replies.first)
            let obj = try #require(try JSONSerialization.jsonObject(with: Data(json.body.utf8)) as? [String: Any])
            #expect(obj["list"] as? String == "malware" && obj["rule"] as? String == "bad.example" && obj["status"] as? Int == 403)
        }
    }
}

@Suite("A real page in a real browser with EasyList and EasyPrivacy")
struct AdBlockingBrowserTests {
    static let assets = "/usr/share/chromium/extensions/ublock-origin/assets/thirdparties/easylist"

    @Test func pageLoadsWithItsAdsBlockedAndHidden() async throws {
        let chromium = try #require(chromiumPath(), "headless Chromium is needed (apt-get install chromium; .ci/run does)")
        let easylist = try #require(readTextFile("\(Self.assets)/easylist.txt"), "apt-get install webext-ublock-origin-chromium")
        let easyprivacy = try #require(readTextFile("\(Self.assets)/easyprivacy.txt"))
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        let lists = [
            BlockList(name: "easylist", source: "easylist.txt", format: .adblock, text: easylist),
            BlockList(name: "easyprivacy", source: "easyprivacy.txt", format: .adblock, text: easyprivacy),
        ]
        let suffixes = PublicSuffixList(text: readTextFile(PublicSuffixList.systemPath) ?? "")
        try await ProxyHarness.withProxy({ c in
            c.blocklists = lists
            c.filtering.suffixes = suffixes
        }) { proxy in
            let flags = [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--user-data-dir=\(makeTempPath("proxima-chromium", ""))", "--virtual-time-budget=5000",
                // Loopback would bypass the proxy without the second flag.
                "--proxy-server=\(proxy.url)", "--proxy-bypass-list=<-loopback>",
            ]
            let dom = try await withBrowser { try await run(chromium, flags + ["--dump-dom", "\(origin.url)/site/page.html"]).output }
            let marker = "data-result=\""
            let start = try #require(dom.range(of: marker), "the page did not finish loading: \(dom.prefix(2000))")
            let json = dom[start.upperBound...].prefix { $0 != "\"" }.replacingOccurrences(of: "&quot;", with: "\"")
            let result = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any], "\(json)")
            #expect(result["app"] as? Bool == true, "the page's own script must run")
            #expect(result["ad"] as? Bool == false, "the ad script must be blocked")
            #expect(result["logo"] as? Int == 3, "the page's own image must load")
            #expect(result["tracker"] as? Int == 1, "the tracking pixel must be the 1×1 stand-in")
            #expect(result["slot"] as? String == "none", "EasyList's ##.ad-slot must hide the ad box")
            #expect(result["article"] as? String == "block")
            let records = jsonRecords(proxy.accessLogLines())
            let details = records.compactMap { $0["detail"] as? String }
            #expect(details.contains("blocklist easylist: /js/flyad.js"), "\(details)")
            #expect(details.contains("blocklist easyprivacy: /__utm.gif"), "\(details)")
        }
    }
}
