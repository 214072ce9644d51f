import ProximaAuth
import ProximaBalance
import ProximaHTTP1
import ProximaPolicy
import ProximaTelemetry
import Yams

/// One problem in a configuration file, with the key path and line it concerns.
public struct ConfigIssue: Error, Sendable, Equatable, CustomStringConvertible {
    public var path: String
    public var line: Int?
    public var message: String

    public init(path: String, line: Int?, message: String) {
        self.path = path
        self.line = line
        self.message = message
    }

    public var description: String {
        let place = path.isEmpty ? "" : "\(path): "
        if let line { return "\(place)\(message) (line \(line))" }
        return "\(place)\(message)"
    }
}

/// Every problem found in a file: loading reports them all, not just the first.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var issues: [ConfigIssue]
    public var description: String { issues.map(\.description).joined(separator: "\n") }
}

/// Reads YAML into a validated `ProximaConfiguration`.
///
/// It walks Yams' node tree rather than using Codable's decoder, because a decoder stops at the
/// first error and knows no line numbers, and because every unknown key must be an error.
public enum ConfigLoader {
    public static func load(yaml: String) -> Result<ProximaConfiguration, ConfigErrors> {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            return .failure(ConfigErrors(issues: [yamlIssue(error)]))
        } catch {
            return .failure(ConfigErrors(issues: [ConfigIssue(path: "", line: nil, message: "\(error)")]))
        }
        let reader = NodeReader()
        var config = ProximaConfiguration()
        if let root {
            reader.readRoot(root, into: &config)
        }
        reader.validate(config)
        // The suffix list tells sites apart: third-party requests for block lists, third-party
        // cookies for the privacy profile.
        let anonymizes = config.proxy.anonymize || config.listeners.contains { $0.anonymize == true }
            || config.access.rules.contains { $0.anonymize == true }
        if !config.blocklists.isEmpty || anonymizes, let path = config.filtering.publicSuffixList {
            if let text = readTextFile(path) { config.filtering.suffixes = PublicSuffixList(text: text) } else { config.filtering.publicSuffixList = nil }
        }
        if reader.issues.isEmpty { return .success(config) }
        return .failure(ConfigErrors(issues: reader.issues))
    }

    public static func load(path: String) -> Result<ProximaConfiguration, ConfigErrors> {
        guard let text = readTextFile(path) else {
            return .failure(ConfigErrors(issues: [ConfigIssue(path: "", line: nil, message: "cannot read configuration file \(path)")]))
        }
        return load(yaml: text)
    }

    static func yamlIssue(_ error: YamlError) -> ConfigIssue {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
            return ConfigIssue(path: "", line: mark.line, message: "YAML syntax error: \(problem)")
        case .duplicatedKeysInMapping(let duplicates, _):
            return ConfigIssue(path: "", line: nil, message: "duplicated keys: \(duplicates.joined(separator: ", "))")
        default:
            return ConfigIssue(path: "", line: nil, message: "YAML error: \(error)")
        }
    }
}

/// Walks nodes, converting scalars and collecting issues instead of stopping at the first.
final class NodeReader {
    var issues: [ConfigIssue] = []
    /// Line of each listener's `address`, for problems found when looking at all listeners.
    var listenerAddressLines: [Int: Int] = [:]
    /// `routes[].headers`, by route name.
    var routeHeaderRules: [String: [HeaderRule]] = [:]

    func fail(_ path: String, _ node: Node?, _ message: String) {
        issues.append(ConfigIssue(path: path, line: node?.mark?.line, message: message))
    }

    /// Calls `body` for each known key present; unknown keys are reported.
    func mapping(_ node: Node, _ path: String, keys: [String], _ body: (String, Node, String) -> Void) {
        guard case .mapping(let map) = node else {
            fail(path, node, "expected a mapping with keys \(keys.joined(separator: ", "))")
            return
        }
        var seen = Set<String>()
        for (k, v) in map {
            guard case .scalar(let s) = k else {
                fail(path, k, "keys must be plain strings")
                continue
            }
            let key = s.string
            let childPath = path.isEmpty ? key : "\(path).\(key)"
            if !seen.insert(key).inserted {
                fail(childPath, k, "key given twice")
                continue
            }
            guard keys.contains(key) else {
                fail(childPath, k, "unknown key '\(key)' (expected one of: \(keys.joined(separator: ", ")))")
                continue
            }
            body(key, v, childPath)
        }
    }

    func sequence(_ node: Node, _ path: String, _ body: (Int, Node, String) -> Void) {
        guard case .sequence(let seq) = node else {
            fail(path, node, "expected a list")
            return
        }
        for (i, item) in seq.enumerated() { body(i, item, "\(path)[\(i)]") }
    }

    func string(_ node: Node, _ path: String) -> String? {
        guard case .scalar(let s) = node else {
            fail(path, node, "expected a single value")
            return nil
        }
        return s.string
    }

    func int(_ node: Node, _ path: String, in range: ClosedRange<Int>) -> Int? {
        guard let s = string(node, path) else { return nil }
        guard let n = Int(s) else {
            fail(path, node, "'\(s)' is not a whole number")
            return nil
        }
        guard range.contains(n) else {
            fail(path, node, "\(n) is out of range (\(range.lowerBound)...\(range.upperBound))")
            return nil
        }
        return n
    }

