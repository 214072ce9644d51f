import ProximaAuth
import ProximaBalance
import ProximaHTTP1
import ProximaPolicy
import ProximaTelemetry

/// The whole configuration. Every field has a safe default, so an empty file (or none) is a
/// forward proxy on 127.0.0.1:3128 for loopback and private-network clients only.
public struct ProximaConfiguration: Sendable, Equatable {
    /// Named lists, referred to as `@name` in access rules (already expanded into the rules).
    public var lists: [String: NamedList] = [:]
    public var listeners: [ListenerConfig] = [ListenerConfig(name: "forward", role: .forward, address: ListenAddress(host: "127.0.0.1", port: 3128))]
    public var access: AccessPolicy = .localNetworksOnly
    public var connect = ConnectConfig()
    public var proxy = ProxyHeadersConfig()
    public var limits = LimitsConfig()
    public var timeouts = TimeoutsConfig()
    public var upstreamPool = UpstreamPoolConfig()
    /// The HTTP cache (off unless `cache.memory` is set).
    public var cache = CacheConfig()
    public var compression = CompressionConfig()
    public var dns = DNSConfig()
    public var logging = LoggingConfig()
    /// The admin listener (health, status, metrics, reload); nil: none.
    public var admin: AdminConfig?
    /// Proxy authentication (Basic, htpasswd users); needed by rules with users, groups or
    /// action authenticate.
    public var auth: AuthConfig?
    /// Block lists, checked after the access rules allowed a request.
    public var blocklists: [BlockList] = []
    /// Back-end groups for reverse listeners, by name.
    public var upstreams: [UpstreamGroupConfig] = []
    /// Where requests to reverse listeners go, first match wins.
    public var routes = RouteTable([])
    /// How block lists are applied beyond blocking requests.
    public var filtering = FilteringConfig()
    /// Header rules for requests to origins and responses to clients, in order.
    public var headerRules: [HeaderRule] = []
    /// Each route's own header rules (`routes[].headers`), by route name, applied after
    /// `headerRules`.
    public var routeHeaderRules: [String: [HeaderRule]] = [:]
    /// The proxy's own pages (errors, denials, blocks): built in, or templates from a directory.
    public var pages = PageTemplates()
    /// Event-loop threads (nginx's worker_processes). nil: one per CPU this process may run on
    /// (its affinity mask, so `taskset -c 0 proxima` runs one loop). Changing it needs a restart.
    public var workers: Int?

    public init() {}

    /// The built-in default (what `proxima` runs with no arguments).
    public static let builtInDefault = ProximaConfiguration()
}

/// Where a named list's entries come from.
public enum NamedList: Sendable, Equatable {
    case inline([String])
    /// One entry per line, `#` comments; re-read on reload.
    case file(String)
}

public enum ListenerRole: String, Sendable, Equatable, CaseIterable {
    case forward
    /// Looks like a web server: requests in origin form, sent where `routes` say.
    case reverse
}

/// A group of back-ends requests are balanced over.
public struct UpstreamGroupConfig: Sendable, Equatable {
    public var name: String
    public var servers: [Backend]
    public var algorithm: BalanceAlgorithm = .roundRobin
    /// How many other servers a request may be tried on when connecting fails.
    public var retries = 2
    public var outlier = OutlierPolicy()
    /// Active HTTP checks (nil: none; outlier detection still applies).
    public var activeCheck: ActiveCheckPolicy?
    /// TLS to every server of the group (nil: plain HTTP).
    public var tls: UpstreamTLSConfig?
    /// Requests that wait for a server under its `max_connections` (HAProxy's `maxqueue`);
    /// beyond it, or after `queueTimeout`, 503. 0: no queue.
    public var queueLimit = 0
    public var queueTimeout = 5.0

    public init(name: String, servers: [Backend]) {
        self.name = name
        self.servers = servers
    }
}

