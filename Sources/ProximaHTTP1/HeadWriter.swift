import NIOCore

/// What to do with `X-Forwarded-For` on requests sent upstream.
public enum ForwardedForMode: String, Sendable, Equatable, CaseIterable {
    /// Append the client's address to the list (as Squid's `forwarded_for on`).
    case add
    /// Pass what the client sent, add nothing.
    case keep
    /// Remove the field altogether.
    case remove
}

/// Request headers changed to hide who the client is (a privacy profile): identifying fields
/// removed, `User-Agent` replaced, `Referer` cut to its origin, cookies not sent to other sites
/// than the page's.
public struct Anonymizer: Sendable, Equatable {
    /// Lowercase names of fields that are dropped.
    public var remove: Set<String>
    /// Client hints (`Sec-CH-UA…`) go too.
    public var removeClientHints = true
    public var userAgent: String?
    public var refererToOrigin = true
    public var dropThirdPartyCookies = true

    public static let identifyingFields: Set<String> = [
        "from", "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "x-client-ip",
        "client-ip", "true-client-ip", "cf-connecting-ip", "x-cluster-client-ip", "x-originating-ip", "via",
    ]
    /// A widespread browser's string, so the client blends in.
    public static let commonUserAgent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"

    public init(remove: Set<String> = Anonymizer.identifyingFields, userAgent: String? = Anonymizer.commonUserAgent) {
        self.remove = remove
        self.userAgent = userAgent
    }

    /// The last two labels of a host: a rough "site" (no public-suffix list), enough to tell a
    /// page's own requests from requests to other sites in the common case.
    static func site(_ host: Substring) -> Substring {
        var dots = 0
        var i = host.endIndex
        while i > host.startIndex {
            let j = host.index(before: i)
            if host[j] == "." {
                dots += 1
                if dots == 2 { return host[i...] }
            }
            i = j
        }
        return host
    }

    /// Where the authority of an absolute URL starts (just after `://`).
    static func afterScheme(_ url: Substring) -> Substring.Index? {
        guard let colon = url.firstIndex(of: ":") else { return nil }
        let rest = url[colon...]
        guard rest.hasPrefix("://") else { return nil }
        return url.index(colon, offsetBy: 3)
    }

    /// The host of an absolute URL (`https://a.example:8443/x` → `a.example`).
    static func urlHost(_ url: Substring) -> Substring? {
        guard let start = afterScheme(url) else { return nil }
        let rest = url[start...]
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        let hostPart = authority.split(separator: "@").last ?? authority
        if hostPart.hasPrefix("[") { return hostPart.prefix { $0 != "]" }.dropFirst() }
        return hostPart.prefix { $0 != ":" }
    }

    /// `scheme://authority/` of an absolute URL.
    static func origin(_ url: Substring) -> Substring? {
        guard let start = afterScheme(url) else { return nil }
        let rest = url[start...]
        let end = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        return url[url.startIndex..<end]
    }
}

/// Hop-by-hop rules of RFC 9110 section 7.6.1 plus the proxy-only fields, and the writers that
/// turn a received head into the head sent on: fields copied as bytes from the received head,
/// with framing fields written anew from the framing the proxy actually uses.
public enum HeadWriter {
    /// The hop-by-hop field names (RFC 9110 section 7.6.1, with the obsolete Proxy-Connection),
    /// for code that handles names as strings; the writers below classify bytes instead.
    public static let hopByHopNames: Set<String> = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"]

    /// What the writers need to know of a field name.
    enum FieldKind {
        /// connection, proxy-connection, keep-alive, te, trailer, upgrade, transfer-encoding: never
        /// forwarded (framing is written anew).
        case hopByHop
        /// `Upgrade`: hop-by-hop, except on a protocol switch a reverse proxy passes on.
        case upgrade
        /// Credentials for this proxy: removed from requests; means nothing in a response.
        case proxyAuthorization
        case contentLength
        case host
        case xForwardedFor
        /// X-Forwarded-Proto and -Host: a reverse proxy writes its own.
        case xForwardedProtoOrHost
        /// A reverse proxy passes on the request id it logs.
        case xRequestID
        /// RFC 7239 `Forwarded`.
        case forwarded
        case other
    }

