import NIOCore

/// HTTP versions Proxima speaks on either side.
public enum HTTPVersion: Sendable, Equatable {
    case http10
    case http11

    public var text: String { self == .http11 ? "HTTP/1.1" : "HTTP/1.0" }
}

/// Where one field line sits inside a parsed head's bytes. Offsets are relative to the head's
/// first byte, so copying a field to another buffer needs no String.
public struct FieldRange: Sendable, Equatable {
    public var nameStart: Int
    public var nameLength: Int
    public var valueStart: Int
    public var valueLength: Int
    /// Start and end (exclusive, without the CRLF) of the whole field line.
    public var lineStart: Int
    public var lineEnd: Int
}

/// How the body of a message is delimited (RFC 9112 section 6).
public enum BodyFraming: Sendable, Equatable {
    case none
    case length(Int)
    case chunked
    /// Response bodies only: the body runs until the server closes the connection.
    case untilClose
}

/// Why a head was refused; each maps to the status code a client is told.
public enum HeadError: Error, Sendable, Equatable {
    case requestLineTooLong
    case headersTooLarge
    case malformed(String)
    case unsupportedVersion
    case notImplemented(String)

    public var status: Int {
        switch self {
        case .requestLineTooLong: return 414
        case .headersTooLarge: return 431
        case .malformed: return 400
        case .unsupportedVersion: return 505
        case .notImplemented: return 501
        }
    }

    public var reason: String {
        switch self {
        case .requestLineTooLong: return "the request line is longer than the configured limit"
        case .headersTooLarge: return "the request header section is larger than the configured limit"
        case .malformed(let why): return why
        case .unsupportedVersion: return "only HTTP/1.0 and HTTP/1.1 are supported"
        case .notImplemented(let why): return why
        }
    }
}

public struct HeadLimits: Sendable, Equatable {
    public var maxRequestLine: Int
    public var maxHeadBytes: Int
    public var maxFields: Int

    public init(maxRequestLine: Int = 8 * 1024, maxHeadBytes: Int = 64 * 1024, maxFields: Int = 256) {
        self.maxRequestLine = maxRequestLine
        self.maxHeadBytes = maxHeadBytes
        self.maxFields = maxFields
    }
}

/// Tokens of the `Connection` field that change what the proxy does, and the other names it
/// lists (which are hop-by-hop for that one message).
public struct ConnectionOptions: Sendable, Equatable {
    public var close = false
    public var keepAlive = false
    public var others: [String] = []
}

/// A parsed, validated request head. The bytes stay as received; fields point into them.
public struct RequestHead: Sendable {
    public var bytes: ByteBuffer
    public var method: String
    public var target: String
    public var version: HTTPVersion
    public var fields: [FieldRange]
    public var framing: BodyFraming
    public var connection: ConnectionOptions
    /// Index into `fields` of the one `Host` field, if any.
    public var hostField: Int?
    public var expectsContinue: Bool

    public var isHead: Bool { method == "HEAD" }
    public var isConnect: Bool { method == "CONNECT" }

    /// Whether the client wants the connection kept open after this exchange.
    public var clientKeepAlive: Bool {
        if connection.close { return false }
        return version == .http11 || connection.keepAlive
    }

    public func name(_ field: FieldRange) -> String { bytes.string(at: field.nameStart, length: field.nameLength) }
    public func value(_ field: FieldRange) -> String { bytes.string(at: field.valueStart, length: field.valueLength) }

    /// Every value of a field, in order (several field lines of one name).
    public func values(_ lowercasedName: String) -> [String] {
        fields.filter { nameEquals($0, lowercasedName) }.map(value)
    }

    public func firstValue(_ name: String) -> String? {
        // A loop, not first(where:): the closure would copy the whole head.
        for f in fields where nameEquals(f, name) { return value(f) }
        return nil
    }

    public func nameEquals(_ field: FieldRange, _ lowercasedName: String) -> Bool {
        bytes.asciiCaseInsensitiveEquals(at: field.nameStart, length: field.nameLength, lowercasedName)
    }