public struct ListenerConfig: Sendable, Equatable {
    public var name: String
    public var role: ListenerRole
    public var address: ListenAddress
    /// Overrides `proxy.anonymize` for this listener.
    public var anonymize: Bool?
    /// TLS termination (nil: plain TCP).
    public var tls: ListenerTLSConfig?
    /// Whether clients may speak HTTP/2 (ALPN `h2` over TLS, prior knowledge over plain TCP).
    /// Nil: on for reverse listeners, off for forward ones.
    public var http2: Bool?
    /// Answer every request with a permanent redirect to `https://` on this port (a plain
    /// listener in front of a TLS one, as nginx's `return 301 https://$host$request_uri`).
    public var redirectHTTPS: Int?

    public var speaksHTTP2: Bool { http2 ?? (role == .reverse) }

    public init(name: String, role: ListenerRole, address: ListenAddress) {
        self.name = name
        self.role = role
        self.address = address
    }
}

public enum TLSMinimumVersion: String, Sendable, Equatable, CaseIterable {
    case tls12 = "1.2"
    case tls13 = "1.3"
}

/// One certificate chain and its key, PEM files; `names` overrides the names the certificate
/// itself lists (subject alternative names) for SNI selection.
public struct CertificateConfig: Sendable, Equatable {
    public var certificate: String
    public var key: String
    public var names: [String]?
    public init(certificate: String, key: String, names: [String]? = nil) {
        self.certificate = certificate
        self.key = key
        self.names = names
    }
}

public struct ListenerTLSConfig: Sendable, Equatable {
    /// The first is the default, served when the client names no host or an unknown one.
    public var certificates: [CertificateConfig]
    public var minVersion: TLSMinimumVersion = .tls12
    public init(certificates: [CertificateConfig]) { self.certificates = certificates }
}

/// TLS towards the servers of an upstream group (`https://` back-ends).
public struct UpstreamTLSConfig: Sendable, Equatable {
    /// PEM file of the certificate authorities to trust (nil: the system's).
    public var ca: String?
    /// The name sent in SNI and verified (nil: the server's host when it is a name).
    public var serverName: String?
    /// No verification at all: named so that nobody turns it on by accident.
    public var insecureSkipVerify = false
    public init() {}
}

public struct ConnectConfig: Sendable, Equatable {
    /// Ports CONNECT may reach (Squid's SSL_ports). Default: 443 only.
    public var allowedPorts: Set<Int> = [443]
    public init() {}
}

public struct ProxyHeadersConfig: Sendable, Equatable {
    /// Add a `Via` field both ways (RFC 9110 section 7.6.3). Loop detection uses `viaName`
    /// whether or not the field is added.
    public var via = true
    /// This proxy's pseudonym in `Via`; defaults to the host name, so that chained Proxima
    /// instances on different hosts do not mistake each other for a loop.
    public var viaName = defaultViaName()
    public var forwardedFor: ForwardedForMode = .add
    /// Clients whose `X-Forwarded-For` (and `Forwarded`) a reverse listener passes on (load
    /// balancers and CDNs in front of it); from anyone else those fields are replaced.
    public var trustedProxies: [CIDR] = []
    /// Add an RFC 7239 `Forwarded` field (`for`, `host`, `proto`) on reverse listeners.
    public var forwarded = false
    /// The privacy profile for every listener that does not say otherwise.
    public var anonymize = false
    /// The User-Agent sent when anonymizing (default: a widespread browser's).
    public var userAgent: String?
    public init() {}
}

public struct LimitsConfig: Sendable, Equatable {
    public var requestLine = ByteSize(bytes: 8 * 1024)
    public var headers = ByteSize(bytes: 64 * 1024)
    /// Open client connections per listener; beyond it new connections are closed at once.
    public var maxConnections = 10_000
    /// Largest request body (413 beyond); nil: no limit (a forward proxy carries uploads).
    public var requestBody: ByteSize?
    public init() {}
}

public struct TimeoutsConfig: Sendable, Equatable {
    /// From connection open (or the end of the previous response) to a complete request head.
    public var clientHeader = TimeSpan.seconds(30)
    /// Idle keep-alive time between requests on a client connection.
    public var idle = TimeSpan.seconds(60)
    public var upstreamConnect = TimeSpan.seconds(10)
    /// Longest wait for the next bytes of the upstream response (nginx's proxy_read_timeout).
    public var upstreamResponse = TimeSpan.seconds(60)
    /// A CONNECT tunnel with no bytes either way for this long is closed.
    public var tunnelIdle = TimeSpan.seconds(300)
    /// On SIGTERM/SIGINT, how long requests and tunnels in flight may take to finish.
    public var drain = TimeSpan.seconds(30)
    public init() {}
}

