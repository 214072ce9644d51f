/// The destination of a forward-proxy request: from an absolute-form URI (`http://host:port/path`)
/// or, for CONNECT, an authority-form target (`host:port`). RFC 9112 section 3.2.
public struct RequestTarget: Sendable, Equatable {
    public let scheme: String
    /// Lowercased host name or IP literal, without brackets.
    public let host: String
    public let port: Int
    /// Origin-form path and query to send upstream ("/" when the URI had none).
    public let pathAndQuery: String
    /// Whether the URI named the port explicitly.
    public let explicitPort: Bool
    /// `host` for the Host field and logs: IPv6 literals in brackets, the port only when not default.
    public let authority: String
    /// `host:port` always (IPv6 in brackets): the upstream pool's key, and how errors name it.
    /// Built once here: every request needs it at least twice.
    public let hostPort: String

    public init(scheme: String, host: String, port: Int, pathAndQuery: String, explicitPort: Bool) {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.pathAndQuery = pathAndQuery
        self.explicitPort = explicitPort
        let bracketedHost = host.utf8.contains(UInt8(ascii: ":")) ? "[" + host + "]" : host
        hostPort = bracketedHost + ":" + String(port)
        let defaultPort = scheme == "https" ? 443 : 80
        authority = port == defaultPort && !explicitPort ? bracketedHost : hostPort
    }

    /// The same server with another path (no strings rebuilt: a reverse proxy's targets are
    /// made once per server).
    public func with(pathAndQuery: String) -> RequestTarget {
        RequestTarget(scheme: scheme, host: host, port: port, pathAndQuery: pathAndQuery, explicitPort: explicitPort, authority: authority, hostPort: hostPort)
    }

    init(scheme: String, host: String, port: Int, pathAndQuery: String, explicitPort: Bool, authority: String, hostPort: String) {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.pathAndQuery = pathAndQuery
        self.explicitPort = explicitPort
        self.authority = authority
        self.hostPort = hostPort
    }

    public enum Failure: Error, Equatable, Sendable {
        case notAbsolute
        case unsupportedScheme(String)
        case invalid(String)
    }

    /// Parses `scheme://authority[/path][?query]`. Works on the UTF-8 bytes: String indexing
    /// per character is several times slower and this runs for every request.
    public static func parseAbsolute(_ target: String) throws(Failure) -> RequestTarget {
        var target = target
        let result: Result<RequestTarget, Failure> = target.withUTF8 { parseAbsoluteBytes($0) }
        return try result.get()
    }

    static func parseAbsoluteBytes(_ b: UnsafeBufferPointer<UInt8>) -> Result<RequestTarget, Failure> {
        var i = 0
        while i < b.count, b[i] != UInt8(ascii: ":") {
            guard isSchemeByte(b[i]) else { return .failure(i == 0 || b[i] == UInt8(ascii: "/") ? .notAbsolute : .invalid("bad URI scheme")) }
            i += 1
        }
        guard i > 0, i + 2 < b.count, b[i + 1] == UInt8(ascii: "/"), b[i + 2] == UInt8(ascii: "/") else {
            return .failure(.notAbsolute)
        }
        let scheme = lowercasedASCII(b, 0..<i)
        let defaultPort: Int
        switch scheme {
        case "http": defaultPort = 80
        case "https": defaultPort = 443
        default: return .failure(.unsupportedScheme(scheme))
        }
        let authorityStart = i + 3
        var authorityEnd = authorityStart
        while authorityEnd < b.count, b[authorityEnd] != UInt8(ascii: "/"), b[authorityEnd] != UInt8(ascii: "?") { authorityEnd += 1 }
        var path: String
        if authorityEnd == b.count {
            path = "/"
        } else {
            if b[authorityEnd...].contains(UInt8(ascii: "#")) {
                return .failure(.invalid("a fragment (#) is not allowed in a request target"))
            }
            path = String(decoding: UnsafeBufferPointer(rebasing: b[authorityEnd...]), as: UTF8.self)
            if b[authorityEnd] == UInt8(ascii: "?") { path = "/" + path }
        }
        // The usual authority, a lowercase name or IPv4 address with an optional port, is read
        // from the bytes; anything else (IPv6 literals, upper case, odd characters) takes the
        // general path.
        if let (host, port, explicit) = simpleAuthority(b, authorityStart..<authorityEnd, defaultPort: defaultPort) {
            return .success(RequestTarget(scheme: scheme, host: host, port: port, pathAndQuery: path, explicitPort: explicit))
        }
        let authority = Substring(String(decoding: UnsafeBufferPointer(rebasing: b[authorityStart..<authorityEnd]), as: UTF8.self))
        do {
            let (host, port, explicit) = try parseAuthority(authority, defaultPort: defaultPort)
            return .success(RequestTarget(scheme: scheme, host: host, port: port, pathAndQuery: path, explicitPort: explicit))
        } catch {
            return .failure(error)
        }
    }