    @inlinable
    public func nameIs(_ field: FieldRange, _ lowercasedName: StaticString) -> Bool {
        bytes.asciiCaseInsensitiveEquals(at: field.nameStart, length: field.nameLength, literal: lowercasedName)
    }
}

/// A parsed, validated response head from an upstream server.
public struct ResponseHead: Sendable {
    public var bytes: ByteBuffer
    public var status: Int
    public var version: HTTPVersion
    /// Offset and length of the reason phrase (may be empty).
    public var reasonStart: Int
    public var reasonLength: Int
    public var fields: [FieldRange]
    public var framing: BodyFraming
    public var connection: ConnectionOptions
    /// The server's framing makes reusing the connection unsafe (e.g. both Content-Length and
    /// Transfer-Encoding were sent).
    public var mustClose: Bool

    public var isInterim: Bool { status >= 100 && status < 200 }

    /// Whether the upstream connection may carry another request after this response.
    public var serverKeepAlive: Bool {
        if mustClose || connection.close || framing == .untilClose { return false }
        return version == .http11 || connection.keepAlive
    }

    public var reason: String { bytes.string(at: reasonStart, length: reasonLength) }

    public func name(_ field: FieldRange) -> String { bytes.string(at: field.nameStart, length: field.nameLength) }

    public func value(_ field: FieldRange) -> String { bytes.string(at: field.valueStart, length: field.valueLength) }

    public func nameEquals(_ field: FieldRange, _ lowercasedName: String) -> Bool {
        bytes.asciiCaseInsensitiveEquals(at: field.nameStart, length: field.nameLength, lowercasedName)
    }

    @inlinable
    public func nameIs(_ field: FieldRange, _ lowercasedName: StaticString) -> Bool {
        bytes.asciiCaseInsensitiveEquals(at: field.nameStart, length: field.nameLength, literal: lowercasedName)
    }

    /// Every value of a field, in order (several field lines of one name).
    public func values(_ lowercasedName: String) -> [String] {
        fields.filter { nameEquals($0, lowercasedName) }.map(value)
    }

    public func firstValue(_ name: String) -> String? {
        // A loop, not first(where:): the closure would copy the whole head.
        for f in fields where nameEquals(f, name) { return value(f) }
        return nil
    }
}

public enum ParseResult<Head> {
    /// More bytes are needed.
    case incomplete
    /// A head was parsed from the first `consumed` bytes.
    case complete(Head, consumed: Int)
}

// MARK: - Byte classes

/// tchar (RFC 9110 section 5.6.2) as two 64-bit masks: a global table would cost a lazy
/// initialisation check on every byte.
@inline(__always) func isTchar(_ b: UInt8) -> Bool {
    // ! # $ % & ' * + - . 0-9
    let low: UInt64 = 0x03FF_6CFA_0000_0000
    // A-Z ^ _ ` a-z | ~
    let high: UInt64 = 0x57FF_FFFF_C7FF_FFFE
    if b < 64 { return (low >> UInt64(b)) & 1 == 1 }
    if b < 128 { return (high >> UInt64(b - 64)) & 1 == 1 }
    return false
}

/// Field value bytes allowed by RFC 9110 section 5.5: VCHAR, obs-text, SP and HTAB.
@inline(__always) func isFieldValueByte(_ b: UInt8) -> Bool {
    b == 0x09 || (b >= 0x20 && b != 0x7F)
}

@inline(__always) func isOWS(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }

/// Whether any byte of `word` is below 0x20 (the "hasless" bit trick: the answer is exact, only
/// which byte it flags can be off, and callers re-scan byte by byte).
@inline(__always) func hasByteBelow0x20(_ word: UInt64) -> Bool {
    (word &- 0x2020_2020_2020_2020) & ~word & 0x8080_8080_8080_8080 != 0
}

@inline(__always) func hasZeroByte(_ word: UInt64) -> Bool {
    (word &- 0x0101_0101_0101_0101) & ~word & 0x8080_8080_8080_8080 != 0
}

