import NIOCore
import Testing

@testable import ProximaHTTP1

func parseRequest(_ text: String, limits: HeadLimits = HeadLimits()) throws(HeadError) -> RequestHead? {
    switch try HeadParser.parseRequest(ByteBuffer(string: text), limits: limits) {
    case .incomplete: return nil
    case .complete(let head, _): return head
    }
}

func requestError(_ text: String, limits: HeadLimits = HeadLimits()) -> HeadError? {
    do {
        _ = try parseRequest(text, limits: limits)
        return nil
    } catch {
        return error
    }
}

@Suite("Request heads (RFC 9112)")
struct RequestHeadTests {
    @Test func parsesAbsoluteFormRequest() throws {
        let head = try #require(try parseRequest("GET http://example.com/a?b=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n"))
        #expect(head.method == "GET")
        #expect(head.target == "http://example.com/a?b=1")
        #expect(head.version == .http11)
        #expect(head.fields.count == 2)
        #expect(head.firstValue("user-agent") == "t")
        #expect(head.framing == .none)
        #expect(head.clientKeepAlive)
    }

    @Test func reportsConsumedBytesAndLeavesPipelinedRequest() throws {
        let first = "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"
        let text = first + "GET http://b/ HTTP/1.1\r\nHost: b\r\n\r\n"
        guard case .complete(_, let consumed) = try HeadParser.parseRequest(ByteBuffer(string: text)) else {
            Issue.record("incomplete")
            return
        }
        #expect(consumed == first.utf8.count)
    }

    @Test(arguments: [
        "GET http://a/ HTTP/1.1\r\nHost: a\r\n",
        "GET http://a/ HTTP/1.1\r\nHost: a\r",
        "GET http://a/ HTTP/1.1",
        "GET",
        "",
    ])
    func incompleteHeadsWaitForMore(_ text: String) throws {
        #expect(try parseRequest(text) == nil)
    }

    @Test func ignoresLeadingEmptyLine() throws {
        let head = try #require(try parseRequest("\r\nGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(head.method == "GET")
    }

    @Test func optionalWhitespaceAroundValuesIsTrimmed() throws {
        let head = try #require(try parseRequest("GET http://a/ HTTP/1.1\r\nHost: a\r\nX-A: \t v w \t\r\n\r\n"))
        #expect(head.firstValue("x-a") == "v w")
    }

