/// Where a request to a reverse listener goes: routes matched by host, path and method, in
/// order, first match wins (as Envoy's and Traefik's route lists; put specific routes first).

/// A regular expression on paths (Swift Regex syntax), matched against the whole path.
public struct PathPattern: Sendable, Equatable {
    public let source: String
    nonisolated(unsafe) let regex: Regex<AnyRegexOutput>

    public init(_ source: String) throws {
        self.source = source
        self.regex = try Regex(source)
    }

    public static func == (a: PathPattern, b: PathPattern) -> Bool { a.source == b.source }
}

public struct Route: Sendable, Equatable {
    public enum PathMatch: Sendable, Equatable {
        case any
        /// The path starts with this (`/api/` matches `/api/x`, not `/apix`; `/api` matches both
        /// `/api` and `/api/x` but not `/apix`: a prefix ends at a segment boundary).
        case prefix(String)
        case exact(String)
        case regex(PathPattern)
    }

    public enum Action: Sendable, Equatable {
        /// Proxy to the named upstream group.
        case upstream(String)
        /// `Location: to`; when `to` ends with `/` (`keepPath`), what follows the matched prefix
        /// (the whole path for other routes) and the query are appended: `/old/` → `https://new/`
        /// sends `/old/a?b` to `https://new/a?b`.
        case redirect(to: String, status: Int, keepPath: Bool)
        case respond(status: Int, body: String, contentType: String)
    }

    public enum HostHeader: String, Sendable, Equatable, CaseIterable {
        /// The client's `Host` goes to the back-end (HAProxy's default; what most apps expect).
        case keep
        /// The back-end server's `host:port` (nginx's default `proxy_set_header Host $proxy_host`).
        case upstream
    }

    public var name: String
    /// Lowercase host names, `*.example.com` for any subdomain; empty: any host.
    public var hosts: [String] = []
    public var path: PathMatch = .any
    public var methods: Set<String>?
    /// Request fields that must be present (pattern nil) or match (searched, as access rules'
    /// `headers`; anchor with ^ and $).
    public var headers: [HeaderMatch] = []
    public var action: Action
    /// With a prefix match: the prefix is replaced by this before the request goes on
    /// (`/api/` → `/`: strip). nil: the path is passed as it is.
    public var replacePrefix: String?
    public var hostHeader: HostHeader = .keep
    /// Longest silence from the back-end for this route, seconds (nil: `timeouts.upstream_response`).
    public var timeout: Double?
    /// Largest request body for this route, bytes (nil: `limits.request_body`).
    public var maxBody: Int?

    public struct HeaderMatch: Sendable, Equatable {
        /// Lowercase.
        public let name: String
        public let pattern: PathPattern?
        public init(name: String, pattern: PathPattern? = nil) {
            self.name = name.lowercased()
            self.pattern = pattern
        }
    }

    public init(name: String, action: Action) {
        self.name = name
        self.action = action
    }

    /// `header` gives a request field's first value by lowercase name.
    public func matches(host: String, path requestPath: Substring, method: String, header: (String) -> String? = { _ in nil }) -> Bool {
        if let methods, !methods.contains(method) { return false }
        for h in headers {
            guard let value = header(h.name) else { return false }
            if let p = h.pattern, (try? p.regex.firstMatch(in: value)) == nil { return false }
        }
        if !hosts.isEmpty, !hosts.contains(where: { Self.hostMatches($0, host) }) { return false }
        switch path {
        case .any: return true
        case .exact(let p): return requestPath == p
        case .prefix(let p): return Self.prefixMatches(p, requestPath)
        case .regex(let r): return (try? r.regex.wholeMatch(in: requestPath)) != nil
        }
    }

    static func hostMatches(_ pattern: String, _ host: String) -> Bool {
        if pattern.hasPrefix("*.") { return host.utf8.count > pattern.utf8.count - 1 && host.hasSuffix(pattern.dropFirst()) }
        return pattern == host
    }

    static func prefixMatches(_ prefix: String, _ path: Substring) -> Bool {
        guard path.hasPrefix(prefix) else { return false }
        if prefix.hasSuffix("/") || path.count == prefix.count { return true }
        let next = path[path.index(path.startIndex, offsetBy: prefix.count)]
        return next == "/" || next == "?"
    }

    /// Where a redirect route sends this request.
    public func location(_ pathAndQuery: String) -> String? {
        guard case .redirect(let to, _, let keepPath) = action else { return nil }
        guard keepPath else { return to }
        var rest = Substring(pathAndQuery)
        if case .prefix(let prefix) = path, rest.hasPrefix(prefix) { rest = rest.dropFirst(prefix.count) }
        while rest.hasPrefix("/") { rest = rest.dropFirst() }
        return to + rest
    }

    /// The path and query the back-end gets.
    public func rewrite(_ pathAndQuery: String) -> String {
        guard let replacement = replacePrefix, case .prefix(let prefix) = path, pathAndQuery.hasPrefix(prefix) else { return pathAndQuery }
        var rest = pathAndQuery.dropFirst(prefix.count)
        if replacement.hasSuffix("/"), rest.hasPrefix("/") { rest = rest.dropFirst() }
        let result = replacement + rest
        return result.hasPrefix("/") ? result : "/" + result
    }
}

public struct RouteTable: Sendable, Equatable {
    public let routes: [Route]

    public init(_ routes: [Route]) { self.routes = routes }

    /// `host` without port, lowercase; `pathAndQuery` as received.
    public func route(host: String, pathAndQuery: String, method: String, header: (String) -> String? = { _ in nil }) -> Route? {
        let path = pathAndQuery.prefix { $0 != "?" }
        return routes.first { $0.matches(host: host, path: path, method: method, header: header) }
    }
}