let CR: UInt8 = 0x0D
let LF: UInt8 = 0x0A

// MARK: - Parsing

public enum HeadParser {
    /// Parses a request head from the start of `buffer`'s readable bytes.
    public static func parseRequest(_ buffer: ByteBuffer, limits: HeadLimits = HeadLimits()) throws(HeadError) -> ParseResult<RequestHead> {
        let result: Result<ParseResult<RequestHead>, HeadError> = buffer.withUnsafeReadableBytes { raw in
            parseRequestBytes(raw, buffer: buffer, limits: limits)
        }
        return try result.get()
    }

    /// Parses a response head. `requestMethod` decides whether a body can follow (HEAD).
    public static func parseResponse(
        _ buffer: ByteBuffer, requestMethod: String, limits: HeadLimits = HeadLimits()
    ) throws(HeadError) -> ParseResult<ResponseHead> {
        let result: Result<ParseResult<ResponseHead>, HeadError> = buffer.withUnsafeReadableBytes { raw in
            parseResponseBytes(raw, buffer: buffer, requestMethod: requestMethod, limits: limits)
        }
        return try result.get()
    }

    /// Finds the end of the line starting at `start`: the index of its CR (which must be
    /// followed by LF). Returns nil when the line is not complete yet.
    @inline(__always)
    static func lineEnd(_ raw: UnsafeRawBufferPointer, from start: Int, limit: Int) -> Result<Int?, HeadError> {
        var i = start
        let end = min(raw.count, limit)
        while i < end {
            let b = raw[i]
            if b == LF { return .failure(.malformed("bare LF in the message head")) }
            if b == CR {
                if i + 1 >= raw.count { return .success(nil) }
                if raw[i + 1] != LF { return .failure(.malformed("bare CR in the message head")) }
                return .success(i)
            }
            i += 1
        }
        return .success(nil)
    }

    static func parseRequestBytes(_ raw: UnsafeRawBufferPointer, buffer: ByteBuffer, limits: HeadLimits) -> Result<ParseResult<RequestHead>, HeadError> {
        // RFC 9112 section 2.2: a server SHOULD ignore at least one empty line before the request line.
        var start = 0
        while start + 1 < raw.count, raw[start] == CR, raw[start + 1] == LF, start < 8 { start += 2 }
        if start < raw.count, raw[start] == LF { return .failure(.malformed("bare LF in the message head")) }

        let requestLineEnd: Int
        switch lineEnd(raw, from: start, limit: start + limits.maxRequestLine + 1) {
        case .failure(let e): return .failure(e)
        case .success(nil):
            if raw.count - start > limits.maxRequestLine { return .failure(.requestLineTooLong) }
            return .success(.incomplete)
        case .success(let e?): requestLineEnd = e
        }
        if requestLineEnd - start > limits.maxRequestLine { return .failure(.requestLineTooLong) }

        // request-line = method SP request-target SP HTTP-version
        var i = start
        while i < requestLineEnd, isTchar(raw[i]) { i += 1 }
        if i == start || i >= requestLineEnd || raw[i] != 0x20 {
            return .failure(.malformed("the request line is not 'METHOD target HTTP/1.1'"))
        }
        let methodEnd = i
        i += 1
        let targetStart = i
        while i < requestLineEnd, raw[i] > 0x20, raw[i] < 0x7F { i += 1 }
        if i == targetStart || i >= requestLineEnd || raw[i] != 0x20 {
            return .failure(.malformed("the request target is empty or holds characters that are not allowed"))
        }
        let targetEnd = i
        i += 1
        guard let version = parseVersion(raw, from: i, to: requestLineEnd) else {
            if requestLineEnd - i == 8, raw[i] == UInt8(ascii: "H"), matchesHTTPSlashDigitDotDigit(raw, i) {
                return .failure(.unsupportedVersion)
            }
            return .failure(.malformed("the request line does not end with a valid HTTP version"))
        }

        let fields: [FieldRange]
        let pos: Int
        switch parseFieldLines(raw, from: requestLineEnd + 2, headLimit: start + limits.maxHeadBytes, maxFields: limits.maxFields) {
        case .failure(let e): return .failure(e)
        case .success(nil): return .success(.incomplete)
        case .success(let (f, end)?): (fields, pos) = (f, end)
        }

        var head = RequestHead(
            bytes: buffer.getSlice(at: buffer.readerIndex, length: pos)!,
            method: String(decoding: UnsafeRawBufferPointer(rebasing: raw[start..<methodEnd]), as: UTF8.self),
            target: String(decoding: UnsafeRawBufferPointer(rebasing: raw[targetStart..<targetEnd]), as: UTF8.self),
            version: version, fields: fields, framing: .none, connection: ConnectionOptions(),
            hostField: nil, expectsContinue: false)
        if let error = analyzeRequest(&head) { return .failure(error) }
        return .success(.complete(head, consumed: pos))
    }