    static let malformed: [(String, String)] = [
        ("bare LF ends a line", "GET http://a/ HTTP/1.1\nHost: a\n\n"),
        ("bare LF in a field", "GET http://a/ HTTP/1.1\r\nHost: a\nX: y\r\n\r\n"),
        ("bare CR in a field", "GET http://a/ HTTP/1.1\r\nHost: a\r\nX: y\rz\r\n\r\n"),
        ("whitespace before colon", "GET http://a/ HTTP/1.1\r\nHost : a\r\n\r\n"),
        ("obs-fold", "GET http://a/ HTTP/1.1\r\nHost: a\r\nX: y\r\n  z\r\n\r\n"),
        ("CL and TE together", "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("conflicting CL", "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        ("conflicting CL list", "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n"),
        ("negative CL", "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
        ("CL with sign", "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n"),
        ("CL hex", "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n"),
        ("CL overflow", "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
        ("empty CL", "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n"),
        ("TE not ending in chunked", "POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
        ("TE in HTTP/1.0", "POST http://a/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("no Host in 1.1", "GET http://a/ HTTP/1.1\r\n\r\n"),
        ("two Host fields", "GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("NUL in value", "GET http://a/ HTTP/1.1\r\nHost: a\r\nX: a\u{0}b\r\n\r\n"),
        ("control char in value", "GET http://a/ HTTP/1.1\r\nHost: a\r\nX: a\u{1}b\r\n\r\n"),
        ("empty field name", "GET http://a/ HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n"),
        ("bad char in name", "GET http://a/ HTTP/1.1\r\nHost: a\r\nX(y): x\r\n\r\n"),
        ("two spaces in request line", "GET  http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("space in target", "GET http://a/ b HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("lowercase version", "GET http://a/ http/1.1\r\nHost: a\r\n\r\n"),
        ("missing version", "GET http://a/\r\nHost: a\r\n\r\n"),
        ("method with bad char", "GE(T http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("unknown Expect", "GET http://a/ HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n"),
        ("field line without colon", "GET http://a/ HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n"),
    ]

    @Test(arguments: malformed)
    func rejectsMalformed(_ c: (String, String)) {
        let error = requestError(c.1)
        #expect(error?.status == 400, "\(c.0): \(String(describing: error))")
    }

    @Test func unknownTransferCodingIsNotImplemented() {
        #expect(requestError("POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")?.status == 501)
    }

    @Test func otherHTTPVersionsAreUnsupported() {
        #expect(requestError("GET http://a/ HTTP/2.0\r\nHost: a\r\n\r\n")?.status == 505)
        #expect(requestError("GET http://a/ HTTP/1.2\r\nHost: a\r\n\r\n")?.status == 505)
    }

    @Test func requestLineLimitGives414EvenBeforeLineEnds() {
        let limits = HeadLimits(maxRequestLine: 256, maxHeadBytes: 4096)
        let long = "GET http://a/" + String(repeating: "x", count: 300)
        #expect(requestError(long, limits: limits) == .requestLineTooLong)
        #expect(requestError(long + " HTTP/1.1\r\nHost: a\r\n\r\n", limits: limits) == .requestLineTooLong)
        let fits = "GET http://a/" + String(repeating: "x", count: 200) + " HTTP/1.1\r\nHost: a\r\n\r\n"
        #expect(requestError(fits, limits: limits) == nil)
    }

    @Test func headerLimitGives431() {
        let limits = HeadLimits(maxRequestLine: 256, maxHeadBytes: 1024)
        let big = "GET http://a/ HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "y", count: 2000) + "\r\n\r\n"
        #expect(requestError(big, limits: limits) == .headersTooLarge)
        // Also when the head has not ended yet.
        #expect(requestError(String(big.prefix(1500)), limits: limits) == .headersTooLarge)
        let many = "GET http://a/ HTTP/1.1\r\nHost: a\r\n" + String(repeating: "X: y\r\n", count: 300) + "\r\n"
        #expect(requestError(many, limits: HeadLimits(maxHeadBytes: 64 * 1024, maxFields: 256)) == .headersTooLarge)
    }

    @Test func framingFromContentLengthAndChunked() throws {
        #expect(try parseRequest("POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n")?.framing == .length(12))
        #expect(try parseRequest("POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 7, 7\r\n\r\n")?.framing == .length(7))
        #expect(try parseRequest("POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n")?.framing == .chunked)
        #expect(try parseRequest("POST http://a/ HTTP/1.0\r\nContent-Length: 3\r\n\r\n")?.framing == .length(3))
    }

    @Test func connectionOptions() throws {
        let h = try #require(try parseRequest("GET http://a/ HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\n\r\n"))
        #expect(h.connection.close)
        #expect(h.connection.others == ["x-secret"])
        #expect(!h.clientKeepAlive)
        let h10 = try #require(try parseRequest("GET http://a/ HTTP/1.0\r\n\r\n"))
        #expect(!h10.clientKeepAlive)
        let h10ka = try #require(try parseRequest("GET http://a/ HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n"))
        #expect(h10ka.clientKeepAlive)
    }

    @Test func expectContinue() throws {
        #expect(try parseRequest("PUT http://a/ HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")?.expectsContinue == true)
    }
}

/// Field values are scanned eight bytes at a time; every byte value at every position of a long
/// value (inside a word, at word edges, in the byte-wise tail) must get the byte-wise verdict.
@Suite("Field value bytes, word-at-a-time scan")
struct FieldValueScanTests {
    func head(value: [UInt8]) -> [UInt8] {
        Array("GET http://h/ HTTP/1.1\r\nHost: h\r\nX-V: ".utf8) + value + Array("\r\nX-W: 1\r\n\r\n".utf8)
    }

    func verdict(_ bytes: [UInt8]) -> Result<String?, HeadError> {
        var buffer = ByteBuffer()
        buffer.writeBytes(bytes)
        do {
            switch try HeadParser.parseRequest(buffer) {
            case .incomplete: return .success(nil)
            case .complete(let h, _): return .success(h.firstValue("x-v"))
            }
        } catch {
            return .failure(error)
        }
    }

    @Test func everyByteAtEveryPosition() {
        let base = Array("abcdefghijklmnopqrstuvwxyz0123".utf8)
        for position in 0..<base.count {
            for byte in UInt8.min...UInt8.max where byte != 0x0D && byte != 0x0A {
                var value = base
                value[position] = byte
                let allowed = byte == 0x09 || (byte >= 0x20 && byte != 0x7F)
                switch verdict(head(value: value)) {
                case .success(let parsed?):
                    #expect(allowed, "byte \(byte) at \(position) was accepted")
                    // Whitespace at either end is not part of the value.
                    var expected = value[...]
                    while let f = expected.first, f == 0x20 || f == 0x09 { expected = expected.dropFirst() }
                    while let l = expected.last, l == 0x20 || l == 0x09 { expected = expected.dropLast() }
                    #expect(Array(parsed.utf8) == Array(String(decoding: expected, as: UTF8.self).utf8))
                case .success(nil):
                    Issue.record("byte \(byte) at \(position): incomplete")
                case .failure:
                    #expect(!allowed, "byte \(byte) at \(position) was refused")
                }
            }
        }
    }

    @Test func lineEndsInsideAWordAndTrailingWhitespace() throws {
        for length in 0..<20 {
            let value = Array(repeating: UInt8(ascii: "v"), count: length) + [0x20, 0x09, 0x20]
            let parsed = try verdict(head(value: value)).get()
            #expect(parsed == String(repeating: "v", count: length))
        }
        // A bare CR or LF inside a long value is refused wherever it falls.
        for position in 0..<17 {
            for bad: UInt8 in [0x0D, 0x0A] {
                var value = Array(repeating: UInt8(ascii: "v"), count: 17)
                value[position] = bad
                if case .success = verdict(head(value: value)) { Issue.record("bare \(bad) at \(position) accepted") }
            }
        }
    }
}
