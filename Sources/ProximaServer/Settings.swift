import NIOCore
import NIOPosix
import ProximaAuth
import ProximaBalance
import ProximaConfig
import ProximaHTTP1
import ProximaPolicy
import ProximaTelemetry

public let proximaVersion = "0.1.0"

/// An immutable snapshot of what a connection needs from the configuration, computed once per
/// (re)load. A connection keeps the snapshot it was accepted with; a reload only affects new
/// connections.
final class RuntimeSettings: Sendable {
    let headLimits: HeadLimits
    /// Upstream response heads: the same size limit, no request-line limit.
    let responseHeadLimits: HeadLimits
    let maxConnections: Int
    /// The `Via` received-by text (`host (proxima/0.1.0)`), or nil when Via is off.
    let via: String?
    let viaName: String
    let policy: AccessPolicy
    let connectPorts: Set<Int>
    let forwardedFor: ForwardedForMode
    let clientHeaderTimeout: TimeAmount
    let idleTimeout: TimeAmount
    let connectTimeout: TimeAmount
    let responseTimeout: TimeAmount
    let tunnelIdleTimeout: TimeAmount
    let maxIdlePerHost: Int
    let poolIdleTimeout: TimeAmount
    /// Unprocessed client bytes held before reading pauses: a whole head plus some body.
    let maxBufferedInbound: Int
    let accessLog: AccessLogWriter
    /// Only the combined and JSON formats show User-Agent and Referer; Squid's does not, so
    /// those fields are not copied out of each request unless a sink needs them.
    let logsAgentAndReferer: Bool
    /// Whether a log line shows the request id (JSON, or a template naming it): only then is one
    /// made for every request; error pages always get one.
    let logsRequestID: Bool
    /// Local sockets requests must not be forwarded to (the admin API).
    let protectedEndpoints: ProtectedEndpoints
    let auth: AuthConfig?
    let authCache: AuthCache
    let blocklists: BlockListSet
    /// The privacy profile by listener name (absent: off).
    let anonymizers: [String: Anonymizer]
    /// The profile access rules with `anonymize: true` turn on.
    let ruleAnonymizer: Anonymizer
    let suffixes: PublicSuffixList
    /// Whether pages get element hiding (on, and the lists have element-hiding rules).
    let elementHiding: Bool
    let requestHeaderRules: [HeaderRule]
    let responseHeaderRules: [HeaderRule]
    /// Routes' own rules by route name, applied after the global ones.
    let routeRequestRules: [String: [HeaderRule]]
    let routeResponseRules: [String: [HeaderRule]]
    let pages: PageTemplates
    let routes: RouteTable
    let trustedProxies: [CIDR]
    let addsForwarded: Bool
    /// `limits.request_body` in bytes (nil: none).
    let maxRequestBody: Int?
    let upstreams: UpstreamGroups
    /// Certificates of the TLS listeners, by listener name.
    let listenerTLS: [String: ListenerTLS]
    /// The HTTP cache (nil: off). Kept across reloads that do not change its size.
    let cache: HTTPCache?
    let purgeClients: [CIDR]
    /// Compression of answers (nil: off).
    let compression: CompressionConfig?
    let compressionCodings: [ContentCoding]
    /// Each listener's settings by name (a listener kept across a reload takes the new ones).
    let listeners: [String: ListenerConfig]