    func bool(_ node: Node, _ path: String) -> Bool? {
        guard let s = string(node, path) else { return nil }
        switch s.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            fail(path, node, "'\(s)' is not true or false")
            return nil
        }
    }

    func duration(_ node: Node, _ path: String) -> TimeSpan? {
        guard let s = string(node, path) else { return nil }
        guard let d = TimeSpan.parse(s) else {
            fail(path, node, "'\(s)' is not a duration (examples: 500ms, 10s, 5m, 1h)")
            return nil
        }
        return d
    }

    func size(_ node: Node, _ path: String) -> ByteSize? {
        guard let s = string(node, path) else { return nil }
        guard let d = ByteSize.parse(s) else {
            fail(path, node, "'\(s)' is not a size (examples: 512, 8KiB, 64MiB, 1GiB)")
            return nil
        }
        return d
    }

    func enumeration<E: RawRepresentable & CaseIterable>(_ node: Node, _ path: String, _ type: E.Type) -> E? where E.RawValue == String {
        guard let s = string(node, path) else { return nil }
        guard let v = E(rawValue: s) else {
            fail(path, node, "'\(s)' is not one of: \(E.allCases.map(\.rawValue).joined(separator: ", "))")
            return nil
        }
        return v
    }

    /// A list of strings (or one string). `@name` stands for the entries of the named list.
    func stringList(_ node: Node, _ path: String) -> [(String, Node, String)] {
        var raw: [(String, Node, String)] = []
        if case .scalar = node, let s = string(node, path) {
            raw = [(s, node, path)]
        } else {
            sequence(node, path) { _, item, p in
                if let s = string(item, p) { raw.append((s, item, p)) }
            }
        }
        var out: [(String, Node, String)] = []
        for (s, n, p) in raw {
            guard s.hasPrefix("@") else {
                out.append((s, n, p))
                continue
            }
            let name = String(s.dropFirst())
            guard let entries = namedLists[name] else {
                fail(p, n, "unknown list '\(s)' (lists: \(namedLists.keys.sorted().map { "@" + $0 }.joined(separator: ", ")))")
                continue
            }
            out += entries
        }
        return out
    }

    /// Named lists, read before anything that refers to them.
    var namedLists: [String: [(String, Node, String)]] = [:]

    func readLists(_ node: Node, _ path: String, into c: inout ProximaConfiguration) {
        guard case .mapping(let m) = node else { return fail(path, node, "must be a mapping of list names to lists") }
        for (keyNode, value) in m {
            guard let name = keyNode.string, !name.isEmpty, name.utf8.allSatisfy({ isTcharByte($0) }) else {
                fail(path, keyNode, "'\(keyNode.string ?? "?")' is not a list name (letters, digits, - and _)")
                continue
            }
            let p = path + "." + name
            if case .mapping = value {
                var file: String?
                mapping(value, p, keys: ["file"]) { _, n, kp in file = string(n, kp) }
                guard let file else { continue }
                guard let text = readTextFile(file) else {
                    fail(p + ".file", value, "cannot read \(file)")
                    continue
                }
                var entries: [(String, Node, String)] = []
                for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                    let entry = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init)?.trimmingWhitespace() ?? ""
                    if !entry.isEmpty { entries.append((entry, value, "\(p) (\(file) line \(i + 1))")) }
                }
                namedLists[name] = entries
                c.lists[name] = .file(file)
            } else {
                var entries: [(String, Node, String)] = []
                sequence(value, p) { _, item, ip in if let s = string(item, ip) { entries.append((s, item, ip)) } }
                namedLists[name] = entries
                c.lists[name] = .inline(entries.map(\.0))
            }
        }
    }

    // MARK: - Sections

    func readRoot(_ root: Node, into c: inout ProximaConfiguration) {
        let keys = ["lists", "listeners", "access", "connect", "proxy", "limits", "timeouts", "upstream_pool", "dns", "logging", "admin", "auth", "blocklists", "filtering", "header_rules", "pages", "upstreams", "routes", "workers", "cache", "compression"]
        if case .mapping(let m) = root, let lists = m["lists"] { readLists(lists, "lists", into: &c) }
        mapping(root, "", keys: keys) { key, node, path in
            switch key {
            case "lists": break
            case "workers":
                guard let v = string(node, path) else { return }
                if v == "auto" {
                    c.workers = nil
                } else if let n = Int(v), (1...1024).contains(n) {
                    c.workers = n
                } else {
                    fail(path, node, "'\(v)' is not auto or a number of threads (1-1024)")
                }
            case "listeners": c.listeners = readListeners(node, path)
            case "access": c.access = AccessPolicy(rules: readAccess(node, path))
            case "connect":
                mapping(node, path, keys: ["allowed_ports"]) { _, n, p in
                    var ports = Set<Int>()
                    sequence(n, p) { _, item, ip in if let v = int(item, ip, in: 1...65535) { ports.insert(v) } }
                    c.connect.allowedPorts = ports
                }
            case "proxy":
                mapping(node, path, keys: ["via", "via_name", "forwarded_for", "anonymize", "user_agent", "trusted_proxies", "forwarded"]) { k, n, p in
                    switch k {
                    case "forwarded": if let v = bool(n, p) { c.proxy.forwarded = v }
                    case "trusted_proxies":
                        c.proxy.trustedProxies = cidrList(n, p)
                    case "anonymize": if let v = bool(n, p) { c.proxy.anonymize = v }
                    case "user_agent":
                        if let v = string(n, p) {
                            if v.isEmpty || v.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) { fail(p, n, "must be printable text") } else { c.proxy.userAgent = v }
                        }
                    case "via": if let v = bool(n, p) { c.proxy.via = v }
                    case "via_name":
                        if let v = string(n, p) {
                            if v.isEmpty || !v.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ",") }) {
                                fail(p, n, "must be one word of visible characters")
                            } else {
                                c.proxy.viaName = v
                            }
                        }
                    default: if let v = enumeration(n, p, ForwardedForMode.self) { c.proxy.forwardedFor = v }
                    }
                }
            case "limits":
                mapping(node, path, keys: ["request_line", "headers", "max_connections", "request_body"]) { k, n, p in
                    switch k {
                    case "request_body": if let v = size(n, p) { c.limits.requestBody = v }
                    case "request_line": if let v = size(n, p) { c.limits.requestLine = v }
                    case "headers": if let v = size(n, p) { c.limits.headers = v }
                    default: if let v = int(n, p, in: 1...1_000_000) { c.limits.maxConnections = v }
                    }
                }
            case "timeouts":
                let names = ["client_header", "idle", "upstream_connect", "upstream_response", "tunnel_idle", "drain"]
                mapping(node, path, keys: names) { k, n, p in
                    guard let v = duration(n, p) else { return }
                    if v.nanoseconds <= 0 { fail(p, n, "must be longer than 0"); return }
                    switch k {
                    case "client_header": c.timeouts.clientHeader = v
                    case "idle": c.timeouts.idle = v
                    case "upstream_connect": c.timeouts.upstreamConnect = v
                    case "upstream_response": c.timeouts.upstreamResponse = v
                    case "tunnel_idle": c.timeouts.tunnelIdle = v
                    default: c.timeouts.drain = v
                    }
                }
            case "compression":
                mapping(node, path, keys: ["enabled", "codings", "min_length", "gzip_level", "brotli_level"]) { k, n, p in
                    switch k {
                    case "enabled": if let v = bool(n, p) { c.compression.enabled = v }
                    case "codings":
                        let names = stringList(n, p).compactMap { s, sn, sp -> String? in
                            if s == "br" || s == "gzip" { return s }
                            fail(sp, sn, "'\(s)' is not one of: br, gzip")
                            return nil
                        }
                        if names.isEmpty { fail(p, n, "at least one of br, gzip") } else { c.compression.codings = names }
                    case "min_length": if let v = size(n, p) { c.compression.minLength = v }
                    case "gzip_level": if let v = int(n, p, in: 1...9) { c.compression.gzipLevel = v }
                    default: if let v = int(n, p, in: 0...11) { c.compression.brotliLevel = v }
                    }
                }
            case "cache":
                mapping(node, path, keys: ["memory", "disk", "max_object", "heuristic_fraction", "heuristic_max", "default_ttl", "purge_clients"]) { k, n, p in
                    switch k {
                    case "disk": c.cache.disk = diskCache(n, p)
                    case "purge_clients":
                        c.cache.purgeClients = cidrList(n, p)
                    case "memory": if let v = size(n, p) { c.cache.memory = v }
                    case "max_object": if let v = size(n, p) { c.cache.maxObject = v }
                    case "heuristic_max": if let v = duration(n, p) { c.cache.heuristicMax = v }
                    case "default_ttl": if let v = duration(n, p) { c.cache.defaultTTL = v }
                    default:
                        if case .scalar(let sc) = n, let v = Double(sc.string), v >= 0, v <= 1 { c.cache.heuristicFraction = v } else {
                            fail(p, n, "a fraction between 0 and 1 (0.1 = 10 %)")
                        }
                    }
                }
            case "upstream_pool":
                mapping(node, path, keys: ["max_idle_per_host", "idle_timeout"]) { k, n, p in
                    if k == "max_idle_per_host" {
                        if let v = int(n, p, in: 0...10_000) { c.upstreamPool.maxIdlePerHost = v }
                    } else if let v = duration(n, p) {
                        c.upstreamPool.idleTimeout = v
                    }
                }
            case "dns":
                mapping(node, path, keys: ["cache_ttl", "negative_ttl", "max_entries"]) { k, n, p in
                    switch k {
                    case "cache_ttl": if let v = duration(n, p) { c.dns.cacheTTL = v }
                    case "negative_ttl": if let v = duration(n, p) { c.dns.negativeTTL = v }
                    default: if let v = int(n, p, in: 0...10_000_000) { c.dns.maxEntries = v }
                    }
                }
            case "admin": c.admin = readAdmin(node, path)
            case "auth": c.auth = readAuth(node, path)
            case "blocklists": c.blocklists = readBlockLists(node, path)
            case "filtering": c.filtering = readFiltering(node, path)
            case "upstreams": c.upstreams = readUpstreams(node, path)
            case "routes":
                c.routes = RouteTable(readRoutes(node, path))
                c.routeHeaderRules = routeHeaderRules
            case "header_rules": c.headerRules = readHeaderRules(node, path)
            case "pages": c.pages = readPages(node, path)
            default:
                mapping(node, path, keys: ["access", "level", "diagnostics"]) { k, n, p in
                    if k == "level" {
                        if let v = enumeration(n, p, LogLevel.self) { c.logging.level = v }
                    } else if k == "diagnostics" {
                        if let v = enumeration(n, p, DiagnosticsFormat.self) { c.logging.diagnostics = v }
                    } else {
                        c.logging.access = readAccessLogs(n, p)
                    }
                }
            }
        }
    }

    /// `cache.disk: {path, size}`: both required, the size at least 1 MiB.
    func diskCache(_ n: Node, _ kp: String) -> DiskCacheConfig? {
        var path: String?
        var bytes: ByteSize?
        var given = Set<String>()
        mapping(n, kp, keys: ["path", "size"]) { k, vn, vp in
            given.insert(k)
            if k == "path" {
                if let s = string(vn, vp) {
                    if s.isEmpty { fail(vp, vn, "a directory is needed") } else { path = s }
                }
            } else if let v = size(vn, vp) {
                if v.bytes < 1 << 20 { fail(vp, vn, "at least 1MiB") } else { bytes = v }
            }
        }
        guard case .mapping = n else { return nil }
        if !given.contains("path") { fail(kp, n, "cache.disk needs a path (the store's directory)") }
        if !given.contains("size") { fail(kp, n, "cache.disk needs a size (examples: 512MiB, 10GiB)") }
        guard let path, let bytes else { return nil }
        return DiskCacheConfig(path: path, size: bytes)
    }

    /// A list of IP addresses or CIDR networks; each bad entry is reported where it is.
    func cidrList(_ n: Node, _ kp: String) -> [CIDR] {
        stringList(n, kp).compactMap { s, sn, sp in
            if let cidr = CIDR(s) { return cidr }
            fail(sp, sn, "'\(s)' is not an IP address or CIDR network")
            return nil
        }
    }

    func listenAddress(_ n: Node, _ kp: String) -> ListenAddress? {
        guard let s = string(n, kp) else { return nil }
        switch ListenAddress.parse(s) {
        case .success(let a): return a
        case .failure(.portOutOfRange(let port)):
            fail(kp, n, "port \(port) is out of range (0-65535)")
        case .failure(.syntax):
            fail(kp, n, "'\(s)' is not host:port (examples: 127.0.0.1:3128, [::1]:3128, 0.0.0.0:8080)")
        }
        return nil
    }

    func readBlockLists(_ node: Node, _ path: String) -> [BlockList] {
        var lists: [BlockList] = []
        sequence(node, path) { i, item, p in
            var name: String?
            var file: String?
            var format: BlockList.Format = .adblock
            mapping(item, p, keys: ["name", "file", "format"]) { k, n, kp in
                switch k {
                case "name": name = string(n, kp)
                case "file": file = string(n, kp)
                default: if let f = enumeration(n, kp, BlockList.Format.self) { format = f }
                }
            }
            guard let file else { return fail(p, item, "missing key 'file'") }
            guard let text = readTextFile(file) else { return fail(p + ".file", item, "cannot read \(file)") }
            guard lists.count < BlockListSet.maxLists else { return fail(p, item, "at most \(BlockListSet.maxLists) block lists") }
            let listName = name ?? "blocklist-\(i)"
            if lists.contains(where: { $0.name == listName }) { return fail(p + ".name", item, "the name '\(listName)' is used by an earlier list") }
            lists.append(BlockList(name: listName, source: file, format: format, text: text))
        }
        return lists
    }

    func readUpstreams(_ node: Node, _ path: String) -> [UpstreamGroupConfig] {
        var groups: [UpstreamGroupConfig] = []
        sequence(node, path) { i, item, p in
            var group = UpstreamGroupConfig(name: "upstream-\(i)", servers: [])
            var balance = "round_robin"
            var hashKey: HashKey = .clientAddress
            var hashMethod: HashMethod = .ring
            var serverItems = 0
            var httpsServers = 0
            mapping(item, p, keys: ["name", "servers", "balance", "hash", "retries", "outlier", "health_check", "tls", "queue", "queue_timeout"]) { k, n, kp in
                switch k {
                case "tls":
                    var tls = UpstreamTLSConfig()
                    if case .scalar(let sc) = n, let on = Bool(sc.string) {
                        group.tls = on ? tls : nil
                        return
                    }
                    mapping(n, kp, keys: ["ca", "server_name", "insecure_skip_verify"]) { tk, tn, tp in
                        switch tk {
                        case "ca":
                            if let v = string(tn, tp) {
                                if access(v, R_OK) != 0 { fail(tp, tn, "cannot read \(v)") }
                                tls.ca = v
                            }
                        case "server_name": tls.serverName = string(tn, tp)
                        default: if let v = bool(tn, tp) { tls.insecureSkipVerify = v }
                        }
                    }
                    group.tls = tls
                case "queue": if let v = int(n, kp, in: 0...1_000_000) { group.queueLimit = v }
                case "queue_timeout":
                    if let v = duration(n, kp) {
                        if v.nanoseconds <= 0 { fail(kp, n, "must be longer than 0") } else { group.queueTimeout = Double(v.nanoseconds) / 1e9 }
                    }
                case "health_check":
                    var check = ActiveCheckPolicy()
                    mapping(n, kp, keys: ["path", "interval", "timeout", "rise", "fall", "expect"]) { hk, hn, hp in
                        switch hk {
                        case "path":
                            if let v = string(hn, hp) {
                                if v.hasPrefix("/"), v.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) { check.path = v } else { fail(hp, hn, "a path starting with /") }
                            }
                        case "interval", "timeout":
                            guard let v = duration(hn, hp) else { return }
                            if v.nanoseconds < 10_000_000 { return fail(hp, hn, "at least 10ms") }
                            if hk == "interval" { check.interval = Double(v.nanoseconds) / 1e9 } else { check.timeout = Double(v.nanoseconds) / 1e9 }
                        case "rise": if let v = int(hn, hp, in: 1...100) { check.rise = v }
                        case "fall": if let v = int(hn, hp, in: 1...100) { check.fall = v }
                        default:
                            // "200-399" or "200"
                            guard let v = string(hn, hp) else { return }
                            let parts = v.split(separator: "-").compactMap { Int($0) }
                            if parts.count == 2, (100...599).contains(parts[0]), parts[0] <= parts[1], parts[1] <= 599 {
                                check.expectedStatuses = parts[0]...parts[1]
                            } else if parts.count == 1, (100...599).contains(parts[0]), !v.contains("-") {
                                check.expectedStatuses = parts[0]...parts[0]
                            } else {
                                fail(hp, hn, "'\(v)' is not a status or a range of statuses (200-399)")
                            }
                        }
                    }
                    group.activeCheck = check
                case "name": if let v = string(n, kp) { group.name = v }
                case "balance":
                    if let v = string(n, kp) {
                        if ["round_robin", "least_connections", "p2c_ewma", "hash"].contains(v) { balance = v } else {
                            fail(kp, n, "'\(v)' is not one of: round_robin, least_connections, p2c_ewma, hash")
                        }
                    }
                case "hash":
                    mapping(n, kp, keys: ["key", "method"]) { hk, hn, hp in
                        guard let v = string(hn, hp) else { return }
                        if hk == "method" {
                            if let m = HashMethod(rawValue: v) { hashMethod = m } else { fail(hp, hn, "'\(v)' is not ring or maglev") }
                        } else if v == "client_address" {
                            hashKey = .clientAddress
                        } else if v == "url" {
                            hashKey = .url
                        } else if v.hasPrefix("header:"), v.count > 7 {
                            hashKey = .header(String(v.dropFirst(7)).lowercased())
                        } else if v.hasPrefix("cookie:"), v.count > 7 {
                            hashKey = .cookie(String(v.dropFirst(7)))
                        } else {
                            fail(hp, hn, "'\(v)' is not client_address, url, header:NAME or cookie:NAME")
                        }
                    }
                case "retries": if let v = int(n, kp, in: 0...10) { group.retries = v }
                case "outlier":
                    mapping(n, kp, keys: ["consecutive_failures", "base_ejection", "max_ejection", "max_ejected_percent"]) { ok, on, op in
                        switch ok {
                        case "consecutive_failures": if let v = int(on, op, in: 0...1000) { group.outlier.consecutiveFailures = v }
                        case "base_ejection": if let v = duration(on, op) { group.outlier.baseEjection = Double(v.nanoseconds) / 1e9 }
                        case "max_ejection": if let v = duration(on, op) { group.outlier.maxEjection = Double(v.nanoseconds) / 1e9 }
                        default: if let v = int(on, op, in: 0...100) { group.outlier.maxEjectedPercent = v }
                        }
                    }
                default:
                    sequence(n, kp) { _, s, sp in
                        serverItems += 1
                        var address: ListenAddress?
                        var sawAddress = false
                        var weight = 1
                        var maxConnections: Int?
                        var backup = false
                        mapping(s, sp, keys: ["address", "weight", "max_connections", "backup"]) { sk, sn, skp in
                            switch sk {
                            case "address":
                                sawAddress = true
                                // `https://host:port` turns TLS on for the group; 443 is its default port.
                                if case .scalar(let sc) = sn, sc.string.hasPrefix("https://") || sc.string.hasPrefix("http://") {
                                    let https = sc.string.hasPrefix("https://")
                                    if https { httpsServers += 1 }
                                    var rest = String(sc.string.drop { $0 != "/" }.dropFirst(2))
                                    if rest.hasSuffix("/") { rest.removeLast() }
                                    let hasPort = rest.hasPrefix("[") ? rest.contains("]:") : rest.contains(":")
                                    if !hasPort { rest += https ? ":443" : ":80" }
                                    if case .success(let a) = ListenAddress.parse(rest) { address = a } else {
                                        fail(skp, sn, "'\(sc.string)' is not https://host[:port] or http://host[:port]")
                                    }
                                } else {
                                    address = listenAddress(sn, skp)
                                }
                                if let a = address, a.port == 0 { fail(skp, sn, "a back-end needs a port"); address = nil }
                            case "weight": if let v = int(sn, skp, in: 1...1000) { weight = v }
                            case "max_connections": maxConnections = int(sn, skp, in: 1...1_000_000)
                            default: if let v = bool(sn, skp) { backup = v }
                            }
                        }
                        guard let address else {
                            if !sawAddress { fail(sp, s, "missing key 'address' (host:port)") }
                            return
                        }
                        group.servers.append(Backend(host: address.host, port: address.port, weight: weight, maxConnections: maxConnections, backup: backup))
                    }
                }
            }
            switch balance {
            case "least_connections": group.algorithm = .leastConnections
            case "p2c_ewma": group.algorithm = .p2cEWMA
            case "hash": group.algorithm = .hash(hashKey, hashMethod)
            default: group.algorithm = .roundRobin
            }
            if serverItems == 0 { fail(p, item, "an upstream group needs servers") }
            if httpsServers > 0 {
                if httpsServers < serverItems {
                    fail(p + ".servers", item, "all servers of a group use the same scheme: either every address is https:// or none is")
                }
                if group.tls == nil { group.tls = UpstreamTLSConfig() }
            }
            if groups.contains(where: { $0.name == group.name }) { fail(p + ".name", item, "the name '\(group.name)' is used by an earlier group") }
            groups.append(group)
        }
        return groups
    }

    func readRoutes(_ node: Node, _ path: String) -> [Route] {
        var routes: [Route] = []
        sequence(node, path) { i, item, p in
            var route = Route(name: "route-\(i)", action: .respond(status: 404, body: "", contentType: "text/plain"))
            var headers: [HeaderRule] = []
            var actions = 0
            var paths = 0
            mapping(item, p, keys: [
                "name", "hosts", "path_prefix", "path_exact", "path_regex", "methods", "upstream", "redirect", "respond",
                "replace_prefix", "host_header", "timeout", "max_body", "headers", "header_rules",
            ]) { k, n, kp in
                switch k {
                case "header_rules": headers = readHeaderRules(n, kp)
                case "headers":
                    route.headers = headerConditions(n, kp) { name, pattern in try Route.HeaderMatch(name: name, pattern: pattern.map(PathPattern.init)) }
                case "timeout":
                    if let v = duration(n, kp) {
                        if v.nanoseconds <= 0 { fail(kp, n, "must be longer than 0") } else { route.timeout = Double(v.nanoseconds) / 1e9 }
                    }
                case "max_body": if let v = size(n, kp) { route.maxBody = v.bytes }
                case "name": if let v = string(n, kp) { route.name = v }
                case "hosts": route.hosts = stringList(n, kp).map { $0.0.lowercased() }
                case "path_prefix", "path_exact":
                    paths += 1
                    guard let v = string(n, kp) else { return }
                    guard v.hasPrefix("/") else { return fail(kp, n, "a path starts with /") }
                    route.path = k == "path_prefix" ? .prefix(v) : .exact(v)
                case "path_regex":
                    paths += 1
                    guard let v = string(n, kp) else { return }
                    do { route.path = .regex(try PathPattern(v)) } catch { fail(kp, n, "not a regular expression: \(error)") }
                case "methods": route.methods = Set(stringList(n, kp).map { $0.0.uppercased() })
                case "upstream":
                    actions += 1
                    if let v = string(n, kp) { route.action = .upstream(v) }
                case "redirect":
                    actions += 1
                    var to: String?
                    var status = 301
                    mapping(n, kp, keys: ["to", "status"]) { rk, rn, rp in
                        if rk == "to" { to = string(rn, rp) } else if let v = int(rn, rp, in: 300...399) { status = v }
                    }
                    guard let to, !to.isEmpty, !to.utf8.contains(where: { $0 < 0x21 || $0 == 0x7F }) else { return fail(kp, n, "needs to: a URL") }
                    route.action = .redirect(to: to, status: status, keepPath: to.hasSuffix("/"))
                case "respond":
                    actions += 1
                    var status = 200
                    var body = ""
                    var type = "text/plain; charset=utf-8"
                    mapping(n, kp, keys: ["status", "body", "content_type"]) { rk, rn, rp in
                        switch rk {
                        case "status": if let v = int(rn, rp, in: 200...599) { status = v }
                        case "body": body = string(rn, rp) ?? ""
                        default: if let v = string(rn, rp) { type = v }
                        }
                    }
                    route.action = .respond(status: status, body: body, contentType: type)
                case "replace_prefix": route.replacePrefix = string(n, kp)
                default: if let v = enumeration(n, kp, Route.HostHeader.self) { route.hostHeader = v }
                }
            }
            if actions != 1 { fail(p, item, "a route needs exactly one of: upstream, redirect, respond") }
            if paths > 1 { fail(p, item, "at most one of path_prefix, path_exact, path_regex") }
            if route.replacePrefix != nil, case .prefix = route.path {} else if route.replacePrefix != nil {
                fail(p + ".replace_prefix", item, "needs path_prefix")
            }
            if routes.contains(where: { $0.name == route.name }) { fail(p + ".name", item, "the name '\(route.name)' is used by an earlier route") }
            if !headers.isEmpty { routeHeaderRules[route.name] = headers }
            routes.append(route)
        }
        return routes
    }

    func readFiltering(_ node: Node, _ path: String) -> FilteringConfig {
        var f = FilteringConfig()
        mapping(node, path, keys: ["element_hiding", "public_suffix_list"]) { k, n, kp in
            switch k {
            case "element_hiding": if let v = bool(n, kp) { f.elementHiding = v }
            default:
                // An empty value turns the list off.
                if let v = string(n, kp) {
                    f.publicSuffixList = v.isEmpty ? nil : v
                    if !v.isEmpty, readTextFile(v) == nil { fail(kp, n, "cannot read \(v)") }
                }
            }
        }
        return f
    }

    /// `headers: {Name: pattern, Other: null}` (null: the field is present), for access rules
    /// and routes; `make` builds the condition from a name and a pattern's source.
    func headerConditions<T>(_ n: Node, _ kp: String, _ make: (String, String?) throws -> T) -> [T] {
        guard case .mapping(let hm) = n else {
            fail(kp, n, "must map header names to patterns (or null for presence)")
            return []
        }
        var conditions: [T] = []
        for (hn, hv) in hm {
            guard let name = hn.string, !name.isEmpty, name.utf8.allSatisfy({ isTcharByte($0) }) else {
                fail(kp, hn, "'\(hn.string ?? "?")' is not a header name")
                continue
            }
            var pattern: String?
            // YAML's null (plain null, ~ or nothing); a quoted "null" is a pattern.
            if case .scalar(let sc) = hv, sc.style == .plain, ["null", "Null", "NULL", "~", ""].contains(sc.string) {
                pattern = nil
            } else if let p = string(hv, kp + "." + name) {
                pattern = p
            } else {
                continue
            }
            do { conditions.append(try make(name, pattern)) } catch {
                fail(kp + "." + name, hv, "'\(pattern ?? "")' is not a valid regular expression")
            }
        }
        return conditions
    }

    /// `header_rules: {request: {remove, set, replace}, response: {...}}`: per direction,
    /// removals first, then replacements, then values set.
    func readHeaderRules(_ node: Node, _ path: String) -> [HeaderRule] {
        var rules: [HeaderRule] = []
        mapping(node, path, keys: HeaderRule.Direction.allCases.map(\.rawValue)) { d, dn, dp in
            let direction = HeaderRule.Direction(rawValue: d)!
            var removes: [HeaderRule] = []
            var replaces: [HeaderRule] = []
            var sets: [HeaderRule] = []
            var adds: [HeaderRule] = []
            mapping(dn, dp, keys: ["remove", "set", "add", "replace"]) { k, n, kp in
                switch k {
                case "remove":
                    for (name, sn, sp) in stringList(n, kp) {
                        if fieldName(name, sn, sp, wildcard: true) { removes.append(HeaderRule(direction: direction, name: name, action: .remove)) }
                    }
                case "set", "add":
                    guard case .mapping(let m) = n else { return fail(kp, n, "must be a mapping of field names to values") }
                    for (keyNode, valueNode) in m {
                        guard let name = keyNode.string, fieldName(name, keyNode, kp, wildcard: false), let value = string(valueNode, kp + "." + name) else { continue }
                        if value.utf8.contains(where: { $0 < 0x20 && $0 != 0x09 }) { fail(kp + "." + name, valueNode, "must not contain control characters"); continue }
                        if k == "set" {
                            sets.append(HeaderRule(direction: direction, name: name, action: .set(value)))
                        } else {
                            adds.append(HeaderRule(direction: direction, name: name, action: .add(value)))
                        }
                    }
                default:
                    sequence(n, kp) { _, item, ip in
                        var name: String?
                        var pattern: HeaderValuePattern?
                        var with = ""
                        var keys: Set<String> = []
                        mapping(item, ip, keys: ["name", "pattern", "with"]) { rk, rn, rp in
                            keys.insert(rk)
                            switch rk {
                            case "name": if let v = string(rn, rp), fieldName(v, rn, rp, wildcard: true) { name = v }
                            case "pattern":
                                if let v = string(rn, rp) {
                                    do { pattern = try HeaderValuePattern(v) } catch { fail(rp, rn, "not a regular expression: \(error)") }
                                }
                            default: if let v = string(rn, rp) { with = v }
                            }
                        }
                        guard let name, let pattern else {
                            // A bad value was reported where it is; only missing keys are reported here.
                            if !keys.isSuperset(of: ["name", "pattern"]) { fail(ip, item, "needs name and pattern") }
                            return
                        }
                        replaces.append(HeaderRule(direction: direction, name: name, action: .replace(pattern, with: with)))
                    }
                }
            }
            rules += removes + replaces + sets + adds
        }
        return rules
    }

    func fieldName(_ name: String, _ node: Node, _ path: String, wildcard: Bool) -> Bool {
        var body = Substring(name)
        if wildcard, body.hasSuffix("*") { body = body.dropLast() }
        guard !body.isEmpty, body.utf8.allSatisfy(isTcharByte) else {
            fail(path, node, "'\(name)' is not a header field name\(wildcard ? " (a trailing * matches a prefix)" : "")")
            return false
        }
        let lower = body.lowercased()
        if ["host", "content-length", "transfer-encoding", "connection"].contains(lower) {
            fail(path, node, "'\(name)' frames or routes the message and is managed by the proxy")
            return false
        }
        return true
    }

    func readPages(_ node: Node, _ path: String) -> PageTemplates {
        var pages = PageTemplates()
        mapping(node, path, keys: ["directory"]) { _, n, kp in
            guard let dir = string(n, kp) else { return }
            pages.directory = dir
            guard let names = directoryEntries(dir) else { return fail(kp, n, "cannot read the directory \(dir)") }
            for name in names.sorted() {
                let parts = name.split(separator: ".")
                guard parts.count == 2, ["html", "json", "txt"].contains(parts[1]), parts[0] == "default" || Int(parts[0]).map({ (400...599).contains($0) }) == true else { continue }
                guard let text = readTextFile(dir + "/" + name) else {
                    fail(kp, n, "cannot read \(dir)/\(name)")
                    continue
                }
                do throws(PageTemplate.UnknownField) {
                    pages.templates[name] = try PageTemplate(text)
                } catch {
                    fail(kp, n, "\(dir)/\(name): unknown placeholder $\(error.name) (known: \(PageTemplate.fields.sorted().joined(separator: ", ")))")
                }
            }
            if pages.templates.isEmpty { fail(kp, n, "no templates in \(dir) (names: default.html, 403.json, ...)") }
        }
        return pages
    }

    func readAuth(_ node: Node, _ path: String) -> AuthConfig? {
        var realm = "Proxima"
        var users: PasswordFile?
        var groups: GroupFile?
        var ttl: TimeSpan?
        mapping(node, path, keys: ["realm", "users_file", "groups_file", "cache_ttl"]) { k, n, kp in
            switch k {
            case "realm":
                if let r = string(n, kp) {
                    if r.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
                        fail(kp, n, "the realm may not hold quotes, backslashes or control characters")
                    } else {
                        realm = r
                    }
                }
            case "users_file":
                guard let file = string(n, kp) else { return }
                guard let text = readTextFile(file) else { return fail(kp, n, "cannot read \(file)") }
                switch PasswordFile.parse(text, path: file) {
                case .success(let f): users = f
                case .failure(let problems): for p in problems.list { fail(kp, n, "\(file) \(p)") }
                }
            case "groups_file":
                guard let file = string(n, kp) else { return }
                guard let text = readTextFile(file) else { return fail(kp, n, "cannot read \(file)") }
                switch GroupFile.parse(text, path: file) {
                case .success(let g): groups = g
                case .failure(let problems): for p in problems.list { fail(kp, n, "\(file) \(p)") }
                }
            default: ttl = duration(n, kp)
            }
        }
        if case .mapping(let m) = node, m["users_file"] == nil { fail(path, node, "missing key 'users_file' (an htpasswd file)") }
        guard let users else { return nil }
        var auth = AuthConfig(users: users, groups: groups)
        auth.realm = realm
        if let ttl { auth.cacheTTL = ttl }
        return auth
    }

    func readAdmin(_ node: Node, _ path: String) -> AdminConfig? {
        var address: ListenAddress?
        var token: String?
        mapping(node, path, keys: ["address", "token", "token_file"]) { k, n, kp in
            switch k {
            case "address": address = listenAddress(n, kp)
            case "token":
                if let t = string(n, kp) {
                    if t.count < 16 { fail(kp, n, "a token needs at least 16 characters") } else { token = t }
                }
            default:
                guard let file = string(n, kp) else { return }
                guard let text = readTextFile(file) else { return fail(kp, n, "cannot read \(file)") }
                let t = text.trimmingWhitespace()
                if t.count < 16 { fail(kp, n, "the token in \(file) needs at least 16 characters") } else { token = t }
            }
        }
        if case .mapping(let m) = node, m["address"] == nil { fail(path, node, "missing key 'address'") }
        guard let address else { return nil }
        let admin = AdminConfig(address: address, token: token)
        if !admin.isLoopback, token == nil {
            fail(path + ".address", node, "\(address) is not a loopback address: set admin.token or admin.token_file, or listen on 127.0.0.1")
        }
        return admin
    }

    func readListeners(_ node: Node, _ path: String) -> [ListenerConfig] {
        var result: [ListenerConfig] = []
        sequence(node, path) { i, item, p in
            var name: String?
            var role: ListenerRole?
            var address: ListenAddress?
            var anonymize: Bool?
            var tls: ListenerTLSConfig?
            var http2: Bool?
            var redirect: Int?
            mapping(item, p, keys: ["name", "role", "address", "anonymize", "tls", "http2", "redirect_https"]) { k, n, kp in
                switch k {
                case "name": name = string(n, kp)
                case "anonymize": anonymize = bool(n, kp)
                case "role": role = enumeration(n, kp, ListenerRole.self)
                case "tls": tls = readListenerTLS(n, kp)
                case "http2": http2 = bool(n, kp)
                case "redirect_https":
                    if case .scalar(let sc) = n, sc.string == "true" { redirect = 443 } else { redirect = int(n, kp, in: 1...65535) }
                default:
                    listenerAddressLines[i] = n.mark?.line
                    address = listenAddress(n, kp)
                }
            }
            if case .mapping(let m) = item {
                if m["address"] == nil { fail(p, item, "missing key 'address'") }
                if m["role"] == nil { fail(p, item, "missing key 'role' (forward or reverse)") }
                if redirect != nil, tls != nil { fail(p + ".redirect_https", item, "a TLS listener cannot redirect to HTTPS; put redirect_https on a plain listener") }
                if redirect != nil, role != .reverse { fail(p + ".redirect_https", item, "only reverse listeners redirect to HTTPS") }
            }
            if let role, let address {
                var l = ListenerConfig(name: name ?? "\(role.rawValue)-\(i)", role: role, address: address)
                l.anonymize = anonymize
                l.tls = tls
                l.http2 = http2
                l.redirectHTTPS = redirect
                result.append(l)
            }
        }
        return result
    }

    /// `tls: {certificates: [{certificate, key, names}], min_version}`. The files are read when
    /// the server builds its TLS contexts (a start or a reload), which reports a bad file.
    func readListenerTLS(_ node: Node, _ path: String) -> ListenerTLSConfig? {
        var tls = ListenerTLSConfig(certificates: [])
        mapping(node, path, keys: ["certificates", "min_version"]) { k, n, kp in
            if k == "min_version" {
                if let v = enumeration(n, kp, TLSMinimumVersion.self) { tls.minVersion = v }
                return
            }
            sequence(n, kp) { _, c, cp in
                var cert: String?
                var key: String?
                var names: [String]?
                mapping(c, cp, keys: ["certificate", "key", "names"]) { ck, cn, ckp in
                    switch ck {
                    case "certificate": cert = string(cn, ckp)
                    case "key": key = string(cn, ckp)
                    default: names = stringList(cn, ckp).map { s, _, _ in s.lowercased() }
                    }
                }
                guard let cert, let key else { return fail(cp, c, "a certificate needs 'certificate' and 'key' (PEM files)") }
                for (file, what) in [(cert, "certificate"), (key, "key")] where access(file, R_OK) != 0 {
                    fail(cp + "." + what, c, "cannot read \(file)")
                }
                tls.certificates.append(CertificateConfig(certificate: cert, key: key, names: names))
            }
        }
        if tls.certificates.isEmpty {
            fail(path + ".certificates", node, "a TLS listener needs at least one certificate")
            return nil
        }
        return tls
    }

    func readAccess(_ node: Node, _ path: String) -> [AccessRule] {
        var rules: [AccessRule] = []
        sequence(node, path) { i, item, p in
            var rule = AccessRule(name: "rule-\(i)", action: .deny)
            var hasAction = false
            let ruleKeys = [
                "name", "action", "clients", "methods", "ports", "domains", "schemes", "url_prefixes", "url_regex", "headers", "time",
                "users", "groups", "destinations", "anonymize",
            ]
            mapping(item, p, keys: ruleKeys) { k, n, kp in
                switch k {
                case "name": if let v = string(n, kp) { rule.name = v }
                case "action":
                    if let v = string(n, kp) {
                        if let a = AccessAction(rawValue: v) {
                            rule.action = a
                            hasAction = true
                        } else {
                            fail(kp, n, "'\(v)' is not one of: allow, deny, authenticate")
                        }
                    }
                case "clients":
                    rule.clients = cidrList(n, kp)
                case "methods":
                    rule.methods = Set(stringList(n, kp).compactMap { s, sn, sp in
                        if !s.isEmpty, s.utf8.allSatisfy({ isTcharByte($0) }) { return s.uppercased() }
                        fail(sp, sn, "'\(s)' is not an HTTP method")
                        return nil
                    })
                case "ports":
                    var ports = Set<Int>()
                    sequence(n, kp) { _, pn, pp in if let v = int(pn, pp, in: 1...65535) { ports.insert(v) } }
                    rule.ports = ports
                case "destinations":
                    rule.destinations = cidrList(n, kp)
                case "users": rule.users = Set(stringList(n, kp).map(\.0))
                case "groups": rule.groups = Set(stringList(n, kp).map(\.0))
                case "anonymize": rule.anonymize = bool(n, kp)
                case "schemes":
                    rule.schemes = Set(stringList(n, kp).compactMap { s, sn, sp in
                        if s == "http" || s == "https" || s == "ftp" { return s }
                        fail(sp, sn, "'\(s)' is not a URL scheme (http, https, ftp; CONNECT has none: use methods: [CONNECT])")
                        return nil
                    })
                case "url_prefixes":
                    rule.urlPrefixes = stringList(n, kp).compactMap { s, sn, sp in
                        if s.contains("://") { return s }
                        fail(sp, sn, "'\(s)' is not an absolute URL prefix (example: http://example.com/downloads/)")
                        return nil
                    }
                case "url_regex":
                    rule.urlPatterns = stringList(n, kp).compactMap { s, sn, sp in
                        do { return try URLPattern(s) } catch {
                            fail(sp, sn, "'\(s)' is not a valid regular expression")
                            return nil
                        }
                    }
                case "headers":
                    rule.headers = headerConditions(n, kp) { name, pattern in try HeaderCondition(name: name, pattern: pattern.map(URLPattern.init)) }
                case "time":
                    var days: Set<Int> = Set(0...6)
                    var hours: (Int, Int) = (0, 1440)
                    var zone = "UTC"
                    mapping(n, kp, keys: ["days", "hours", "zone"]) { tk, tn, tp in
                        switch tk {
                        case "days":
                            days = Set(stringList(tn, tp).compactMap { d, dn, dp in
                                if let v = TimeWindow.parseDay(d) { return v }
                                fail(dp, dn, "'\(d)' is not a day (mon, tue, wed, thu, fri, sat, sun)")
                                return nil
                            })
                        case "hours":
                            guard let h = string(tn, tp) else { return }
                            if let v = TimeWindow.parseHours(h) { hours = v } else { fail(tp, tn, "'\(h)' is not HH:MM-HH:MM (example: 09:00-17:30)") }
                        default:
                            if let z = string(tn, tp) { zone = z }
                        }
                    }
                    do { rule.time = try TimeWindow(days: days, start: hours.0, end: hours.1, zone: zone) } catch {
                        fail(kp + ".zone", n, "'\(zone)' is not a time zone (examples: UTC, Europe/Berlin, America/New_York)")
                    }
                default:
                    rule.domains = stringList(n, kp).compactMap { s, sn, sp in
                        if let d = DomainPattern(s) { return d }
                        fail(sp, sn, "'\(s)' is not a domain (examples: example.com, .example.com, *.example.com)")
                        return nil
                    }
                }
            }
            if case .mapping = item, !hasAction, !issues.contains(where: { $0.path.hasPrefix(p + ".action") }) {
                fail(p, item, "missing key 'action' (allow, deny or authenticate)")
            }
            rules.append(rule)
        }
        return rules
    }

    func readAccessLogs(_ node: Node, _ path: String) -> [AccessLogConfig] {
        var result: [AccessLogConfig] = []
        sequence(node, path) { _, item, p in
            var format: AccessLogFormat = .squid
            var sinkName = "stdout"
            var filePath: String?
            var address: SyslogTarget?
            var addressGiven = false
            var facility: SyslogFacility?
            var template: LogTemplate?
            var formatGiven = false
            var rotateSize: ByteSize?
            var rotateKeep: Int?
            mapping(item, p, keys: ["sink", "path", "format", "template", "address", "facility", "rotate_size", "rotate_keep"]) { k, n, kp in
                switch k {
                case "template":
                    guard let t = string(n, kp) else { return }
                    do throws(LogTemplate.ParseError) { template = try LogTemplate(t) } catch { fail(kp, n, error.description) }
                case "rotate_size":
                    rotateSize = size(n, kp)
                    if let r = rotateSize, r.bytes < 4096 { fail(kp, n, "must be at least 4KiB") }
                case "rotate_keep": rotateKeep = int(n, kp, in: 0...1000)
                case "sink":
                    if let s = string(n, kp) {
                        if ["stdout", "file", "syslog"].contains(s) { sinkName = s } else { fail(kp, n, "'\(s)' is not one of: stdout, file, syslog") }
                    }
                case "path": filePath = string(n, kp)
                case "address":
                    addressGiven = true
                    guard let s = string(n, kp) else { return }
                    address = SyslogTarget.parse(s)
                    if address == nil {
                        fail(kp, n, "'\(s)' is not a syslog address (examples: udp://127.0.0.1:514, tcp://logs.example:601, unix:/dev/log)")
                    }
                case "facility": facility = enumeration(n, kp, SyslogFacility.self)
                default:
                    formatGiven = true
                    if let f = enumeration(n, kp, AccessLogFormat.self) { format = f }
                }
            }
            if template != nil, formatGiven { fail(p + ".template", item, "give either 'format' or 'template', not both") }
            let sink: AccessLogSink
            switch sinkName {
            case "file":
                guard let fp = filePath, !fp.isEmpty else { return fail(p, item, "a file sink needs 'path'") }
                sink = .file(fp)
            case "syslog":
                guard let address else {
                    if !addressGiven { fail(p, item, "a syslog sink needs 'address' (udp://host:port, tcp://host:port or unix:/path)") }
                    return
                }
                sink = .syslog(address, facility ?? .local0)
            default:
                sink = .stdout
            }
            if filePath != nil, sinkName != "file" { fail(p + ".path", item, "'path' is only for sink: file") }
            if addressGiven, sinkName != "syslog" { fail(p + ".address", item, "'address' is only for sink: syslog") }
            if facility != nil, sinkName != "syslog" { fail(p + ".facility", item, "'facility' is only for sink: syslog") }
            if (rotateSize != nil || rotateKeep != nil), sinkName != "file" { fail(p + ".rotate_size", item, "rotation is only for sink: file") }
            if rotateKeep != nil, rotateSize == nil { fail(p + ".rotate_keep", item, "'rotate_keep' needs 'rotate_size'") }
            let rotation = rotateSize.map { FileRotation(maxBytes: $0.bytes, keep: rotateKeep ?? 5) }
            result.append(AccessLogConfig(sink: sink, format: format, template: template, rotation: rotation))
        }
        return result
    }

    /// Rules that concern the configuration as a whole.
    func validate(_ c: ProximaConfiguration) {
        for (i, r) in c.routes.routes.enumerated() {
            if case .upstream(let name) = r.action, !c.upstreams.contains(where: { $0.name == name }) {
                fail("routes[\(i)].upstream", nil, "no upstream group named '\(name)'")
            }
        }
        if c.listeners.contains(where: { $0.role == .reverse }), c.routes.routes.isEmpty {
            fail("routes", nil, "a reverse listener needs routes")
        }
        if c.listeners.isEmpty, !issues.contains(where: { $0.path.hasPrefix("listeners") }) {
            fail("listeners", nil, "at least one listener is needed")
        }
        var seen = Set<String>()
        for (i, l) in c.listeners.enumerated() where l.address.port != 0 {
            if !seen.insert(l.address.description).inserted {
                let line = listenerAddressLines[i]
                issues.append(ConfigIssue(path: "listeners[\(i)].address", line: line, message: "\(l.address) is used by an earlier listener"))
            }
        }
        if let admin = c.admin, admin.address.port != 0,
            c.listeners.contains(where: { $0.address.port == admin.address.port && ($0.address.host == admin.address.host || $0.address.host == "0.0.0.0" || $0.address.host == "::") }) {
            fail("admin.address", nil, "\(admin.address) is also a proxy listener's address")
        }
        for (i, r) in c.access.rules.enumerated() where r.needsIdentity && c.auth == nil {
            fail("access[\(i)]", nil, "rule '\(r.name)' needs to know the user (users, groups or authenticate): add an auth section with users_file")
        }
        var names = Set<String>()
        for (i, l) in c.listeners.enumerated() where !names.insert(l.name).inserted {
            fail("listeners[\(i)].name", nil, "the name '\(l.name)' is used by an earlier listener")
        }
        if c.limits.requestLine.bytes < 256 { fail("limits.request_line", nil, "must be at least 256B") }
        if c.limits.headers.bytes < 1024 { fail("limits.headers", nil, "must be at least 1KiB") }
        if c.limits.requestLine > c.limits.headers { fail("limits.request_line", nil, "must not be larger than limits.headers") }
    }
}

func isTcharByte(_ b: UInt8) -> Bool {
    switch b {
    case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
    default: return "!#$%&'*+-.^_`|~".utf8.contains(b)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A whole text file (at most 16 MiB), or nil; without Foundation.
/// The names in a directory (nil if it cannot be read).
func directoryEntries(_ path: String) -> [String]? {
    guard let dir = opendir(path) else { return nil }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafePointer(to: entry.pointee.d_name) { $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) } }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

public func readTextFile(_ path: String) -> String? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&chunk, 1, chunk.count, f)
        if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
        if n < chunk.count { break }
        if bytes.count > 16 << 20 { return nil }
    }
    return String(decoding: bytes, as: UTF8.self)
}

extension String {
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
            let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return "" }
        return String(scalars[first...last])
    }
}