    static func classify(_ bytes: ByteBuffer, _ f: FieldRange) -> FieldKind {
        func eq(_ name: StaticString) -> Bool { bytes.asciiCaseInsensitiveEquals(at: f.nameStart, length: f.nameLength, literal: name) }
        switch f.nameLength {
        case 2: return eq("te") ? .hopByHop : .other
        case 4: return eq("host") ? .host : .other
        case 7: return eq("trailer") ? .hopByHop : eq("upgrade") ? .upgrade : .other
        case 9: return eq("forwarded") ? .forwarded : .other
        case 10: return eq("connection") || eq("keep-alive") ? .hopByHop : .other
        case 12: return eq("x-request-id") ? .xRequestID : .other
        case 14: return eq("content-length") ? .contentLength : .other
        case 15: return eq("x-forwarded-for") ? .xForwardedFor : .other
        case 16: return eq("proxy-connection") ? .hopByHop : eq("x-forwarded-host") ? .xForwardedProtoOrHost : .other
        case 17: return eq("transfer-encoding") ? .hopByHop : eq("x-forwarded-proto") ? .xForwardedProtoOrHost : .other
        case 19: return eq("proxy-authorization") ? .proxyAuthorization : .other
        default: return .other
        }
    }

    /// Whether the `Connection` field named this field (hop-by-hop for this message only).
    static func isListed(_ bytes: ByteBuffer, _ f: FieldRange, in options: ConnectionOptions) -> Bool {
        guard !options.others.isEmpty else { return false }
        return options.others.contains { bytes.asciiCaseInsensitiveEquals(at: f.nameStart, length: f.nameLength, $0) }
    }

    /// Writes the request head to send to the origin server: origin-form target, HTTP/1.1,
    /// `Host` from the target, hop-by-hop fields removed, `Via` and `X-Forwarded-For` applied.
    public static func writeUpstreamRequest(
        _ head: RequestHead, target: RequestTarget, via: String?, forwardedFor: ForwardedForMode,
        clientIP: String, anonymizer: Anonymizer? = nil, crossSite: Bool? = nil, edit: HeaderEdit = HeaderEdit(),
        host: String? = nil, forwardedHost: String? = nil, requestID: String? = nil, upgrade: Bool = false,
        trustsClientForwarding: Bool = true, forwardedField: String? = nil, secure: Bool = false, into out: inout ByteBuffer
    ) {
        if let anonymizer {
            return writeAnonymized(head, target: target, anonymizer: anonymizer, crossSite: crossSite, edit: edit, host: host, into: &out)
        }
        // Everything written is either copied from the received head (at most all of it, plus
        // each X-Forwarded-For value a second time) or one of the strings counted here.
        let bound = 2 * head.bytes.readableBytes + head.method.utf8.count + target.pathAndQuery.utf8.count
            + (host ?? target.authority).utf8.count + clientIP.utf8.count + (via?.utf8.count ?? 0) + edit.extraBytes
            + (forwardedHost?.utf8.count ?? 0) + (requestID?.utf8.count ?? 0) + (forwardedField?.utf8.count ?? 0) + 240
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { dst in
            head.bytes.withUnsafeReadableBytes { src in
                var w = BoundedWriter(dst)
                writeRequestLine(head, target: target, host: host, into: &w)
                var forwarded: [FieldRange] = []
                copyFields(of: head.bytes, src, head.fields, connection: head.connection, into: &w) { f, kind in
                    switch kind {
                    case .hopByHop, .proxyAuthorization, .contentLength, .host: return false
                    case .upgrade: return upgrade
                    case .xForwardedFor where forwardedFor != .keep || !trustsClientForwarding:
                        // From a client that is not a trusted proxy, the chain is not passed on.
                        if f.valueLength > 0, !edit.drops(f), trustsClientForwarding { forwarded.append(f) }
                        return false
                    // A trusted proxy's Forwarded stays, ours follows it (a list across field lines).
                    case .forwarded where !trustsClientForwarding: return false
                    // A reverse proxy says what the client asked for; a client's own value is not trusted.
                    case .xForwardedProtoOrHost where forwardedHost != nil: return false
                    case .xRequestID where requestID != nil: return false
                    default: return !edit.drops(f)
                    }
                }
                edit.write(into: &w)
                if let forwardedHost {
                    w.append(secure ? "X-Forwarded-Proto: https\r\nX-Forwarded-Host: " : "X-Forwarded-Proto: http\r\nX-Forwarded-Host: ")
                    w.append(forwardedHost)
                    w.append("\r\n")
                }
                if let requestID {
                    w.append("X-Request-ID: ")
                    w.append(requestID)
                    w.append("\r\n")
                }
                if let forwardedField {
                    w.append("Forwarded: ")
                    w.append(forwardedField)
                    w.append("\r\n")
                }
                if upgrade { w.append("Connection: Upgrade\r\n") }
                if forwardedFor == .add {
                    w.append("X-Forwarded-For: ")
                    for f in forwarded {
                        w.append(UnsafeRawBufferPointer(rebasing: src[f.valueStart..<(f.valueStart + f.valueLength)]))
                        w.append(", ")
                    }
                    w.append(clientIP)
                    w.append("\r\n")
                }
                if let via { writeVia(via, receivedWith: head.version, into: &w) }
                writeRequestFraming(head.framing, into: &w)
                w.append("\r\n")
                return w.count
            }
        }
    }

