import NIOCore
import Testing

@testable import ProximaHTTP1

func parseResponse(_ text: String, method: String = "GET") throws(HeadError) -> ResponseHead? {
    switch try HeadParser.parseResponse(ByteBuffer(string: text), requestMethod: method) {
    case .incomplete: return nil
    case .complete(let head, _): return head
    }
}

@Suite("Response heads and framing (RFC 9112 section 6.3)")
struct ResponseHeadTests {
    @Test func statusLineAndReason() throws {
        let h = try #require(try parseResponse("HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n"))
        #expect(h.status == 404)
        #expect(h.reason == "Not Found")
        #expect(h.framing == .length(3))
        #expect(h.serverKeepAlive)
    }

    @Test func emptyReasonIsAccepted() throws {
        #expect(try parseResponse("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n")?.status == 200)
        #expect(try parseResponse("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")?.status == 200)
    }

    static let framing: [(String, String, String, BodyFraming)] = [
        ("HEAD has no body", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", .none),
        ("204 has no body", "GET", "HTTP/1.1 204 No Content\r\nContent-Length: 50\r\n\r\n", .none),
        ("304 has no body", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n", .none),
        ("1xx has no body", "GET", "HTTP/1.1 100 Continue\r\n\r\n", .none),
        ("chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", .chunked),
        ("gzip then chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", .chunked),
        ("TE not chunked reads until close", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", .untilClose),
        ("TE wins over CL", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", .chunked),
        ("content-length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", .length(5)),
        ("neither: until close", "GET", "HTTP/1.0 200 OK\r\n\r\n", .untilClose),
    ]

    @Test(arguments: framing)
    func framingRules(_ c: (String, String, String, BodyFraming)) throws {
        let head = try #require(try parseResponse(c.2, method: c.1))
        #expect(head.framing == c.3, "\(c.0)")
    }

    @Test func teAndClTogetherForbidsReuse() throws {
        let h = try #require(try parseResponse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"))
        #expect(h.mustClose)
        #expect(!h.serverKeepAlive)
    }

    @Test func keepAliveRules() throws {
        #expect(try parseResponse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")?.serverKeepAlive == false)
        #expect(try parseResponse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")?.serverKeepAlive == false)
        #expect(try parseResponse("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")?.serverKeepAlive == true)
    }

    @Test(arguments: [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    ])
    func rejectsBadResponses(_ text: String) {
        #expect(throws: HeadError.self) { _ = try parseResponse(text) }
    }
}

@Suite("Request targets")
struct TargetTests {
    static let good: [(String, String, Int, String, String)] = [
        ("http://example.com/a?b", "example.com", 80, "/a?b", "example.com"),
        ("http://EXAMPLE.com", "example.com", 80, "/", "example.com"),
        ("http://example.com?q", "example.com", 80, "/?q", "example.com"),
        ("http://example.com:8080/", "example.com", 8080, "/", "example.com:8080"),
        ("http://[::1]:8080/x", "::1", 8080, "/x", "[::1]:8080"),
        ("http://127.0.0.1/", "127.0.0.1", 80, "/", "127.0.0.1"),
        ("HTTP://a.b/", "a.b", 80, "/", "a.b"),
    ]

    @Test(arguments: good)
    func parsesAbsoluteForm(_ c: (String, String, Int, String, String)) throws {
        let t = try RequestTarget.parseAbsolute(c.0)
        #expect(t.host == c.1)
        #expect(t.port == c.2)
        #expect(t.pathAndQuery == c.3)
        #expect(t.authority == c.4)
    }

    @Test(arguments: ["http://user@host/", "http://host:99999/", "http://host:x/", "http:///", "http://ho st/", "http://host/#frag", "http://[::1/"])
    func rejectsBadAbsoluteForm(_ text: String) {
        #expect(throws: RequestTarget.Failure.self) { _ = try RequestTarget.parseAbsolute(text) }
    }

    @Test func schemesAndOriginForm() {
        #expect(throws: RequestTarget.Failure.notAbsolute) { _ = try RequestTarget.parseAbsolute("/index.html") }
        #expect(throws: RequestTarget.Failure.unsupportedScheme("ftp")) { _ = try RequestTarget.parseAbsolute("ftp://a/") }
    }

    @Test func authorityForm() throws {
        let t = try RequestTarget.parseAuthorityForm("example.com:443")
        #expect(t.host == "example.com")
        #expect(t.port == 443)
        let v6 = try RequestTarget.parseAuthorityForm("[2001:db8::1]:8443")
        #expect(v6.host == "2001:db8::1")
        #expect(throws: RequestTarget.Failure.self) { _ = try RequestTarget.parseAuthorityForm("example.com") }
        #expect(throws: RequestTarget.Failure.self) { _ = try RequestTarget.parseAuthorityForm("example.com:0") }
    }
}
