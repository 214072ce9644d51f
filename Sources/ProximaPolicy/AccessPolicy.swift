/// A destination-domain condition: `example.com` matches that host only, `.example.com` the
/// domain and every subdomain (as Squid's dstdomain), `*.example.com` subdomains only.
public struct DomainPattern: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable { case exact, domainAndSubdomains, subdomainsOnly }
    public var kind: Kind
    public var name: String

    public init?(_ text: String) {
        let t = text.lowercased()
        if t.hasPrefix("*.") {
            kind = .subdomainsOnly
            name = String(t.dropFirst(2))
        } else if t.hasPrefix(".") {
            kind = .domainAndSubdomains
            name = String(t.dropFirst())
        } else {
            kind = .exact
            name = t
        }
        guard !name.isEmpty, !name.contains("*"), !name.contains("/"), !name.contains(" ") else { return nil }
    }

    public func matches(_ host: String) -> Bool {
        let h = host.hasSuffix(".") ? String(host.dropLast()) : host
        switch kind {
        case .exact: return h == name
        case .domainAndSubdomains: return h == name || h.hasSuffix("." + name)
        case .subdomainsOnly: return h.hasSuffix("." + name)
        }
    }

    public var description: String {
        switch kind {
        case .exact: return name
        case .domainAndSubdomains: return "." + name
        case .subdomainsOnly: return "*." + name
        }
    }
}

public enum AccessAction: String, Sendable, Equatable, CaseIterable {
    case allow
    case deny
    /// When the rule's conditions match and the request carries no valid credentials, answer
    /// 407 (proxy) asking for them; with valid credentials the rule is passed over.
    case authenticate
}

/// One access rule. Every condition given must match (AND); a missing condition matches all.
public struct AccessRule: Sendable, Equatable {
    public var name: String
    public var action: AccessAction
    public var clients: [CIDR]?
    public var methods: Set<String>?
    public var ports: Set<Int>?
    public var domains: [DomainPattern]?
    /// URL schemes (`http`); a CONNECT request has none and never matches.
    public var schemes: Set<String>?
    /// The absolute URL (as the client sent it) starts with one of these.
    public var urlPrefixes: [String]?
    /// The absolute URL (or `host:port` for CONNECT) matches one of these.
    public var urlPatterns: [URLPattern]?
    /// Each named header is present (and matches its pattern, when given).
    public var headers: [HeaderCondition]?
    /// The request arrives inside this weekly window.
    public var time: TimeWindow?
    /// The destination's address (an IP literal, or what its name resolves to) is in one of
    /// these networks (Squid's `dst`).
    public var destinations: [CIDR]?
    /// Authenticated user names (`*`: any authenticated user).
    public var users: Set<String>?
    /// The authenticated user belongs to one of these groups.
    public var groups: Set<String>?
    /// The privacy profile for requests this rule allows (overrides the listener's); nil: the
    /// listener decides.
    public var anonymize: Bool?

    /// Whether the rule can only be decided once the user is known.
    public var needsIdentity: Bool { users != nil || groups != nil || action == .authenticate }

    public init(name: String, action: AccessAction, clients: [CIDR]? = nil, methods: Set<String>? = nil,
                ports: Set<Int>? = nil, domains: [DomainPattern]? = nil, schemes: Set<String>? = nil,
                urlPrefixes: [String]? = nil, urlPatterns: [URLPattern]? = nil, headers: [HeaderCondition]? = nil,
                time: TimeWindow? = nil, users: Set<String>? = nil, groups: Set<String>? = nil, destinations: [CIDR]? = nil) {
        self.destinations = destinations
        self.users = users
        self.groups = groups
        self.schemes = schemes
        self.urlPrefixes = urlPrefixes
        self.urlPatterns = urlPatterns
        self.headers = headers
        self.time = time
        self.name = name
        self.action = action
        self.clients = clients
        self.methods = methods
        self.ports = ports
        self.domains = domains
    }

    /// `ignoringIdentity`: whether everything but the user and group conditions matches (to know
    /// whether asking for a login would help).
    public func matches(_ request: AccessRequest, headers: some HeaderLookup = NoHeaders(), ignoringIdentity: Bool = false) -> Bool {
        if let clients, !clients.contains(where: { $0.contains(request.client) }) { return false }
        if let methods, !methods.contains(request.method) { return false }
        if let ports, !ports.contains(request.port) { return false }
        if let domains, !domains.contains(where: { $0.matches(request.host) }) { return false }
        if let schemes {
            guard let scheme = request.scheme, schemes.contains(scheme) else { return false }
        }
        if let urlPrefixes, !urlPrefixes.contains(where: { request.url.hasPrefix($0) }) { return false }
        if let urlPatterns, !urlPatterns.contains(where: { $0.matches(request.url) }) { return false }
        if let conditions = self.headers {
            for c in conditions {
                guard let value = headers.firstValue(c.name), c.pattern?.matches(value) ?? true else { return false }
            }
        }
        if let time, !time.contains(unixSeconds: request.time) { return false }
        if let destinations {
            guard request.destinations.contains(where: { d in destinations.contains { $0.contains(d) } }) else { return false }
        }
        if ignoringIdentity { return true }
        if let users {
            guard let user = request.user, users.contains("*") || users.contains(user) else { return false }
        }
        if let groups {
            guard request.user != nil, !groups.isDisjoint(with: request.groups) else { return false }
        }
        return true
    }
}