    /// The privacy profile's request: the identifying fields, `Via` and `X-Forwarded-For` are not
    /// written; `User-Agent` and `Referer` are rewritten; cookies go only to the page's own site.
    /// `crossSite`: whether the Referer's site differs from the target's, when the caller knows
    /// it (from the Public Suffix List); else the last two labels of each host are compared.
    static func writeAnonymized(
        _ head: RequestHead, target: RequestTarget, anonymizer a: Anonymizer, crossSite known: Bool?, edit: HeaderEdit,
        host: String? = nil, into out: inout ByteBuffer
    ) {
        let referer = head.firstValue("referer")
        let crossSite = known ?? referer.flatMap { Anonymizer.urlHost(Substring($0)) }.map {
            Anonymizer.site(Substring($0.lowercased())) != Anonymizer.site(Substring(target.host))
        } ?? false
        // The rewritten Referer is shorter than the received one, which the head holds.
        let bound = head.bytes.readableBytes + target.pathAndQuery.utf8.count + (host ?? target.authority).utf8.count
            + (a.userAgent?.utf8.count ?? 0) + edit.extraBytes + 160
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { dst in
            head.bytes.withUnsafeReadableBytes { src in
                var w = BoundedWriter(dst)
                writeRequestLine(head, target: target, host: host, into: &w)
                copyFields(of: head.bytes, src, head.fields, connection: head.connection, into: &w) { f, kind in
                    switch kind {
                    case .hopByHop, .upgrade, .proxyAuthorization, .contentLength, .host, .xForwardedFor: return false
                    case .xForwardedProtoOrHost, .xRequestID, .forwarded, .other: break
                    }
                    if edit.drops(f) { return false }
                    let name = head.name(f).lowercased()
                    if a.remove.contains(name) || (a.removeClientHints && name.hasPrefix("sec-ch-")) { return false }
                    switch name {
                    case "user-agent": return a.userAgent == nil
                    case "referer": return !a.refererToOrigin
                    case "cookie": return !(a.dropThirdPartyCookies && crossSite)
                    default: return true
                    }
                }
                if a.refererToOrigin, let r = referer, let origin = Anonymizer.origin(Substring(r)) {
                    w.append("Referer: ")
                    w.append(String(origin))
                    w.append("/\r\n")
                }
                if let ua = a.userAgent, !edit.writes("user-agent") {
                    w.append("User-Agent: ")
                    w.append(ua)
                    w.append("\r\n")
                }
                edit.write(into: &w)
                writeRequestFraming(head.framing, into: &w)
                w.append("\r\n")
                return w.count
            }
        }
    }

