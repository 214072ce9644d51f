import NIOCore

/// What to do with `X-Forwarded-For` on requests sent upstream.
public enum ForwardedForMode: String, Sendable, Equatable, CaseIterable, Codable {
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
    /// Fields never forwarded on requests. `host`, `content-length` and `transfer-encoding` are
    /// written anew by the writer.
    static let requestDropped: Set<String> = [
        "connection", "proxy-connection", "keep-alive", "proxy-authorization", "te", "trailer",
        "upgrade", "transfer-encoding", "content-length", "host",
    ]
    static let responseDropped: Set<String> = [
        "connection", "proxy-connection", "keep-alive", "te", "trailer", "upgrade", "transfer-encoding",
    ]

    static func isListedIn(_ options: ConnectionOptions, _ lowercasedName: String) -> Bool {
        options.others.contains(lowercasedName)
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
        for f in head.fields {
            let name = head.bytes.string(at: f.nameStart, length: f.nameLength).lowercased()
            if requestDropped.contains(name) || isListedIn(head.connection, name) { continue }
            if name == "x-forwarded-for", forwardedFor != .keep {
                if f.valueLength > 0 { forwardedValues.append(head.value(f)) }
                continue
            }
            copyLine(f, from: head.bytes, into: &out)
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
        if let via {
            out.writeStaticString("Via: ")
            out.writeString(head.version == .http11 ? "1.1 " : "1.0 ")
            out.writeString(via)
            out.writeStaticString("\r\n")
        }
        switch head.framing {
        case .chunked: out.writeStaticString("Transfer-Encoding: chunked\r\n")
        case .length(let n):
            out.writeStaticString("Content-Length: ")
            out.writeString(String(n))
            out.writeStaticString("\r\n")
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
        out.writeString(String(head.status))
        out.writeStaticString(" ")
        out.writeBytes(head.bytes.readableBytesView[(head.bytes.readableBytesView.startIndex + head.reasonStart)...].prefix(head.reasonLength))
        out.writeStaticString("\r\n")
        for f in head.fields {
            let name = head.bytes.string(at: f.nameStart, length: f.nameLength).lowercased()
            if responseDropped.contains(name) || isListedIn(head.connection, name) { continue }
            if name == "content-length", framing != .none { continue }
            copyLine(f, from: head.bytes, into: &out)
        }
        if let via {
            out.writeStaticString("Via: ")
            out.writeString(head.version == .http11 ? "1.1 " : "1.0 ")
            out.writeString(via)
            out.writeStaticString("\r\n")
        }
        switch framing {
        case .length(let n):
            out.writeStaticString("Content-Length: ")
            out.writeString(String(n))
            out.writeStaticString("\r\n")
        case .chunked: out.writeStaticString("Transfer-Encoding: chunked\r\n")
        case .none, .untilClose: break
        }
        switch connection {
        case .none: break
        case .close: out.writeStaticString("Connection: close\r\n")
        case .keepAlive: out.writeStaticString("Connection: keep-alive\r\n")
        }
        out.writeStaticString("\r\n")
    }

    public enum ConnectionHeader: Sendable { case none, close, keepAlive }

    static func copyLine(_ f: FieldRange, from bytes: ByteBuffer, into out: inout ByteBuffer) {
        let view = bytes.readableBytesView
        let start = view.startIndex + f.lineStart
        out.writeBytes(view[start..<(view.startIndex + f.lineEnd)])
        out.writeStaticString("\r\n")
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
