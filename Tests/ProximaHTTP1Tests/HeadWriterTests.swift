import Foundation
import NIOCore
import Testing

@testable import ProximaHTTP1

@Suite("Forwarded heads: hop-by-hop removal, Via, X-Forwarded-For")
struct HeadWriterTests {
    func upstreamRequest(_ text: String, mode: ForwardedForMode = .add) throws -> String {
        let head = try #require(try parseRequest(text))
        let target = try RequestTarget.parseAbsolute(head.target)
        var out = ByteBuffer()
        HeadWriter.writeUpstreamRequest(head, target: target, via: "px (proxima)", forwardedFor: mode, clientIP: "10.0.0.9", into: &out)
        return out.readString(length: out.readableBytes)!
    }

    @Test func removesHopByHopAndRewritesTarget() throws {
        let out = try upstreamRequest(
            "GET http://example.com:8080/p?q HTTP/1.1\r\nHost: wrong\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: 5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nTE: trailers\r\nTrailer: X\r\nUpgrade: h2c\r\nAccept: */*\r\n\r\n")
        #expect(out.hasPrefix("GET /p?q HTTP/1.1\r\nHost: example.com:8080\r\n"))
        for gone in ["Connection", "X-Hop", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "TE:", "Trailer", "Upgrade", "wrong"] {
            #expect(!out.contains(gone), "\(gone) should be removed")
        }
        #expect(out.contains("Accept: */*\r\n"))
        #expect(out.contains("Via: 1.1 px (proxima)\r\n"))
        #expect(out.hasSuffix("\r\n\r\n"))
    }

    @Test func forwardedForModes() throws {
        let req = "GET http://a/ HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"
        #expect(try upstreamRequest(req, mode: .add).contains("X-Forwarded-For: 1.2.3.4, 10.0.0.9\r\n"))
        let kept = try upstreamRequest(req, mode: .keep)
        #expect(kept.contains("X-Forwarded-For: 1.2.3.4\r\n") && !kept.contains("10.0.0.9"))
        #expect(!(try upstreamRequest(req, mode: .remove)).contains("X-Forwarded-For"))
        #expect(try upstreamRequest("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n").contains("X-Forwarded-For: 10.0.0.9\r\n"))
    }

    @Test func framingFieldsAreWrittenAnew() throws {
        let chunked = try upstreamRequest("POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        #expect(chunked.contains("Transfer-Encoding: chunked\r\n"))
        let cl = try upstreamRequest("POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n")
        #expect(cl.contains("Content-Length: 7\r\n"))
    }

    @Test func responseHeadForClient() throws {
        let head = try #require(try parseResponse("HTTP/1.1 200 OK\r\nConnection: X-Up\r\nX-Up: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"))
        var out = ByteBuffer()
        HeadWriter.writeClientResponse(head, framing: .chunked, via: "px", connection: .none, into: &out)
        let text = out.readString(length: out.readableBytes)!
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(!text.contains("X-Up") && !text.contains("Keep-Alive"))
        #expect(text.contains("Content-Type: text/plain\r\n"))
        #expect(text.contains("Transfer-Encoding: chunked\r\n"))
        #expect(text.contains("Via: 1.1 px\r\n"))
    }

    /// The writers reserve their output up front from a bound; a head made only of
    /// X-Forwarded-For values (each copied again into the combined field) and a long Via name is
    /// the case closest to that bound. Output must be exact and follow bytes already there.
    @Test func worstCaseHeadsFitTheirReservation() throws {
        let value = String(repeating: "9", count: 200)
        let fields = (0..<60).map { _ in "x-forwarded-for:\(value)\r\n" }.joined()
        let head = try #require(try parseRequest("GET http://h/ HTTP/1.1\r\nHost: h\r\n\(fields)\r\n"))
        let target = try RequestTarget.parseAbsolute(head.target)
        let via = String(repeating: "v", count: 500)
        var out = ByteBuffer(string: "prefix")
        HeadWriter.writeUpstreamRequest(head, target: target, via: via, forwardedFor: .add, clientIP: "10.0.0.9", into: &out)
        let text = out.readString(length: out.readableBytes)!
        let combined = Array(repeating: value, count: 60).joined(separator: ", ") + ", 10.0.0.9"
        #expect(text == "prefixGET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: \(combined)\r\nVia: 1.1 \(via)\r\n\r\n")

        let response = try #require(try parseResponse("HTTP/1.0 299 \(value)\r\nA:b\r\n\r\n"))
        var out2 = ByteBuffer(string: "x")
        HeadWriter.writeClientResponse(response, framing: .length(Int.max), via: via, connection: .keepAlive, into: &out2)
        #expect(out2.readString(length: out2.readableBytes)! ==
            "xHTTP/1.1 299 \(value)\r\nA:b\r\nVia: 1.0 \(via)\r\nContent-Length: \(Int.max)\r\nConnection: keep-alive\r\n\r\n")
    }