    static func matchesHTTPSlashDigitDotDigit(_ raw: UnsafeRawBufferPointer, _ i: Int) -> Bool {
        Array("HTTP/".utf8).enumerated().allSatisfy { raw[i + $0.offset] == $0.element }
            && (0x30...0x39).contains(raw[i + 5]) && raw[i + 6] == UInt8(ascii: ".") && (0x30...0x39).contains(raw[i + 7])
    }

    /// The field lines after the start line, up to and including the empty line: the fields and
    /// the offset just past the head, nil when the head has not ended yet.
    ///
    /// field-line = field-name ":" OWS field-value OWS, each line ended by CRLF. One pass per
    /// line finds its end and validates it (bare CR or LF, obs-fold, whitespace before the colon,
    /// control characters are errors); a line cut off by the end of the bytes means "incomplete",
    /// unless the head limit has been reached.
    static func parseFieldLines(
        _ raw: UnsafeRawBufferPointer, from start: Int, headLimit: Int, maxFields: Int
    ) -> Result<([FieldRange], Int)?, HeadError> {
        var fields: [FieldRange] = []
        fields.reserveCapacity(16)
        let end = min(raw.count, headLimit)
        let ranOut: Result<([FieldRange], Int)?, HeadError> = raw.count >= headLimit ? .failure(.headersTooLarge) : .success(nil)
        var pos = start
        while true {
            if pos >= end { return ranOut }
            let first = raw[pos]
            if first == CR {
                if pos + 1 >= raw.count { return .success(nil) }
                if raw[pos + 1] != LF { return .failure(.malformed("bare CR in the message head")) }
                return .success((fields, pos + 2))
            }
            if first == LF { return .failure(.malformed("bare LF in the message head")) }
            if isOWS(first) {
                return .failure(.malformed("obsolete line folding (a field line starting with whitespace) is not accepted"))
            }
            if fields.count >= maxFields { return .failure(.headersTooLarge) }
            var i = pos
            while i < end, isTchar(raw[i]) { i += 1 }
            if i == end { return ranOut }
            let delimiter = raw[i]
            if delimiter != UInt8(ascii: ":") || i == pos {
                if delimiter == LF { return .failure(.malformed("bare LF in the message head")) }
                if i == pos || delimiter == CR { return .failure(.malformed("a header field line has no valid name followed by ':'")) }
                if isOWS(delimiter) { return .failure(.malformed("whitespace between a header field name and the colon")) }
                return .failure(.malformed("a header field name holds a character that is not allowed"))
            }
            let nameEnd = i
            i += 1
            while i < end, isOWS(raw[i]) { i += 1 }
            let valueStart = i
            // Eight bytes at a time while none is a control character (below 0x20, or DEL):
            // such words hold only value bytes, and the line cannot end inside them.
            while i + 8 <= end {
                let word = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                if hasByteBelow0x20(word) || hasZeroByte(word ^ 0x7F7F_7F7F_7F7F_7F7F) { break }
                i += 8
            }
            while true {
                if i == end { return ranOut }
                let b = raw[i]
                if b >= 0x20 && b != 0x7F || b == 0x09 {
                    i += 1
                } else if b == CR {
                    if i + 1 >= raw.count { return .success(nil) }
                    if raw[i + 1] != LF { return .failure(.malformed("bare CR in the message head")) }
                    break
                } else if b == LF {
                    return .failure(.malformed("bare LF in the message head"))
                } else {
                    return .failure(.malformed("a header field value holds a control character"))
                }
            }
            var valueEnd = i
            while valueEnd > valueStart, isOWS(raw[valueEnd - 1]) { valueEnd -= 1 }
            fields.append(FieldRange(
                nameStart: pos, nameLength: nameEnd - pos, valueStart: valueStart,
                valueLength: valueEnd - valueStart, lineStart: pos, lineEnd: i))
            pos = i + 2
        }
    }

