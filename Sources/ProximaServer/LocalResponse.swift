import Atomics
import NIOCore
import ProximaConfig
import ProximaTelemetry

/// Pages the proxy answers itself: errors, denials, and the page for requests aimed at the
/// proxy. Short, saying why, HTML for browsers and plain text for everything else.
/// How a page the proxy writes is presented: HTML for browsers, JSON for API clients, plain
/// text for everything else (curl, scripts).
enum PageStyle {
    case text, html, json

    var contentType: String {
        switch self {
        case .text: return "text/plain; charset=utf-8"
        case .html: return "text/html; charset=utf-8"
        case .json: return "application/json"
        }
    }

    /// From the request's Accept field: HTML when it names text/html, JSON when it names JSON.
    init(accept: String?) {
        guard let accept = accept?.lowercased() else {
            self = .text
            return
        }
        if accept.contains("text/html") {
            self = .html
        } else if accept.contains("application/json") || accept.contains("+json") {
            self = .json
        } else {
            self = .text
        }
    }
}

enum LocalResponse {
    static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 201: return "Created"
        case 204: return "No Content"
        case 301: return "Moved Permanently"
        case 302: return "Found"
        case 303: return "See Other"
        case 307: return "Temporary Redirect"
        case 308: return "Permanent Redirect"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 407: return "Proxy Authentication Required"
        case 408: return "Request Timeout"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 431: return "Request Header Fields Too Large"
        case 429: return "Too Many Requests"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        case 505: return "HTTP Version Not Supported"
        case 508: return "Loop Detected"
        default: return "Error"
        }
    }

    /// The complete response (head and body) as one buffer.
    static func make(
        status: Int, message: String, request: String?, style: PageStyle, close: Bool, headRequest: Bool = false,
        via: String?, requestID: String? = nil, detail: String? = nil, headers: [(String, String)] = [],
        fields: [(String, String)] = [], templates: PageTemplates = PageTemplates(), client: String? = nil, user: String? = nil,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        let reason = reasonPhrase(status)
        let body: String
        let html = style == .html
        let kind = style == .json ? "json" : html ? "html" : "txt"
        if let template = templates.template(status: status, kind: kind) {
            var values: [String: String] = [
                "status": String(status), "reason": reason, "message": message, "request": request ?? "",
                "request_id": requestID ?? "", "detail": detail ?? "", "client": client ?? "", "user": user ?? "",
                "proxy": "Proxima \(proximaVersion)", "rule": "", "list": "",
            ]
            for (k, v) in fields { values[k] = v }
            body = template.render(values) { value in
                switch style {
                case .html: return escapeHTML(value)
                case .json: return String(AccessLogLineFormat.jsonString(value).dropFirst().dropLast())
                case .text: return value
                }
            }
        } else if style == .json {
            let q = AccessLogLineFormat.jsonString
            body = "{\"status\":\(status),\"error\":\(q(reason)),\"message\":\(q(message))"
                + fields.map { ",\(q($0.0)):\(q($0.1))" }.joined()
                + (request.map { ",\"request\":" + q($0) } ?? "") + (requestID.map { ",\"request_id\":" + q($0) } ?? "")
                + (detail.map { ",\"detail\":" + q($0) } ?? "") + ",\"proxy\":\"Proxima \(proximaVersion)\"}\n"
        } else if html {
            var req = fields.map { "<p>\(escapeHTML($0.0.prefix(1).uppercased() + $0.0.dropFirst())): <code>\(escapeHTML($0.1))</code></p>\n" }.joined()
            req += request.map { "<p>Request: <code>\(escapeHTML($0))</code></p>\n" } ?? ""
            if let requestID { req += "<p>Request id: <code>\(escapeHTML(requestID))</code> (quote it when reporting this)</p>\n" }
            body = """
                <!DOCTYPE html>
                <html><head><meta charset="utf-8"><title>\(status) \(reason)</title>
                <style>body{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;color:#222}h1{font-size:1.4em}code{background:#eee;padding:0 .2em}</style>
                </head><body><h1>\(status) \(reason)</h1>
                <p>\(escapeHTML(message))</p>
                \(req)<hr><p><small>Proxima \(proximaVersion)</small></p></body></html>

                """
        } else {
            var req = fields.map { "\($0.0.prefix(1).uppercased() + $0.0.dropFirst()): \($0.1)\n" }.joined()
            req += request.map { "Request: \($0)\n" } ?? ""
            if let requestID { req += "Request id: \(requestID)\n" }
            body = "\(status) \(reason)\n\(message)\n\(req)-- Proxima \(proximaVersion)\n"
        }
        var out = allocator.buffer(capacity: body.utf8.count + 256)
        out.writeString("HTTP/1.1 \(status) \(reason)\r\n")
        out.writeString("Content-Type: \(style.contentType)\r\n")
        out.writeString("Content-Length: \(body.utf8.count)\r\n")
        out.writeStaticString("Cache-Control: no-store\r\n")
        if let via { out.writeString("Via: 1.1 \(via)\r\n") }
        if let requestID { out.writeString("X-Request-ID: \(requestID)\r\n") }
        for (name, value) in headers { out.writeString("\(name): \(value)\r\n") }
        if close { out.writeStaticString("Connection: close\r\n") }
        out.writeStaticString("\r\n")
        if !headRequest { out.writeString(body) }
        return out
    }

    /// A 1×1 transparent GIF (43 bytes), what blocked images are answered with.
    static let transparentGIF: [UInt8] = [
        0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        0xFF, 0xFF, 0xFF, 0x21, 0xF9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2C, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3B,
    ]

    /// A response with a given body (or none, for 204).
    static func fixed(
        status: Int, body: [UInt8], contentType: String?, close: Bool, headRequest: Bool, via: String?, allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        var out = allocator.buffer(capacity: body.count + 192)
        out.writeString("HTTP/1.1 \(status) \(status == 204 ? "No Content" : reasonPhrase(status))\r\n")
        if let contentType { out.writeString("Content-Type: \(contentType)\r\n") }
        if status != 204 { out.writeString("Content-Length: \(body.count)\r\n") }
        out.writeStaticString("Cache-Control: no-store\r\n")
        if let via { out.writeString("Via: 1.1 \(via)\r\n") }
        if close { out.writeStaticString("Connection: close\r\n") }
        out.writeStaticString("\r\n")
        if !headRequest { out.writeBytes(body) }
        return out
    }

    static func escapeHTML(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s {
            switch c {
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "&": out += "&amp;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }
}

/// Request ids for logs and error pages: a random per-process prefix and a counter, unique
/// without coordination and cheap enough to make only when one is needed.
enum RequestIDs {
    /// 16 random hex digits and a dash, per process.
    private static let prefix: [UInt8] = {
        var r = UInt64.random(in: 0...UInt64.max)
        var digits = [UInt8](repeating: 0, count: 17)
        for i in (0..<16).reversed() {
            digits[i] = hexDigits[Int(r & 0xF)]
            r >>= 4
        }
        digits[16] = UInt8(ascii: "-")
        return digits
    }()
    private static let hexDigits = Array("0123456789abcdef".utf8)
    private static let counter = ManagedAtomic<UInt64>(0)

    /// `prefix-counter`, the counter in at least 12 hex digits; one allocation (reverse
    /// requests each get one).
    static func next() -> String {
        let n = counter.wrappingIncrementThenLoad(ordering: .relaxed)
        let width = max(12, (64 - n.leadingZeroBitCount + 3) / 4)
        return String(unsafeUninitializedCapacity: 17 + width) { buffer in
            for i in 0..<17 { buffer[i] = prefix[i] }
            var v = n
            for i in (0..<width).reversed() {
                buffer[17 + i] = hexDigits[Int(v & 0xF)]
                v >>= 4
            }
            return 17 + width
        }
    }

    /// A client's id is kept when it is 1-128 visible ASCII characters without quotes or
    /// backslashes (it ends up in logs, headers and pages).
    static func acceptable(_ id: String) -> Bool {
        let u = id.utf8
        return !u.isEmpty && u.count <= 128 && u.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }
    }
}