    /// `name[:port]` where the name is lowercase letters, digits, '-' and '.'; nil otherwise.
    static func simpleAuthority(_ b: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, defaultPort: Int) -> (String, Int, Bool)? {
        var i = range.lowerBound
        while i < range.upperBound {
            let c = b[i]
            if (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "-") || c == UInt8(ascii: ".") {
                i += 1
            } else {
                break
            }
        }
        let hostEnd = i
        guard hostEnd > range.lowerBound, hostEnd - range.lowerBound <= 255 else { return nil }
        var port = defaultPort
        var explicit = false
        if i < range.upperBound {
            guard b[i] == UInt8(ascii: ":") else { return nil }
            i += 1
            let digitsStart = i
            var n = 0
            while i < range.upperBound {
                let d = b[i]
                guard d >= 0x30, d <= 0x39, i - digitsStart < 5 else { return nil }
                n = n * 10 + Int(d - 0x30)
                i += 1
            }
            if digitsStart < range.upperBound {
                guard n >= 1, n <= 65535 else { return nil }
                port = n
                explicit = true
            }
        }
        return (String(decoding: UnsafeBufferPointer(rebasing: b[range.lowerBound..<hostEnd]), as: UTF8.self), port, explicit)
    }

    static func lowercasedASCII(_ b: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> String {
        String(unsafeUninitializedCapacity: range.count) { out in
            for (k, i) in range.enumerated() {
                let c = b[i]
                out[k] = c >= 0x41 && c <= 0x5A ? c | 0x20 : c
            }
            return range.count
        }
    }

    /// Parses a CONNECT target: `host:port`, the port required.
    public static func parseAuthorityForm(_ target: String) throws(Failure) -> RequestTarget {
        let (host, port, explicit) = try parseAuthority(Substring(target), defaultPort: nil)
        guard explicit else { throw .invalid("a CONNECT target needs a port") }
        return RequestTarget(scheme: "tcp", host: host, port: port, pathAndQuery: "", explicitPort: true)
    }

    static func parseAuthority(_ authority: Substring, defaultPort: Int?) throws(Failure) -> (String, Int, Bool) {
        if authority.contains("@") { throw .invalid("user information in the URI is not allowed") }
        var hostPart: Substring
        var portPart: Substring?
        if authority.first == "[" {
            guard let close = authority.firstIndex(of: "]") else { throw .invalid("unterminated IPv6 literal") }
            hostPart = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.first == ":" else { throw .invalid("junk after an IPv6 literal") }
                portPart = after.dropFirst()
            }
            guard !hostPart.isEmpty, hostPart.utf8.allSatisfy({ isHexDigit($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") }) else {
                throw .invalid("bad IPv6 literal")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            portPart = authority[authority.index(after: colon)...]
        } else {
            hostPart = authority
        }
        guard !hostPart.isEmpty, hostPart.utf8.count <= 255 else { throw .invalid("empty or overlong host") }
        if authority.first != "[" {
            guard hostPart.utf8.allSatisfy({ isRegNameByte($0) }) else { throw .invalid("the host holds characters that are not allowed") }
        }
        var port = defaultPort ?? 0
        var explicit = false
        if let p = portPart {
            if p.isEmpty, let d = defaultPort {
                port = d
            } else {
                guard p.utf8.count <= 5, p.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(p), n >= 1, n <= 65535 else {
                    throw .invalid("bad port")
                }
                port = n
                explicit = true
            }
        }
        let host = hostPart.utf8.contains(where: { $0 >= 0x41 && $0 <= 0x5A }) ? hostPart.lowercased() : String(hostPart)
        return (host, port, explicit)
    }

    static func isSchemeByte(_ b: UInt8) -> Bool {
        (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39) || b == 0x2B || b == 0x2D || b == 0x2E
    }

    static func isHexDigit(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66) || (b >= 0x41 && b <= 0x46)
    }

    /// reg-name characters (unreserved, pct-encoded, sub-delims) of RFC 3986.
    static func isRegNameByte(_ b: UInt8) -> Bool {
        if (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39) { return true }
        switch b {
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "%"),
            UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("),
            UInt8(ascii: ")"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"),
            UInt8(ascii: "="):
            return true
        default: return false
        }
    }
}