    static func parseVersion(_ raw: UnsafeRawBufferPointer, from: Int, to: Int) -> HTTPVersion? {
        guard to - from == 8, raw[from] == UInt8(ascii: "H"), raw[from + 1] == UInt8(ascii: "T"),
            raw[from + 2] == UInt8(ascii: "T"), raw[from + 3] == UInt8(ascii: "P"), raw[from + 4] == UInt8(ascii: "/"),
            raw[from + 5] == UInt8(ascii: "1"), raw[from + 6] == UInt8(ascii: ".")
        else { return nil }
        switch raw[from + 7] {
        case UInt8(ascii: "1"): return .http11
        case UInt8(ascii: "0"): return .http10
        default: return nil
        }
    }

    /// Reads a Connection field: the usual single token without Strings, lists the general way.
    static func addConnectionTokens(_ bytes: ByteBuffer, _ f: FieldRange, to options: inout ConnectionOptions) {
        if bytes.asciiCaseInsensitiveEquals(at: f.valueStart, length: f.valueLength, literal: "keep-alive") {
            options.keepAlive = true
        } else if bytes.asciiCaseInsensitiveEquals(at: f.valueStart, length: f.valueLength, literal: "close") {
            options.close = true
        } else {
            for token in splitList(bytes.string(at: f.valueStart, length: f.valueLength)) { options.add(token) }
        }
    }

    /// Transfer codings of one field; "chunked" alone without Strings.
    static func codings(_ bytes: ByteBuffer, _ f: FieldRange) -> [String] {
        if bytes.asciiCaseInsensitiveEquals(at: f.valueStart, length: f.valueLength, literal: "chunked") { return ["chunked"] }
        return splitList(bytes.string(at: f.valueStart, length: f.valueLength)).map { $0.lowercased() }
    }

    /// Framing, Host and Connection rules for requests (RFC 9112 sections 3.2, 6, 9.6).
    static func analyzeRequest(_ head: inout RequestHead) -> HeadError? {
        var contentLength: Int?
        var sawTE = false
        var codings: [String] = []
        for (index, f) in head.fields.enumerated() {
            // Compare names only when the length can match: most fields are none of these.
            switch f.nameLength {
            case 14 where head.nameIs(f, "content-length"):
                guard let n = digitsValue(head.bytes, f) ?? parseContentLength(head.value(f)) else {
                    return .malformed("invalid Content-Length")
                }
                if let prev = contentLength, prev != n { return .malformed("conflicting Content-Length values") }
                contentLength = n
            case 17 where head.nameIs(f, "transfer-encoding"):
                sawTE = true
                codings += Self.codings(head.bytes, f)
            case 4 where head.nameIs(f, "host"):
                if head.hostField != nil { return .malformed("more than one Host field") }
                head.hostField = index
            case 10 where head.nameIs(f, "connection"), 16 where head.nameIs(f, "proxy-connection"):
                addConnectionTokens(head.bytes, f, to: &head.connection)
            case 6 where head.nameIs(f, "expect"):
                let v = head.value(f).lowercased()
                if v == "100-continue" { head.expectsContinue = true } else {
                    return .malformed("unsupported Expect value (only 100-continue is known)")
                }
            default:
                break
            }
        }
        if head.version == .http11, head.hostField == nil { return .malformed("an HTTP/1.1 request without a Host field") }
        if sawTE {
            if contentLength != nil { return .malformed("both Content-Length and Transfer-Encoding") }
            if head.version == .http10 { return .malformed("Transfer-Encoding in an HTTP/1.0 request") }
            if codings.last != "chunked" { return .malformed("Transfer-Encoding does not end with chunked") }
            if codings.count != 1 {
                return .notImplemented("transfer codings other than chunked are not supported: \(codings.joined(separator: ", "))")
            }
            head.framing = .chunked
        } else if let n = contentLength {
            head.framing = .length(n)
        }
        return nil
    }

