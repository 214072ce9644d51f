import NIOCore
import Testing

@testable import ProximaHTTP1

/// A small seeded generator, so a failing case can be replayed from its seed.
struct XorShift: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}

/// Mutation fuzzing of the head parsers: valid messages with bytes flipped, inserted, deleted
/// and duplicated. The parser must never crash, and whatever it accepts must satisfy the
/// invariants the proxy relies on.
@Suite("Head parser fuzzing")
struct FuzzTests {
    static let requestSeeds = [
        "GET http://example.com/a?b=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n",
        "POST http://a:8080/p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        "PUT http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\nProxy-Connection: keep-alive\r\n\r\n",
        "GET http://[::1]:9/ HTTP/1.0\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\n",
    ]
    static let responseSeeds = [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "HTTP/1.0 404 Not Found\r\n\r\nnot here",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    ]
    static let interesting: [UInt8] = Array(" \t\r\n:;,0123456789abcdefABCDEF-\u{0}\u{7f}\u{80}\u{ff}chunkedContent-LengthTransfer-Encoding".utf8)

    static func mutate(_ input: [UInt8], _ rng: inout XorShift) -> [UInt8] {
        var bytes = input
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            let pos = bytes.isEmpty ? 0 : Int.random(in: 0..<bytes.count, using: &rng)
            switch Int.random(in: 0..<5, using: &rng) {
            case 0 where !bytes.isEmpty: bytes[pos] = interesting.randomElement(using: &rng)!
            case 1: bytes.insert(interesting.randomElement(using: &rng)!, at: pos)
            case 2 where !bytes.isEmpty: bytes.remove(at: pos)
            case 3 where !bytes.isEmpty:
                let len = min(Int.random(in: 1...12, using: &rng), bytes.count - pos)
                bytes.insert(contentsOf: bytes[pos..<(pos + len)], at: pos)
            default: bytes[pos..<pos] = ArraySlice(Array("Content-Length: 7\r\n".utf8))
            }
        }
        return bytes
    }

    @Test func mutatedRequestsNeverBreakInvariants() {
        var rng = XorShift(seed: 0xC0FFEE)
        for i in 0..<20_000 {
            let seed = Self.requestSeeds[i % Self.requestSeeds.count]
            let bytes = Self.mutate(Array(seed.utf8), &rng)
            let buffer = ByteBuffer(bytes: bytes)
            guard case .complete(let head, let consumed)? = try? HeadParser.parseRequest(buffer) else { continue }
            #expect(consumed <= bytes.count)
            #expect(head.bytes.readableBytes == consumed)
            for f in head.fields {
                #expect(f.nameLength > 0)
                #expect(f.lineEnd <= consumed)
                #expect(f.valueStart + f.valueLength <= f.lineEnd)
            }
            let cl = head.fields.filter { head.nameEquals($0, "content-length") }.count
            let te = head.fields.filter { head.nameEquals($0, "transfer-encoding") }.count
            #expect(!(cl > 0 && te > 0), "accepted CL and TE together: \(String(decoding: bytes, as: UTF8.self))")
            if head.version == .http11 { #expect(head.hostField != nil) }
            // Writing it upstream never crashes either.
            if let target = try? RequestTarget.parseAbsolute(head.target) {
                var out = ByteBuffer()
                HeadWriter.writeUpstreamRequest(head, target: target, via: "p", forwardedFor: .add, clientIP: "1.2.3.4", into: &out)
                #expect(out.readableBytes > 0)
            }
        }
    }

    @Test func mutatedResponsesNeverBreakInvariants() {
        var rng = XorShift(seed: 0xBEEF)
        for i in 0..<20_000 {
            let seed = Self.responseSeeds[i % Self.responseSeeds.count]
            let bytes = Self.mutate(Array(seed.utf8), &rng)
            let method = i % 7 == 0 ? "HEAD" : "GET"
            guard case .complete(let head, let consumed)? = try? HeadParser.parseResponse(ByteBuffer(bytes: bytes), requestMethod: method) else {
                continue
            }
            #expect(consumed <= bytes.count)
            #expect((100...999).contains(head.status))
            if method == "HEAD" || head.status == 204 || head.status == 304 || head.isInterim { #expect(head.framing == .none) }
            var out = ByteBuffer()
            HeadWriter.writeClientResponse(head, framing: .none, via: "p", connection: .close, into: &out)
            #expect(out.readableBytes > 0)
        }
    }

    @Test func randomBytesNeverCrash() {
        var rng = XorShift(seed: 42)
        for _ in 0..<5_000 {
            let bytes = (0..<Int.random(in: 0..<200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = try? HeadParser.parseRequest(ByteBuffer(bytes: bytes))
            _ = try? HeadParser.parseResponse(ByteBuffer(bytes: bytes), requestMethod: "GET")
            _ = try? RequestTarget.parseAbsolute(String(decoding: bytes, as: UTF8.self))
            _ = try? RequestTarget.parseAuthorityForm(String(decoding: bytes, as: UTF8.self))
        }
    }
}
