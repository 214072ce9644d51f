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

public enum AccessAction: String, Sendable, Equatable {
    case allow
    case deny
}

/// One access rule. Every condition given must match (AND); a missing condition matches all.
public struct AccessRule: Sendable, Equatable {
    public var name: String
    public var action: AccessAction
    public var clients: [CIDR]?
    public var methods: Set<String>?
    public var ports: Set<Int>?
    public var domains: [DomainPattern]?

    public init(name: String, action: AccessAction, clients: [CIDR]? = nil, methods: Set<String>? = nil,
                ports: Set<Int>? = nil, domains: [DomainPattern]? = nil) {
        self.name = name
        self.action = action
        self.clients = clients
        self.methods = methods
        self.ports = ports
        self.domains = domains
    }

    public func matches(_ request: AccessRequest) -> Bool {
        if let clients, !clients.contains(where: { $0.contains(request.client) }) { return false }
        if let methods, !methods.contains(request.method) { return false }
        if let ports, !ports.contains(request.port) { return false }
        if let domains, !domains.contains(where: { $0.matches(request.host) }) { return false }
        return true
    }
}

/// What the policy sees of a request.
public struct AccessRequest: Sendable {
    public var client: IPAddress
    public var method: String
    public var host: String
    public var port: Int

    public init(client: IPAddress, method: String, host: String, port: Int) {
        self.client = client
        self.method = method
        self.host = host
        self.port = port
    }
}

public struct AccessDecision: Sendable, Equatable {
    public var allowed: Bool
    /// The rule that decided, or nil when no rule matched (the implicit final deny).
    public var rule: String?

    public var explanation: String {
        if let rule { return allowed ? "allowed by rule '\(rule)'" : "denied by rule '\(rule)'" }
        return "no access rule allows this request (the last rule is an implicit deny)"
    }
}

/// Ordered rules, first match wins, deny when nothing matches (Squid's `http_access`).
public struct AccessPolicy: Sendable, Equatable {
    public var rules: [AccessRule]

    public init(rules: [AccessRule]) {
        self.rules = rules
    }

    public func evaluate(_ request: AccessRequest) -> AccessDecision {
        // By index: `for rule in rules` copies every rule it looks at.
        for i in rules.indices where rules[i].matches(request) {
            return AccessDecision(allowed: rules[i].action == .allow, rule: rules[i].name)
        }
        return AccessDecision(allowed: false, rule: nil)
    }

    /// The built-in default: loopback and private networks may use the proxy, nobody else.
    public static let localNetworksOnly = AccessPolicy(rules: [
        AccessRule(name: "local-networks", action: .allow, clients: CIDR.localAndPrivate)
    ])
}