    /// Throws when a certificate, key or CA file cannot be used (a start fails, a reload is
    /// refused and the running configuration stays).
    init(
        config: ProximaConfiguration, accessLog: AccessLogWriter, protectedEndpoints: ProtectedEndpoints = ProtectedEndpoints(),
        previousUpstreams: UpstreamGroups? = nil, cache: HTTPCache? = nil
    ) throws {
        self.cache = cache
        self.purgeClients = config.cache.purgeClients
        self.compression = config.compression.enabled ? config.compression : nil
        self.compressionCodings = config.compression.codings.compactMap(ContentCoding.init(rawValue:))
        var tls: [String: ListenerTLS] = [:]
        for l in config.listeners {
            if let t = l.tls { tls[l.name] = try ListenerTLS(t, listener: l.name, http2: l.speaksHTTP2) }
        }
        self.listenerTLS = tls
        self.listeners = Dictionary(config.listeners.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.protectedEndpoints = protectedEndpoints
        self.auth = config.auth
        self.blocklists = BlockListSet(config.blocklists)
        var anonymizers: [String: Anonymizer] = [:]
        for l in config.listeners where l.anonymize ?? config.proxy.anonymize {
            anonymizers[l.name] = Anonymizer(userAgent: config.proxy.userAgent ?? Anonymizer.commonUserAgent)
        }
        self.anonymizers = anonymizers
        self.ruleAnonymizer = Anonymizer(userAgent: config.proxy.userAgent ?? Anonymizer.commonUserAgent)
        self.suffixes = config.filtering.suffixes
        self.elementHiding = config.filtering.elementHiding && !blocklists.cosmetics.isEmpty
        self.requestHeaderRules = config.headerRules.filter { $0.direction == .request }
        self.responseHeaderRules = config.headerRules.filter { $0.direction == .response }
        self.routeRequestRules = config.routeHeaderRules.mapValues { $0.filter { $0.direction == .request } }.filter { !$0.value.isEmpty }
        self.routeResponseRules = config.routeHeaderRules.mapValues { $0.filter { $0.direction == .response } }.filter { !$0.value.isEmpty }
        self.pages = config.pages
        self.routes = config.routes
        self.trustedProxies = config.proxy.trustedProxies
        self.addsForwarded = config.proxy.forwarded
        self.maxRequestBody = config.limits.requestBody?.bytes
        self.upstreams = try UpstreamGroups(config.upstreams, previous: previousUpstreams)
        self.authCache = AuthCache(ttlSeconds: Int((config.auth?.cacheTTL.nanoseconds ?? 0) / 1_000_000_000))
        self.logsRequestID = config.logging.access.contains {
            $0.template.map { $0.source.contains("request_id") } ?? ($0.format == .json)
        }
        self.headLimits = HeadLimits(maxRequestLine: config.limits.requestLine.bytes, maxHeadBytes: config.limits.headers.bytes)
        self.responseHeadLimits = HeadLimits(maxHeadBytes: config.limits.headers.bytes)
        self.maxConnections = config.limits.maxConnections
        self.viaName = config.proxy.viaName
        self.via = config.proxy.via ? "\(config.proxy.viaName) (proxima/\(proximaVersion))" : nil
        self.policy = config.access
        self.connectPorts = config.connect.allowedPorts
        self.forwardedFor = config.proxy.forwardedFor
        self.clientHeaderTimeout = .nanoseconds(config.timeouts.clientHeader.nanoseconds)
        self.idleTimeout = .nanoseconds(config.timeouts.idle.nanoseconds)
        self.connectTimeout = .nanoseconds(config.timeouts.upstreamConnect.nanoseconds)
        self.responseTimeout = .nanoseconds(config.timeouts.upstreamResponse.nanoseconds)
        self.tunnelIdleTimeout = .nanoseconds(config.timeouts.tunnelIdle.nanoseconds)
        self.maxIdlePerHost = config.upstreamPool.maxIdlePerHost
        self.poolIdleTimeout = .nanoseconds(config.upstreamPool.idleTimeout.nanoseconds)
        self.maxBufferedInbound = config.limits.headers.bytes + 64 * 1024
        self.accessLog = accessLog
        self.logsAgentAndReferer = config.logging.access.contains { $0.format != .squid }
    }
}

struct ProtectedEndpointError: Error {}

/// Addresses of this host's own non-proxy sockets. A socket bound to a wildcard address is
/// reachable on every local address, so those are all listed.
struct ProtectedEndpoints: Sendable {
    private var endpoints: [(ip: String, port: Int)] = []

    init() {}

    init(bound address: SocketAddress?) {
        guard let address, let port = address.port, let ip = address.ipAddress else { return }
        var ips: [String] = [ip]
        if ip == "0.0.0.0" || ip == "::" || ip.hasPrefix("127.") || ip == "::1" {
            ips += ["127.0.0.1", "::1", "::ffff:127.0.0.1"]
        }
        if ip == "0.0.0.0" || ip == "::" {
            ips += ((try? System.enumerateDevices()) ?? []).compactMap { $0.address?.ipAddress }
        }
        endpoints = ips.map { ($0, port) }
    }

    var isEmpty: Bool { endpoints.isEmpty }

    func covers(_ a: SocketAddress) -> Bool {
        guard let port = a.port, let ip = a.ipAddress else { return false }
        // The whole 127/8 reaches a socket bound to 127.0.0.1 or a wildcard.
        return endpoints.contains { $0.port == port && ($0.ip == ip || (ip.hasPrefix("127.") && $0.ip == "127.0.0.1")) }
    }
}