/// What the policy sees of a request.
public struct AccessRequest: Sendable {
    public var client: IPAddress
    public var method: String
    public var host: String
    public var port: Int
    /// The absolute URL, or `host:port` for CONNECT.
    public var url: String
    /// `http`; nil for CONNECT.
    public var scheme: String?
    /// Arrival time, Unix seconds (for time windows).
    public var time: Int
    /// The destination's addresses (filled only when a rule has `destinations`).
    public var destinations: [IPAddress] = []
    /// The user whose credentials were verified, if any, and their groups.
    public var user: String?
    public var groups: Set<String> = []

    public init(client: IPAddress, method: String, host: String, port: Int, url: String = "", scheme: String? = nil, time: Int = 0) {
        self.client = client
        self.method = method
        self.host = host
        self.port = port
        self.url = url
        self.scheme = scheme
        self.time = time
    }
}

/// Request header values for header conditions, looked up only by rules that have them.
public protocol HeaderLookup {
    /// The first value of a field, by lowercase name.
    func firstValue(_ lowercasedName: String) -> String?
}

public struct NoHeaders: HeaderLookup {
    public init() {}
    public func firstValue(_ lowercasedName: String) -> String? { nil }
}

extension Dictionary: HeaderLookup where Key == String, Value == String {
    public func firstValue(_ lowercasedName: String) -> String? { self[lowercasedName] }
}

public struct AccessDecision: Sendable, Equatable {
    public var allowed: Bool
    /// The rule that decided, or nil when no rule matched (the implicit final deny).
    public var rule: String?
    /// The rule needs to know the user and the request carries no valid credentials: 407.
    public var challenge = false
    /// The deciding rule's privacy profile setting (nil: the listener's).
    public var anonymize: Bool?

    public init(allowed: Bool, rule: String?, challenge: Bool = false) {
        self.allowed = allowed
        self.rule = rule
        self.challenge = challenge
    }

    public var explanation: String {
        if challenge, let rule { return "rule '\(rule)' needs you to log in" }
        if let rule { return allowed ? "allowed by rule '\(rule)'" : "denied by rule '\(rule)'" }
        return "no access rule allows this request (the last rule is an implicit deny)"
    }
}

/// Ordered rules, first match wins, deny when nothing matches (Squid's `http_access`).
public struct AccessPolicy: Sendable, Equatable {
    public let rules: [AccessRule]

    public init(rules: [AccessRule]) {
        self.rules = rules
        self.usesIdentity = rules.contains { $0.needsIdentity }
        self.usesDestinations = rules.contains { $0.destinations != nil }
        self.usesURL = rules.contains { $0.urlPrefixes != nil || $0.urlPatterns != nil }
    }

    /// Whether any rule looks at the URL (a reverse request's absolute URL is built only then).
    public let usesURL: Bool

    /// Whether any rule looks at destination addresses: only then are names resolved first.
    public let usesDestinations: Bool

    /// Whether any rule needs the user: only then are credentials looked at.
    public let usesIdentity: Bool

    public func evaluate(_ request: AccessRequest, headers: some HeaderLookup = NoHeaders()) -> AccessDecision {
        // By index: `for rule in rules` copies every rule it looks at.
        for i in rules.indices {
            if rules[i].needsIdentity, request.user == nil {
                // Unknown user: if everything else matches, this rule cannot be decided without
                // credentials, so ask for them (Squid's behaviour with proxy_auth ACLs).
                if rules[i].matches(request, headers: headers, ignoringIdentity: true) {
                    return AccessDecision(allowed: false, rule: rules[i].name, challenge: true)
                }
                continue
            }
            guard rules[i].matches(request, headers: headers) else { continue }
            if rules[i].action == .authenticate { continue }  // the user is known: satisfied
            var decision = AccessDecision(allowed: rules[i].action == .allow, rule: rules[i].name)
            decision.anonymize = rules[i].anonymize
            return decision
        }
        return AccessDecision(allowed: false, rule: nil)
    }

    /// The built-in default: loopback and private networks may use the proxy, nobody else.
    public static let localNetworksOnly = AccessPolicy(rules: [
        AccessRule(name: "local-networks", action: .allow, clients: CIDR.localAndPrivate)
    ])
}