    static func parseResponseBytes(
        _ raw: UnsafeRawBufferPointer, buffer: ByteBuffer, requestMethod: String, limits: HeadLimits
    ) -> Result<ParseResult<ResponseHead>, HeadError> {
        let statusEnd: Int
        switch lineEnd(raw, from: 0, limit: limits.maxHeadBytes) {
        case .failure(let e): return .failure(e)
        case .success(nil):
            if raw.count >= limits.maxHeadBytes { return .failure(.headersTooLarge) }
            return .success(.incomplete)
        case .success(let e?): statusEnd = e
        }
        // status-line = HTTP-version SP status-code SP [ reason-phrase ]
        guard statusEnd >= 12, let version = parseVersion(raw, from: 0, to: 8), raw[8] == 0x20 else {
            return .failure(.malformed("the status line is not 'HTTP/1.x NNN reason'"))
        }
        var status = 0
        for k in 9..<12 {
            let d = raw[k]
            guard d >= 0x30, d <= 0x39 else { return .failure(.malformed("the status code is not three digits")) }
            status = status * 10 + Int(d - 0x30)
        }
        guard status >= 100 else { return .failure(.malformed("the status code is below 100")) }
        var reasonStart = 12
        if statusEnd > 12 {
            guard raw[12] == 0x20 else { return .failure(.malformed("the status code is not followed by a space")) }
            reasonStart = 13
            for k in 13..<statusEnd where !isFieldValueByte(raw[k]) {
                return .failure(.malformed("the reason phrase holds a control character"))
            }
        }
        let fields: [FieldRange]
        let pos: Int
        switch parseFieldLines(raw, from: statusEnd + 2, headLimit: limits.maxHeadBytes, maxFields: limits.maxFields) {
        case .failure(let e): return .failure(e)
        case .success(nil): return .success(.incomplete)
        case .success(let (f, end)?): (fields, pos) = (f, end)
        }
        var head = ResponseHead(
            bytes: buffer.getSlice(at: buffer.readerIndex, length: pos)!, status: status, version: version,
            reasonStart: reasonStart, reasonLength: max(0, statusEnd - reasonStart), fields: fields,
            framing: .none, connection: ConnectionOptions(), mustClose: false)
        if let error = analyzeResponse(&head, requestMethod: requestMethod) { return .failure(error) }
        return .success(.complete(head, consumed: pos))
    }

    /// RFC 9112 section 6.3, in its order of precedence.
    static func analyzeResponse(_ head: inout ResponseHead, requestMethod: String) -> HeadError? {
        var contentLength: Int?
        var codings: [String] = []
        var sawTE = false
        for f in head.fields {
            switch f.nameLength {
            case 14 where head.nameIs(f, "content-length"):
                guard let n = digitsValue(head.bytes, f) ?? parseContentLength(head.value(f)) else {
                    return .malformed("invalid Content-Length from upstream")
                }
                if let prev = contentLength, prev != n { return .malformed("conflicting Content-Length values from upstream") }
                contentLength = n
            case 17 where head.nameIs(f, "transfer-encoding"):
                sawTE = true
                codings += Self.codings(head.bytes, f)
            case 10 where head.nameIs(f, "connection"):
                addConnectionTokens(head.bytes, f, to: &head.connection)
            default:
                break
            }
        }
        if head.isInterim || head.status == 204 || head.status == 304 || requestMethod == "HEAD" {
            head.framing = .none
            return nil
        }
        if sawTE {
            if contentLength != nil { head.mustClose = true }
            // Codings under chunked (gzip, chunked) pass through unchanged; only chunked is framing.
            head.framing = codings.last == "chunked" ? .chunked : .untilClose
            return nil
        }
        if let n = contentLength {
            head.framing = .length(n)
            return nil
        }
        head.framing = .untilClose
        return nil
    }