/// On-the-fly compression of answers (gzip, Brotli) for clients that accept it.
public struct CompressionConfig: Sendable, Equatable {
    public var enabled = false
    /// In order of preference; `br` and `gzip`.
    public var codings: [String] = ["br", "gzip"]
    /// Answers known to be shorter are sent as they are.
    public var minLength = ByteSize(bytes: 1024)
    public var gzipLevel = 6
    public var brotliLevel = 5
    public init() {}
}

public struct CacheConfig: Sendable, Equatable {
    /// Bytes of responses kept in memory; 0: no cache.
    public var memory = ByteSize(bytes: 0)
    /// Larger responses pass through without being stored.
    public var maxObject = ByteSize(bytes: 8 * 1024 * 1024)
    /// Heuristic freshness (no explicit lifetime, a Last-Modified): this fraction of the time
    /// since the last modification, at most `heuristicMax`.
    public var heuristicFraction = 0.1
    public var heuristicMax = TimeSpan.seconds(86_400)
    /// Lifetime of answers that state none (instead of the heuristic); nil: the heuristic.
    public var defaultTTL: TimeSpan?
    /// Clients whose `PURGE` requests remove a URL from the cache (others get 403).
    public var purgeClients: [CIDR] = [CIDR("127.0.0.0/8")!, CIDR("::1/128")!]
    /// The disk store (`cache.disk`); nil: memory only.
    public var disk: DiskCacheConfig?
    public var enabled: Bool { memory.bytes > 0 || disk != nil }
    public init() {}
}

public struct DiskCacheConfig: Sendable, Equatable {
    /// The directory of the store (created if missing; one running Proxima at a time).
    public var path: String
    /// Bytes of files kept; least recently used answers are deleted past it.
    public var size: ByteSize
    public init(path: String, size: ByteSize) {
        self.path = path
        self.size = size
    }
}

public struct UpstreamPoolConfig: Sendable, Equatable {
    /// Idle keep-alive connections kept per upstream host:port on each event loop.
    public var maxIdlePerHost = 256
    public var idleTimeout = TimeSpan.seconds(60)
    public init() {}
}

public struct DNSConfig: Sendable, Equatable {
    /// How long a successful lookup is reused (getaddrinfo does not report TTLs).
    public var cacheTTL = TimeSpan.seconds(60)
    /// How long a failed lookup is remembered.
    public var negativeTTL = TimeSpan.seconds(5)
    public var maxEntries = 10_000
    public init() {}
}

/// Log formats and destinations are the writer's own types (ProximaTelemetry).
public typealias AccessLogFormat = AccessLogLineFormat
public typealias AccessLogSink = LogDestination

public struct AccessLogConfig: Sendable, Equatable {
    public var sink: AccessLogSink
    public var format: AccessLogFormat
    /// A custom line (nginx's log_format); replaces `format` when set.
    public var template: LogTemplate?
    /// File sinks only: rotate by size.
    public var rotation: FileRotation?

    public init(sink: AccessLogSink, format: AccessLogFormat, template: LogTemplate? = nil, rotation: FileRotation? = nil) {
        self.sink = sink
        self.format = format
        self.template = template
        self.rotation = rotation
    }

    /// What the log writer is given.
    public var output: AccessLogOutput { AccessLogOutput(sink, format, template: template, rotation: rotation) }
}

/// The admin API's own listener. Never served on the proxy listeners.
public struct AdminConfig: Sendable, Equatable {
    public var address: ListenAddress
    /// Bearer token required on every admin request except /healthz and /readyz. Required when
    /// the address is not a loopback one.
    public var token: String?

    public init(address: ListenAddress, token: String? = nil) {
        self.address = address
        self.token = token
    }

    public var isLoopback: Bool {
        address.host == "localhost" || address.host == "::1" || address.host.hasPrefix("127.")
    }
}

public struct AuthConfig: Sendable, Equatable {
    /// Shown by browsers in the login prompt.
    public var realm = "Proxima"
    public var users: PasswordFile
    public var groups: GroupFile?
    /// How long verified credentials are remembered (bcrypt is slow on purpose).
    public var cacheTTL = TimeSpan.seconds(300)

