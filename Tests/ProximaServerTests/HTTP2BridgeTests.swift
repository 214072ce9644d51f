import NIOCore
import NIOHTTP1
import Testing

@testable import ProximaServer

@Suite("HTTP/2 bridge: HTTP/1.1 answers turned into stream parts")
struct HTTP2BridgeTests {
    /// The parts for `response`, fed in pieces of `piece` bytes: head status, headers, body, ended.
    static func translate(_ response: String, method: String = "GET", piece: Int) throws -> (status: Int, headers: HTTPHeaders, body: String, ended: Bool) {
        var t = ResponseTranslator()
        let bytes = Array(response.utf8)
        var parts: [HTTPServerResponsePart] = []
        var at = 0
        while at < bytes.count {
            let n = min(piece, bytes.count - at)
            parts += try t.feed(ByteBuffer(bytes: bytes[at..<at + n]), requestMethod: method)
            at += n
        }
        var status = 0
        var headers = HTTPHeaders()
        var body = ""
        var ended = false
        for p in parts {
            switch p {
            case .head(let h):
                #expect(status == 0, "one head only")
                status = Int(h.status.code)
                headers = h.headers
            case .body(.byteBuffer(let b)): body += String(buffer: b)
            case .body: Issue.record("file regions are never written")
            case .end:
                #expect(!ended)
                ended = true
            }
        }
        return (status, headers, body, ended)
    }

    static let cases: [(name: String, response: String, method: String, status: Int, body: String)] = [
        ("length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\n\r\nhello", "GET", 200, "hello"),
        ("chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n", "GET", 200, "abcde"),
        ("interim first", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", "POST", 201, "ok"),
        ("no body", "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", "GET", 204, ""),
        ("head", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", "HEAD", 200, ""),
        ("empty", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", 200, ""),
        ("listed field", "HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nContent-Length: 1\r\n\r\nz", "GET", 200, "z"),
    ]

    @Test(arguments: [1, 2, 3, 7, 1000])
    func everyCaseInEveryPieceSize(piece: Int) throws {
        for c in Self.cases {
            let r = try Self.translate(c.response, method: c.method, piece: piece)
            #expect(r.status == c.status && r.body == c.body && r.ended, "\(c.name) in pieces of \(piece): \(r)")
            // Connection-specific fields never reach an HTTP/2 stream.
            for name in ["connection", "keep-alive", "transfer-encoding", "x-hop"] {
                #expect(!r.headers.contains(name: name), "\(c.name): \(name)")
            }
        }
    }

    @Test func untilCloseEndsWhenTheHandlerCloses() throws {
        var t = ResponseTranslator()
        let parts = try t.feed(ByteBuffer(string: "HTTP/1.0 200 OK\r\n\r\nstream"), requestMethod: "GET")
        #expect(parts.count == 2 && t.endsAtClose)
    }

    @Test func garbageAndBytesAfterTheAnswerAreRefused() {
        var t = ResponseTranslator()
        #expect(throws: (any Error).self) { try t.feed(ByteBuffer(string: "NOT HTTP\r\n\r\n"), requestMethod: "GET") }
        var u = ResponseTranslator()
        #expect(throws: (any Error).self) {
            try u.feed(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nzEXTRA"), requestMethod: "GET")
        }
    }

    @Test func requestsBecomeHTTP11WithCookiesJoined() {
        var head = HTTPRequestHead(version: .http2, method: .POST, uri: "/form?a=1")
        head.headers.add(name: "host", value: "www.example")
        head.headers.add(name: "cookie", value: "a=1")
        head.headers.add(name: "cookie", value: "b=2")
        let text = String(buffer: HTTP2StreamBridge.serialize(head, chunked: true, allocator: ByteBufferAllocator()))
        #expect(text == "POST /form?a=1 HTTP/1.1\r\nhost: www.example\r\ncookie: a=1; b=2\r\ntransfer-encoding: chunked\r\n\r\n")
    }

    @Test func sniChoosesExactThenWildcardThenTheDefault() {
        var table = ListenerTLS.SNITable()
        table.add("www.example", 0)
        table.add("*.shop.example", 1)
        table.add("API.example", 2)
        #expect(table.lookup("api.EXAMPLE.") == 2)
        #expect(table.lookup("deals.shop.example") == 1)
        #expect(table.lookup("a.b.shop.example") == 0, "a wildcard covers one label")
        #expect(table.lookup("shop.example") == 0)
        #expect(table.lookup(nil) == 0)
    }
}