    /// `METHOD path HTTP/1.1` and `Host` from the target (or `host`, a reverse route's choice):
    /// what every request sent upstream starts with.
    static func writeRequestLine(_ head: RequestHead, target: RequestTarget, host: String? = nil, into w: inout BoundedWriter) {
        w.append(head.method)
        w.append(" ")
        w.append(target.pathAndQuery)
        w.append(" HTTP/1.1\r\nHost: ")
        w.append(host ?? target.authority)
        w.append("\r\n")
    }

    /// The request body's framing field, written anew.
    static func writeRequestFraming(_ framing: BodyFraming, into w: inout BoundedWriter) {
        switch framing {
        case .chunked: writeFraming(.chunked, into: &w)
        case .length(let n): writeFraming(.length(n), into: &w)
        case .none, .untilClose: break
        }
    }

    /// How the proxy frames a response body towards its client.
    public enum ClientFraming: Sendable, Equatable {
        /// No body (HEAD, 1xx, 204, 304): the received Content-Length is kept as information.
        case none
        case length(Int)
        case chunked
        /// Body until the connection closes (HTTP/1.0 clients of chunked or close-delimited bodies).
        case untilClose
    }

    /// Writes the response head sent to the client.
    public static func writeClientResponse(
        _ head: ResponseHead, framing: ClientFraming, via: String?, connection: ConnectionHeader,
        edit: HeaderEdit = HeaderEdit(), upgrade: Bool = false, into out: inout ByteBuffer
    ) {
        let bound = head.bytes.readableBytes + (via?.utf8.count ?? 0) + edit.extraBytes + 128
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { dst in
            head.bytes.withUnsafeReadableBytes { src in
                var w = BoundedWriter(dst)
                w.append("HTTP/1.1 ")
                let status = head.status
                w.append(byte: UInt8(truncatingIfNeeded: 0x30 + status / 100))
                w.append(byte: UInt8(truncatingIfNeeded: 0x30 + status / 10 % 10))
                w.append(byte: UInt8(truncatingIfNeeded: 0x30 + status % 10))
                w.append(" ")
                w.append(UnsafeRawBufferPointer(rebasing: src[head.reasonStart..<(head.reasonStart + head.reasonLength)]))
                w.append("\r\n")
                copyFields(of: head.bytes, src, head.fields, connection: head.connection, into: &w) { f, kind in
                    switch kind {
                    case .hopByHop: return false
                    case .upgrade: return upgrade
                    case .contentLength: return framing == .none
                    default: return !edit.drops(f)
                    }
                }
                edit.write(into: &w)
                if let via { writeVia(via, receivedWith: head.version, into: &w) }
                writeFraming(framing, into: &w)
                if upgrade { w.append("Connection: Upgrade\r\n") }
                switch connection {
                case .none: break
                case .close: w.append("Connection: close\r\n")
                case .keepAlive: w.append("Connection: keep-alive\r\n")
                }
                w.append("\r\n")
                return w.count
            }
        }
    }

    public enum ConnectionHeader: Sendable { case none, close, keepAlive }

    /// `Via: 1.1 name`: the protocol version the message was received with, then our name.
    static func writeVia(_ via: String, receivedWith version: HTTPVersion, into w: inout BoundedWriter) {
        w.append(version == .http11 ? "Via: 1.1 " : "Via: 1.0 ")
        w.append(via)
        w.append("\r\n")
    }

