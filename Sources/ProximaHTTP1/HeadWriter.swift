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

/// Hop-by-hop rules of RFC 9110 section 7.6.1 plus the proxy-only fields, and the writers that
/// turn a received head into the head sent on: fields copied as bytes from the received head,
/// with framing fields written anew from the framing the proxy actually uses.
public enum HeadWriter {
    /// What the writers need to know of a field name.
    enum FieldKind {
        /// connection, proxy-connection, keep-alive, proxy-authorization, te, trailer, upgrade,
        /// transfer-encoding: never forwarded (framing is written anew).
        case hopByHop
        case contentLength
        case host
        case xForwardedFor
        case other
    }

    static func classify(_ bytes: ByteBuffer, _ f: FieldRange) -> FieldKind {
        func eq(_ name: StaticString) -> Bool { bytes.asciiCaseInsensitiveEquals(at: f.nameStart, length: f.nameLength, literal: name) }
        switch f.nameLength {
        case 2: return eq("te") ? .hopByHop : .other
        case 4: return eq("host") ? .host : .other
        case 7: return eq("trailer") || eq("upgrade") ? .hopByHop : .other
        case 10: return eq("connection") || eq("keep-alive") ? .hopByHop : .other
        case 14: return eq("content-length") ? .contentLength : .other
        case 15: return eq("x-forwarded-for") ? .xForwardedFor : .other
        case 16: return eq("proxy-connection") ? .hopByHop : .other
        case 17: return eq("transfer-encoding") ? .hopByHop : .other
        case 19: return eq("proxy-authorization") ? .hopByHop : .other
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
        clientIP: String, into out: inout ByteBuffer
    ) {
        out.writeString(head.method)
        out.writeStaticString(" ")
        out.writeString(target.pathAndQuery)
        out.writeStaticString(" HTTP/1.1\r\nHost: ")
        out.writeString(target.authority)
        out.writeStaticString("\r\n")
        var forwardedValues: [String] = []
        copyFields(of: head.bytes, head.fields, connection: head.connection, into: &out) { f, kind in
            switch kind {
            case .hopByHop, .contentLength, .host: return false
            case .xForwardedFor where forwardedFor != .keep:
                if f.valueLength > 0 { forwardedValues.append(head.value(f)) }
                return false
            default: return true
            }
        }
        if forwardedFor == .add {
            out.writeStaticString("X-Forwarded-For: ")
            for v in forwardedValues {
                out.writeString(v)
                out.writeStaticString(", ")
            }
            out.writeString(clientIP)
            out.writeStaticString("\r\n")
        }
        if let via { writeVia(via, receivedWith: head.version, into: &out) }
        switch head.framing {
        case .chunked: writeFraming(.chunked, into: &out)
        case .length(let n): writeFraming(.length(n), into: &out)
        case .none, .untilClose: break
        }
        out.writeStaticString("\r\n")
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
        into out: inout ByteBuffer
    ) {
        out.writeStaticString("HTTP/1.1 ")
        let status = head.status
        out.writeInteger(UInt8(truncatingIfNeeded: 0x30 + status / 100))
        out.writeInteger(UInt8(truncatingIfNeeded: 0x30 + status / 10 % 10))
        out.writeInteger(UInt8(truncatingIfNeeded: 0x30 + status % 10))
        out.writeStaticString(" ")
        head.bytes.withUnsafeReadableBytes { raw in
            out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[head.reasonStart..<(head.reasonStart + head.reasonLength)]))
        }
        out.writeStaticString("\r\n")
        copyFields(of: head.bytes, head.fields, connection: head.connection, into: &out) { f, kind in
            switch kind {
            // Proxy-Authorization shares the request rule's class but means nothing here.
            case .hopByHop: return head.bytes.asciiCaseInsensitiveEquals(at: f.nameStart, length: f.nameLength, literal: "proxy-authorization")
            case .contentLength: return framing == .none
            default: return true
            }
        }
        if let via { writeVia(via, receivedWith: head.version, into: &out) }
        writeFraming(framing, into: &out)
        switch connection {
        case .none: break
        case .close: out.writeStaticString("Connection: close\r\n")
        case .keepAlive: out.writeStaticString("Connection: keep-alive\r\n")
        }
        out.writeStaticString("\r\n")
    }

    public enum ConnectionHeader: Sendable { case none, close, keepAlive }

    /// `Via: 1.1 name`: the protocol version the message was received with, then our name.
    static func writeVia(_ via: String, receivedWith version: HTTPVersion, into out: inout ByteBuffer) {
        out.writeStaticString(version == .http11 ? "Via: 1.1 " : "Via: 1.0 ")
        out.writeString(via)
        out.writeStaticString("\r\n")
    }

    /// The framing field for a body the proxy frames itself (none for `.none`/`.untilClose`).
    static func writeFraming(_ framing: ClientFraming, into out: inout ByteBuffer) {
        switch framing {
        case .length(let n):
            out.writeStaticString("Content-Length: ")
            out.writeString(String(n))
            out.writeStaticString("\r\n")
        case .chunked: out.writeStaticString("Transfer-Encoding: chunked\r\n")
        case .none, .untilClose: break
        }
    }

    /// Copies the field lines `keep` accepts (and the `Connection` field does not name).
    /// Consecutive kept lines sit next to each other in the received head, each with its CRLF,
    /// so a run of them is copied with one write instead of two per line.
    static func copyFields(
        of bytes: ByteBuffer, _ fields: [FieldRange], connection: ConnectionOptions, into out: inout ByteBuffer,
        keep: (FieldRange, FieldKind) -> Bool
    ) {
        var runStart = -1
        var runEnd = -1
        func flushRun(_ out: inout ByteBuffer) {
            guard runStart >= 0 else { return }
            bytes.withUnsafeReadableBytes { raw in out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[runStart..<runEnd])) }
            runStart = -1
        }
        for f in fields {
            guard keep(f, classify(bytes, f)), !isListed(bytes, f, in: connection) else {
                flushRun(&out)
                continue
            }
            if runStart < 0 || f.lineStart != runEnd {
                flushRun(&out)
                runStart = f.lineStart
            }
            runEnd = f.lineEnd + 2
        }
        flushRun(&out)
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