    @Test func headResponseKeepsContentLength() throws {
        let head = try #require(try parseResponse("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", method: "HEAD"))
        var out = ByteBuffer()
        HeadWriter.writeClientResponse(head, framing: .none, via: nil, connection: .close, into: &out)
        let text = out.readString(length: out.readableBytes)!
        #expect(text.contains("Content-Length: 1234\r\n"))
        #expect(text.contains("Connection: close\r\n"))
    }

    @Test func loopDetection() throws {
        let head = try #require(try parseRequest("GET http://a/ HTTP/1.1\r\nHost: a\r\nVia: 1.1 other, 1.0 Me (proxima/0.1)\r\n\r\n"))
        #expect(HeadWriter.viaContains(head, pseudonym: "me"))
        #expect(!HeadWriter.viaContains(head, pseudonym: "proxima"))
    }
}

@Suite("Anonymized requests")
struct AnonymizerTests {
    func anonymized(_ text: String, _ a: Anonymizer = Anonymizer(), crossSite: Bool? = nil) throws -> String {
        let head = try #require(try parseRequest(text))
        let target = try RequestTarget.parseAbsolute(head.target)
        var out = ByteBuffer()
        HeadWriter.writeUpstreamRequest(head, target: target, via: "px", forwardedFor: .add, clientIP: "10.0.0.9", anonymizer: a, crossSite: crossSite, into: &out)
        return out.readString(length: out.readableBytes)!
    }

    @Test func identifyingFieldsGoAndTheRestIsRewritten() throws {
        let out = try anonymized("""
            GET http://shop.example.com/cart?id=1 HTTP/1.1\r
            Host: shop.example.com\r
            User-Agent: MyRareBrowser/0.1 (build 4711)\r
            Referer: https://www.example.com/private/page?token=secret\r
            Cookie: session=abc\r
            X-Forwarded-For: 192.168.1.20\r
            Forwarded: for=192.168.1.20\r
            From: alice@example.org\r
            X-Real-IP: 192.168.1.20\r
            Sec-CH-UA-Platform: "Linux"\r
            Accept: text/html\r
            Content-Length: 2\r
            \r

            """)
        #expect(out.hasPrefix("GET /cart?id=1 HTTP/1.1\r\nHost: shop.example.com\r\n"))
        for gone in ["MyRareBrowser", "secret", "private", "192.168.1.20", "10.0.0.9", "alice@", "Sec-CH-UA", "Via:", "X-Forwarded-For", "Forwarded:"] {
            #expect(!out.contains(gone), "\(gone) was sent")
        }
        #expect(out.contains("User-Agent: \(Anonymizer.commonUserAgent)\r\n"))
        #expect(out.contains("Referer: https://www.example.com/\r\n"))
        // Same site (example.com): the cookie stays.
        #expect(out.contains("Cookie: session=abc\r\n"))
        #expect(out.contains("Accept: text/html\r\n"))
        #expect(out.contains("Content-Length: 2\r\n"))
        #expect(out.hasSuffix("\r\n\r\n"))
    }

    @Test func cookiesToOtherSitesAreDropped() throws {
        let out = try anonymized("GET http://tracker.example.net/p HTTP/1.1\r\nHost: x\r\nReferer: https://news.example.com/a\r\nCookie: uid=42\r\n\r\n")
        #expect(!out.contains("uid=42"))
        let noReferer = try anonymized("GET http://tracker.example.net/p HTTP/1.1\r\nHost: x\r\nCookie: uid=42\r\n\r\n")
        #expect(noReferer.contains("Cookie: uid=42"))
    }

    @Test func helpers() {
        #expect(Anonymizer.site("a.b.example.com") == "example.com")
        #expect(Anonymizer.site("localhost") == "localhost")
        #expect(Anonymizer.urlHost("https://user@a.example:8443/x") == "a.example")
        #expect(Anonymizer.urlHost("http://[::1]:80/") == "::1")
        #expect(Anonymizer.origin("https://a.example:8443/x?y") == "https://a.example:8443")
        #expect(Anonymizer.origin("not a url") == nil)
    }
}

@Suite("Privacy profile with the Public Suffix List's answer")
struct AnonymizerSiteTests {
    /// alice.github.io and bob.github.io look like one site by their last two labels, but
    /// github.io is a public suffix: the caller's answer (from the list) decides.
    @Test func theCallersCrossSiteAnswerWins() throws {
        let request = "GET http://bob.github.io/p HTTP/1.1\r\nHost: x\r\nReferer: https://alice.github.io/page\r\nCookie: uid=42\r\n\r\n"
        let t = AnonymizerTests()
        #expect(try t.anonymized(request).contains("Cookie: uid=42"))
        #expect(!(try t.anonymized(request, crossSite: true)).contains("Cookie"))
        #expect(try t.anonymized(request, crossSite: false).contains("Cookie: uid=42"))
    }
}