    /// The framing field for a body the proxy frames itself (none for `.none`/`.untilClose`).
    static func writeFraming(_ framing: ClientFraming, into w: inout BoundedWriter) {
        switch framing {
        case .length(let n):
            w.append("Content-Length: ")
            w.appendDecimal(n)
            w.append("\r\n")
        case .chunked: w.append("Transfer-Encoding: chunked\r\n")
        case .none, .untilClose: break
        }
    }

    /// Copies the field lines `keep` accepts (and the `Connection` field does not name).
    /// Consecutive kept lines sit next to each other in the received head, each with its CRLF,
    /// so a run of them is copied with one copy instead of two per line.
    static func copyFields(
        of bytes: ByteBuffer, _ src: UnsafeRawBufferPointer, _ fields: [FieldRange], connection: ConnectionOptions,
        into w: inout BoundedWriter, keep: (FieldRange, FieldKind) -> Bool
    ) {
        var runStart = -1
        var runEnd = -1
        for f in fields {
            let kind = classify(bytes, f)
            // `Connection: Upgrade` names the Upgrade field; it still goes on when a switch is passed on.
            guard keep(f, kind), kind == .upgrade || !isListed(bytes, f, in: connection) else {
                if runStart >= 0 { w.append(UnsafeRawBufferPointer(rebasing: src[runStart..<runEnd])) }
                runStart = -1
                continue
            }
            if runStart < 0 || f.lineStart != runEnd {
                if runStart >= 0 { w.append(UnsafeRawBufferPointer(rebasing: src[runStart..<runEnd])) }
                runStart = f.lineStart
            }
            runEnd = f.lineEnd + 2
        }
        if runStart >= 0 { w.append(UnsafeRawBufferPointer(rebasing: src[runStart..<runEnd])) }
    }

    /// Whether a `Via` field names this proxy as a recipient, i.e. the request has looped back.
    public static func viaContains(_ head: RequestHead, pseudonym: String) -> Bool {
        let wanted = pseudonym.lowercased()
        for f in head.fields where head.nameEquals(f, "via") {
            for entry in HeadParser.splitList(head.value(f)) {
                // via-entry = received-protocol RWS received-by [ RWS comment ]
                let parts = entry.split(whereSeparator: { $0 == " " || $0 == "\t" })
                if parts.count >= 2, parts[1].lowercased() == wanted { return true }
            }
        }
        return false
    }
}

/// Appends into memory reserved up front for a whole head: one capacity check per piece instead
/// of a ByteBuffer write (uniqueness check, growth check, index update) each. Running past the
/// reservation would be a bug in the bound computed by the caller, so it traps rather than
/// writing out of bounds.
struct BoundedWriter {
    let base: UnsafeMutableRawBufferPointer
    private(set) var count = 0

    init(_ base: UnsafeMutableRawBufferPointer) { self.base = base }

    @inline(__always)
    private mutating func reserve(_ n: Int) -> UnsafeMutableRawPointer {
        precondition(n <= base.count - count, "head writer bound too small")
        let p = base.baseAddress! + count
        count += n
        return p
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        reserve(bytes.count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
    }

    mutating func append(_ s: StaticString) {
        reserve(s.utf8CodeUnitCount).copyMemory(from: s.utf8Start, byteCount: s.utf8CodeUnitCount)
    }

    mutating func append(_ s: String) {
        let done: Void? = s.utf8.withContiguousStorageIfAvailable { append(UnsafeRawBufferPointer($0)) }
        if done == nil { for b in s.utf8 { append(byte: b) } }
    }

    mutating func append(byte: UInt8) {
        reserve(1).storeBytes(of: byte, as: UInt8.self)
    }

    mutating func appendDecimal(_ value: Int) {
        precondition(value >= 0)
        var digits = 1
        var rest = value / 10
        while rest > 0 {
            digits += 1
            rest /= 10
        }
        let p = reserve(digits)
        var v = value
        for i in stride(from: digits - 1, through: 0, by: -1) {
            p.storeBytes(of: UInt8(truncatingIfNeeded: 0x30 + v % 10), toByteOffset: i, as: UInt8.self)
            v /= 10
        }
    }
}