    public init(users: PasswordFile, groups: GroupFile? = nil) {
        self.users = users
        self.groups = groups
    }
}

public enum LogLevel: String, Sendable, Equatable, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
}

/// How the server's own diagnostics are written on stderr.
public enum DiagnosticsFormat: String, Sendable, Equatable, CaseIterable {
    case text, json
}

public struct LoggingConfig: Sendable, Equatable {
    public var access: [AccessLogConfig] = [AccessLogConfig(sink: .stdout, format: .squid)]
    public var level: LogLevel = .info
    public var diagnostics: DiagnosticsFormat = .text
    public init() {}
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

func defaultViaName() -> String {
    var buf = [CChar](repeating: 0, count: 256)
    if gethostname(&buf, buf.count) == 0 {
        let name = String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if !name.isEmpty, name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ",") }) { return name }
    }
    return "proxima"
}

public struct FilteringConfig: Sendable, Equatable {
    /// Element-hiding rules of the block lists applied to HTML that passes in the clear.
    public var elementHiding = true
    /// Where the Public Suffix List is read from (for telling third-party requests apart);
    /// nil: not used, the last two labels of a name are its site.
    public var publicSuffixList: String? = PublicSuffixList.systemPath
    /// The list itself, loaded with the configuration.
    public var suffixes = PublicSuffixList()

    public init() {}

    /// The settings, not the list read from the file (loaded only when something needs it).
    public static func == (a: FilteringConfig, b: FilteringConfig) -> Bool {
        a.elementHiding == b.elementHiding && a.publicSuffixList == b.publicSuffixList
    }
}

/// Page templates from a directory, by name (`403.html`, `default.json`, ...); see
/// `PageTemplate` for the placeholders.
public struct PageTemplates: Sendable, Equatable {
    public var directory: String?
    public var templates: [String: PageTemplate] = [:]

    public init() {}

    /// The template for a status and kind (`html`, `json`, `txt`): the status's own, else the
    /// kind's default.
    public func template(status: Int, kind: String) -> PageTemplate? {
        templates["\(status).\(kind)"] ?? templates["default.\(kind)"]
    }
}

/// A page with `$name` or `${name}` placeholders, filled in with values escaped for the page's
/// kind (HTML, JSON string content, or plain text).
public struct PageTemplate: Sendable, Equatable {
    public static let fields: Set<String> = [
        "status", "reason", "message", "request", "request_id", "rule", "list", "client", "user", "detail", "proxy",
    ]

    enum Piece: Sendable, Equatable {
        case text(String)
        case field(String)
    }

    let pieces: [Piece]
    public let source: String

    public struct UnknownField: Error, Equatable {
        public let name: String
    }

    public init(_ source: String) throws(UnknownField) {
        self.source = source
        var pieces: [Piece] = []
        var text = ""
        var rest = Substring(source)
        while let dollar = rest.firstIndex(of: "$") {
            text += rest[..<dollar]
            var after = rest[rest.index(after: dollar)...]
            var name: Substring
            if after.hasPrefix("{"), let close = after.firstIndex(of: "}") {
                name = after[after.index(after: after.startIndex)..<close]
                after = after[after.index(after: close)...]
            } else {
                name = after.prefix { $0.isLetter || $0 == "_" }
                after = after[name.endIndex...]
            }
            if name.isEmpty {
                text += "$"
            } else {
                guard Self.fields.contains(String(name)) else { throw UnknownField(name: String(name)) }
                if !text.isEmpty { pieces.append(.text(text)) }
                text = ""
                pieces.append(.field(String(name)))
            }
            rest = after
        }
        text += rest
        if !text.isEmpty { pieces.append(.text(text)) }
        self.pieces = pieces
    }

    public func render(_ values: [String: String], escape: (String) -> String) -> String {
        var out = ""
        for piece in pieces {
            switch piece {
            case .text(let t): out += t
            case .field(let name): out += escape(values[name] ?? "")
            }
        }
        return out
    }

    public static func == (a: PageTemplate, b: PageTemplate) -> Bool { a.source == b.source }
}
