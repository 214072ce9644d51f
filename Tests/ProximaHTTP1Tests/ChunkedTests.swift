import Testing

@testable import ProximaHTTP1

/// Runs the scanner over `input` split at every position in `splits`, returning the data it
/// found and how many bytes belonged to the body.
func scanChunked(_ input: String, splits: [Int] = []) throws -> (data: String, consumed: Int, done: Bool) {
    let bytes = Array(input.utf8)
    var scanner = ChunkedScanner(maxTrailerBytes: 64)
    var data: [UInt8] = []
    var pos = 0
    let cuts = (splits + [bytes.count]).filter { $0 <= bytes.count }.sorted()
    for cut in cuts where cut >= pos {
        let piece = Array(bytes[pos..<cut])
        let consumed = try piece.withUnsafeBytes { raw in
            try scanner.scan(raw) { start, count in data += piece[start..<(start + count)] }
        }
        pos += consumed
        if scanner.isDone { break }
        if consumed < piece.count { break }
    }
    return (String(decoding: data, as: UTF8.self), pos, scanner.isDone)
}

@Suite("Chunked transfer coding (RFC 9112 section 7.1)")
struct ChunkedTests {
    @Test func decodesChunksAndStopsAtTheEnd() throws {
        let body = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        let r = try scanChunked(body + "GET next")
        #expect(r.data == "hello world")
        #expect(r.consumed == body.utf8.count)
        #expect(r.done)
    }

    @Test func anySplitGivesTheSameResult() throws {
        let body = "a;ext=1\r\n0123456789\r\n1F\r\n" + String(repeating: "z", count: 31) + "\r\n0\r\nX-T: 1\r\n\r\n"
        let whole = try scanChunked(body)
        for cut in 1..<body.utf8.count {
            let split = try scanChunked(body, splits: [cut])
            #expect(split.data == whole.data, "split at \(cut)")
            #expect(split.consumed == whole.consumed)
        }
        #expect(whole.done)
    }

    @Test func trailersAreConsumed() throws {
        let r = try scanChunked("3\r\nabc\r\n0\r\nChecksum: 42\r\nMore: x\r\n\r\n")
        #expect(r.data == "abc")
        #expect(r.done)
    }

    @Test(arguments: [
        ("no size", "\r\nabc\r\n"),
        ("bad hex", "g\r\n"),
        ("size overflow", "1000000000000000000\r\n"),
        ("data without CRLF", "3\r\nabcX\r\n"),
        ("bare LF after size", "3\nabc\r\n"),
        ("bare LF after data", "3\r\nabc\n0\r\n\r\n"),
        ("control char in extension", "3;\u{1}\r\nabc\r\n"),
        ("trailer with space before colon", "0\r\nX : y\r\n\r\n"),
        ("trailer folding", "0\r\nX: y\r\n z\r\n\r\n"),
        ("negative size", "-1\r\n"),
    ])
    func rejectsMalformed(_ c: (String, String)) {
        #expect(throws: ChunkedScanner.Failure.self, "\(c.0)") { _ = try scanChunked(c.1) }
    }

    @Test func trailerLimit() {
        #expect(throws: ChunkedScanner.Failure.trailerTooLarge) {
            _ = try scanChunked("0\r\nX: " + String(repeating: "y", count: 100) + "\r\n\r\n")
        }
    }

    /// Random inputs never crash the scanner, and a valid encoding of random data round-trips.
    @Test func randomInputs() throws {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let len = Int.random(in: 0..<40, using: &rng)
            let junk = String((0..<len).map { _ in "0123456789abcdefXYZ;=\r\n :".randomElement(using: &rng)! })
            _ = try? scanChunked(junk)
        }
        for _ in 0..<200 {
            var encoded = ""
            var expected = ""
            for _ in 0..<Int.random(in: 0..<6, using: &rng) {
                let n = Int.random(in: 1..<50, using: &rng)
                let piece = String((0..<n).map { _ in "abcxyz\r\n".randomElement(using: &rng)! })
                encoded += String(piece.utf8.count, radix: 16) + "\r\n" + piece + "\r\n"
                expected += piece
            }
            encoded += "0\r\n\r\n"
            let cut = Int.random(in: 0...encoded.utf8.count, using: &rng)
            let r = try scanChunked(encoded, splits: [cut])
            #expect(r.data == expected)
            #expect(r.done)
        }
    }
}