    /// The value of a field that is only digits (the usual Content-Length), read from the bytes
    /// without making a String; nil for anything else (then the general parser decides).
    static func digitsValue(_ bytes: ByteBuffer, _ f: FieldRange) -> Int? {
        guard f.valueLength > 0, f.valueLength <= 18 else { return nil }
        return bytes.withUnsafeReadableBytes { raw in
            var n = 0
            for i in f.valueStart..<(f.valueStart + f.valueLength) {
                let d = raw[i]
                guard d >= 0x30, d <= 0x39 else { return nil }
                n = n * 10 + Int(d - 0x30)
            }
            return n
        }
    }

    /// Content-Length = 1*DIGIT, possibly a list of identical values ("5, 5").
    public static func parseContentLength(_ value: String) -> Int? {
        // The common case, plain digits, without splitting.
        if !value.isEmpty, value.utf8.count <= 18, value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            return Int(value)
        }
        var result: Int?
        for part in value.split(separator: ",", omittingEmptySubsequences: false) {
            let trimmed = part.trimmingOWS()
            guard !trimmed.isEmpty, trimmed.utf8.count <= 18, trimmed.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                return nil
            }
            let n = Int(trimmed)!
            if let r = result, r != n { return nil }
            result = n
        }
        return result
    }

    /// Splits a comma-separated list field, trimming whitespace and dropping empty elements.
    public static func splitList(_ value: String) -> [String] {
        value.split(separator: ",").map { $0.trimmingOWS() }.filter { !$0.isEmpty }
    }
}

extension ConnectionOptions {
    mutating func add(_ token: String) {
        switch token.lowercased() {
        case "close": close = true
        case "keep-alive": keepAlive = true
        case let other: others.append(other)
        }
    }
}

extension Substring {
    func trimmingOWS() -> String {
        var s = self[...]
        while let f = s.utf8.first, f == 0x20 || f == 0x09 { s = s.dropFirst() }
        while let l = s.utf8.last, l == 0x20 || l == 0x09 { s = s.dropLast() }
        return String(s)
    }
}

extension ByteBuffer {
    /// Reads a string at an offset relative to the reader index.
    @inlinable
    public func string(at offset: Int, length: Int) -> String {
        getString(at: readerIndex + offset, length: length) ?? ""
    }

    /// Compares bytes at an offset (relative to the reader index) with a lowercase ASCII
    /// literal: the hot-path form, straight from the literal's bytes.
    @inlinable
    public func asciiCaseInsensitiveEquals(at offset: Int, length: Int, literal: StaticString) -> Bool {
        guard literal.utf8CodeUnitCount == length else { return false }
        return literal.withUTF8Buffer { asciiCaseInsensitiveEquals(at: offset, lowercased: $0) }
    }

    /// Compares bytes at an offset (relative to the reader index) with a lowercase ASCII string.
    @inlinable
    public func asciiCaseInsensitiveEquals(at offset: Int, length: Int, _ lowercased: String) -> Bool {
        guard lowercased.utf8.count == length else { return false }
        var name = lowercased
        return name.withUTF8 { asciiCaseInsensitiveEquals(at: offset, lowercased: $0) }
    }

    @inlinable
    func asciiCaseInsensitiveEquals(at offset: Int, lowercased want: UnsafeBufferPointer<UInt8>) -> Bool {
        withUnsafeReadableBytes { raw in
            for i in 0..<want.count {
                var b = raw[offset + i]
                if b >= 0x41, b <= 0x5A { b |= 0x20 }
                if b != want[i] { return false }
            }
            return true
        }
    }
}