@Suite("Header rules (remove, set, replace) per direction")
struct HeaderRuleTests {
    func rewritten(_ text: String, _ rules: [HeaderRule], anonymizer: Anonymizer? = nil, extra: [String] = []) throws -> String {
        let head = try #require(try parseRequest(text))
        let target = try RequestTarget.parseAbsolute(head.target)
        let edit = HeaderEdit(rules: rules, bytes: head.bytes, fields: head.fields, extraRemovals: extra)
        var out = ByteBuffer()
        HeadWriter.writeUpstreamRequest(
            head, target: target, via: nil, forwardedFor: .remove, clientIP: "10.0.0.9", anonymizer: anonymizer, edit: edit, into: &out)
        return out.readString(length: out.readableBytes)!
    }

    static let request = "GET http://a.example/ HTTP/1.1\r\nHost: a\r\nUser-Agent: Mozilla/5.0 Chrome/131.0.1 Safari\r\nX-Client-Data: abc\r\nSec-CH-UA: x\r\nSec-CH-UA-Platform: y\r\nDNT: 0\r\nAccept-Encoding: gzip\r\nAccept: */*\r\n\r\n"

    @Test func removeSetAndReplace() throws {
        let rules = [
            HeaderRule(direction: .request, name: "X-Client-Data", action: .remove),
            HeaderRule(direction: .request, name: "sec-ch-*", action: .remove),
            HeaderRule(direction: .request, name: "User-Agent", action: .replace(try HeaderValuePattern("Chrome/[0-9.]+"), with: "Chrome/130.0")),
            HeaderRule(direction: .request, name: "DNT", action: .set("1")),
            HeaderRule(direction: .request, name: "X-Proxy-Note", action: .set("hello")),
        ]
        let out = try rewritten(Self.request, rules)
        for gone in ["X-Client-Data", "Sec-CH-UA", "DNT: 0", "Chrome/131"] { #expect(!out.contains(gone), "\(gone)") }
        #expect(out.contains("User-Agent: Mozilla/5.0 Chrome/130.0 Safari\r\n"))
        #expect(out.contains("Dnt: 1\r\n") && out.contains("X-Proxy-Note: hello\r\n"))
        #expect(out.contains("Accept: */*\r\nAccept-Encoding: gzip\r\n") || out.contains("Accept-Encoding: gzip\r\n"))
        #expect(out.hasSuffix("\r\n\r\n"))
    }

    @Test func addKeepsWhatWasReceived() throws {
        let out = try rewritten(Self.request, [
            HeaderRule(direction: .request, name: "Accept", action: .add("text/html")),
            HeaderRule(direction: .request, name: "X-Route", action: .add("api\r\nX-Evil: 1")),
        ])
        #expect(out.contains("Accept: */*\r\n") && out.contains("Accept: text/html\r\n"), "\(out)")
        #expect(out.contains("X-Route: apiX-Evil: 1\r\n") && !out.contains("\nX-Evil"), "no field smuggled: \(out)")
    }

    @Test func noRulesCopiesTheHeadUntouched() throws {
        #expect(try rewritten(Self.request, []) == (try rewritten(Self.request, [HeaderRule(direction: .request, name: "x-absent", action: .remove)])))
        #expect(!(try rewritten(Self.request, [], extra: ["accept-encoding"])).contains("Accept-Encoding"))
    }

    @Test func aValueCannotSmuggleAField() throws {
        let rules = [HeaderRule(direction: .request, name: "X-A", action: .set("1\r\nX-Evil: 1"))]
        let out = try rewritten(Self.request, rules)
        #expect(out.contains("X-A: 1X-Evil: 1\r\n"))
        #expect(!out.contains("\r\nX-Evil"))
    }

    @Test func rulesApplyOnTopOfThePrivacyProfile() throws {
        let out = try rewritten(Self.request, [HeaderRule(direction: .request, name: "Accept", action: .set("text/html"))], anonymizer: Anonymizer())
        #expect(out.contains("Accept: text/html\r\n") && !out.contains("Accept: */*"))
        #expect(!out.contains("Sec-CH-UA"))
        let ua = try rewritten(Self.request, [HeaderRule(direction: .request, name: "User-Agent", action: .set("Mine/1"))], anonymizer: Anonymizer())
        #expect(ua.components(separatedBy: "User-Agent").count == 2 && ua.contains("User-Agent: Mine/1\r\n"))
    }

    @Test func responseRules() throws {
        var buf = ByteBuffer(string: "HTTP/1.1 200 OK\r\nServer: nginx/1.25\r\nX-Powered-By: PHP/8\r\nContent-Length: 2\r\n\r\n")
        guard case .complete(let head, _) = try HeadParser.parseResponse(buf, requestMethod: "GET") else { Issue.record("no head"); return }
        let edit = HeaderEdit(rules: [
            HeaderRule(direction: .response, name: "Server", action: .set("proxima")),
            HeaderRule(direction: .response, name: "X-Powered-By", action: .remove),
        ], bytes: head.bytes, fields: head.fields)
        var out = ByteBuffer()
        HeadWriter.writeClientResponse(head, framing: .length(2), via: nil, connection: .none, edit: edit, into: &out)
        let text = out.readString(length: out.readableBytes)!
        #expect(text.contains("Server: proxima\r\n") && !text.contains("nginx") && !text.contains("PHP"))
        buf.clear()
    }
}
