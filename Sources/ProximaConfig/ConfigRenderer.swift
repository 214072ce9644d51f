import ProximaBalance
import ProximaHTTP1
import ProximaPolicy
import ProximaTelemetry

extension ProximaConfiguration {
    /// The configuration as YAML in the schema `ConfigLoader` reads, every value spelled out
    /// (defaults included), so that what is running can be read, diffed and fed back. Secrets
    /// (the admin token) are replaced by `<redacted>` unless `redactingSecrets` is false.
    public func yaml(redactingSecrets: Bool = true) -> String {
        var out = "# The running configuration of proxima \(proximaConfigSchemaVersion), defaults included.\n"
        if !lists.isEmpty {
            out += "lists:\n"
            for name in lists.keys.sorted() {
                switch lists[name]! {
                case .inline(let entries): out += "  \(name): \(list(entries.map(quoted)))\n"
                case .file(let path): out += "  \(name): {file: \(quoted(path))}\n"
                }
            }
        }
        out += "listeners:\n"
        for l in listeners {
            out += "  - name: \(quoted(l.name))\n    role: \(l.role.rawValue)\n    address: \(quoted(l.address.description))\n"
            if let a = l.anonymize { out += "    anonymize: \(a)\n" }
            if let h = l.http2 { out += "    http2: \(h)\n" }
            if let r = l.redirectHTTPS { out += "    redirect_https: \(r)\n" }
            if let t = l.tls {
                out += "    tls:\n      min_version: \(quoted(t.minVersion.rawValue))\n      certificates:\n"
                for c in t.certificates {
                    out += "        - {certificate: \(quoted(c.certificate)), key: \(quoted(c.key))"
                    if let n = c.names { out += ", names: \(list(n.map(quoted)))" }
                    out += "}\n"
                }
            }
        }
        out += "access:\n"
        if access.rules.isEmpty { out = String(out.dropLast()) + " []\n" }
        for r in access.rules {
            out += "  - name: \(quoted(r.name))\n    action: \(r.action.rawValue)\n"
            if let clients = r.clients { out += "    clients: \(list(clients.map { quoted($0.description) }))\n" }
            if let methods = r.methods { out += "    methods: \(list(methods.sorted().map(quoted)))\n" }
            if let ports = r.ports { out += "    ports: \(list(ports.sorted().map(String.init)))\n" }
            if let domains = r.domains { out += "    domains: \(list(domains.map { quoted($0.description) }))\n" }
            if let schemes = r.schemes { out += "    schemes: \(list(schemes.sorted().map(quoted)))\n" }
            if let prefixes = r.urlPrefixes { out += "    url_prefixes: \(list(prefixes.map(quoted)))\n" }
            if let patterns = r.urlPatterns { out += "    url_regex: \(list(patterns.map { quoted($0.source) }))\n" }
            if let headers = r.headers {
                out += "    headers:" + (headers.isEmpty ? " {}\n" : "\n")
                for h in headers { out += "      \(quoted(h.name)): \(h.pattern.map { quoted($0.source) } ?? "null")\n" }
            }
            if let d = r.destinations { out += "    destinations: \(list(d.map { quoted($0.description) }))\n" }
            if let users = r.users { out += "    users: \(list(users.sorted().map(quoted)))\n" }
            if let groups = r.groups { out += "    groups: \(list(groups.sorted().map(quoted)))\n" }
            if let a = r.anonymize { out += "    anonymize: \(a)\n" }
            if let t = r.time {
                let days = t.days.sorted().map { TimeWindow.dayNames[$0] }
                out += "    time: {days: \(list(days)), hours: \"\(hhmm(t.start))-\(hhmm(t.end))\", zone: \(quoted(t.zone))}\n"
            }
        }
        out += "connect:\n  allowed_ports: \(list(connect.allowedPorts.sorted().map(String.init)))\n"
        out += "proxy:\n  via: \(proxy.via)\n  via_name: \(quoted(proxy.viaName))\n  forwarded_for: \(proxy.forwardedFor.rawValue)\n  anonymize: \(proxy.anonymize)\n"
        if let ua = proxy.userAgent { out += "  user_agent: \(quoted(ua))\n" }
        out += "  forwarded: \(proxy.forwarded)\n"
        if !proxy.trustedProxies.isEmpty { out += "  trusted_proxies: \(list(proxy.trustedProxies.map { quoted($0.description) }))\n" }
        out += "limits:\n  request_line: \(limits.requestLine)\n  headers: \(limits.headers)\n  max_connections: \(limits.maxConnections)\n"
        if let b = limits.requestBody { out += "  request_body: \(b)\n" }
        out += "timeouts:\n  client_header: \(timeouts.clientHeader)\n  idle: \(timeouts.idle)\n"
        out += "  upstream_connect: \(timeouts.upstreamConnect)\n  upstream_response: \(timeouts.upstreamResponse)\n"
        out += "  tunnel_idle: \(timeouts.tunnelIdle)\n  drain: \(timeouts.drain)\n"
        out += "upstream_pool:\n  max_idle_per_host: \(upstreamPool.maxIdlePerHost)\n  idle_timeout: \(upstreamPool.idleTimeout)\n"
        out += "cache:\n  memory: \(cache.memory)\n  max_object: \(cache.maxObject)\n  heuristic_fraction: \(cache.heuristicFraction)\n  heuristic_max: \(cache.heuristicMax)\n  purge_clients: \(list(cache.purgeClients.map { quoted($0.description) }))\n"
        if let ttl = cache.defaultTTL { out += "  default_ttl: \(ttl)\n" }
        if let disk = cache.disk { out += "  disk:\n    path: \(quoted(disk.path))\n    size: \(disk.size)\n" }
        out += "compression:\n  enabled: \(compression.enabled)\n  codings: \(list(compression.codings.map(quoted)))\n  min_length: \(compression.minLength)\n  gzip_level: \(compression.gzipLevel)\n  brotli_level: \(compression.brotliLevel)\n"
        out += "dns:\n  cache_ttl: \(dns.cacheTTL)\n  negative_ttl: \(dns.negativeTTL)\n  max_entries: \(dns.maxEntries)\n"
        out += "logging:\n  level: \(logging.level.rawValue)\n  diagnostics: \(logging.diagnostics.rawValue)\n  access:"
        if logging.access.isEmpty { out += " []" }
        out += "\n"
        for a in logging.access {
            switch a.sink {
            case .stdout: out += "    - sink: stdout\n"
            case .file(let path): out += "    - sink: file\n      path: \(quoted(path))\n"
            case .syslog(let target, let facility):
                out += "    - sink: syslog\n      address: \(quoted(target.description))\n      facility: \(facility.rawValue)\n"
            }
            if let t = a.template { out += "      template: \(quoted(t.source))\n" } else { out += "      format: \(a.format.rawValue)\n" }
            if let r = a.rotation { out += "      rotate_size: \(ByteSize(bytes: r.maxBytes))\n      rotate_keep: \(r.keep)\n" }
        }
        if let admin {
            out += "admin:\n  address: \(quoted(admin.address.description))\n"
            if let token = admin.token { out += "  token: \(quoted(redactingSecrets ? "<redacted>" : token))\n" }
        }
        if !blocklists.isEmpty {
            out += "blocklists:\n"
            for b in blocklists { out += "  - name: \(quoted(b.name))\n    file: \(quoted(b.source))\n    format: \(b.format.rawValue)\n" }
        }
        if !upstreams.isEmpty {
            out += "upstreams:\n"
            for g in upstreams {
                out += "  - name: \(quoted(g.name))\n"
                switch g.algorithm {
                case .hash(let key, let method):
                    let k: String
                    switch key {
                    case .clientAddress: k = "client_address"
                    case .url: k = "url"
                    case .header(let h): k = "header:" + h
                    case .cookie(let c): k = "cookie:" + c
                    }
                    out += "    balance: hash\n    hash: {key: \(quoted(k)), method: \(method.rawValue)}\n"
                default: out += "    balance: \(g.algorithm.name)\n"
                }
                out += "    retries: \(g.retries)\n"
                if g.queueLimit > 0 {
                    out += "    queue: \(g.queueLimit)\n    queue_timeout: \(TimeSpan.milliseconds(Int64((g.queueTimeout * 1000).rounded())))\n"
                }
                if let t = g.tls {
                    out += "    tls: {insecure_skip_verify: \(t.insecureSkipVerify)"
                    if let ca = t.ca { out += ", ca: \(quoted(ca))" }
                    if let n = t.serverName { out += ", server_name: \(quoted(n))" }
                    out += "}\n"
                }
                let o = g.outlier
                out += "    outlier: {consecutive_failures: \(o.consecutiveFailures), base_ejection: \(TimeSpan.milliseconds(Int64((o.baseEjection * 1000).rounded()))), max_ejection: \(TimeSpan.milliseconds(Int64((o.maxEjection * 1000).rounded()))), max_ejected_percent: \(o.maxEjectedPercent)}\n"
                if let h = g.activeCheck {
                    let ms = { (s: Double) in TimeSpan.milliseconds(Int64((s * 1000).rounded())) }
                    out += "    health_check: {path: \(quoted(h.path)), interval: \(ms(h.interval)), timeout: \(ms(h.timeout)), rise: \(h.rise), fall: \(h.fall), expect: \"\(h.expectedStatuses.lowerBound)-\(h.expectedStatuses.upperBound)\"}\n"
                }
                out += "    servers:\n"
                for b in g.servers {
                    out += "      - {address: \(quoted(ListenAddress(host: b.host, port: b.port).description)), weight: \(b.weight)"
                    if let m = b.maxConnections { out += ", max_connections: \(m)" }
                    out += ", backup: \(b.backup)}\n"
                }
            }
        }
        if !routes.routes.isEmpty {
            out += "routes:\n"
            for r in routes.routes {
                out += "  - name: \(quoted(r.name))\n"
                if !r.hosts.isEmpty { out += "    hosts: \(list(r.hosts.map(quoted)))\n" }
                switch r.path {
                case .any: break
                case .prefix(let p): out += "    path_prefix: \(quoted(p))\n"
                case .exact(let p): out += "    path_exact: \(quoted(p))\n"
                case .regex(let p): out += "    path_regex: \(quoted(p.source))\n"
                }
                if let m = r.methods { out += "    methods: \(list(m.sorted().map(quoted)))\n" }
                if !r.headers.isEmpty {
                    out += "    headers:\n"
                    for h in r.headers { out += "      \(quoted(h.name)): \(h.pattern.map { quoted($0.source) } ?? "null")\n" }
                }
                switch r.action {
                case .upstream(let name): out += "    upstream: \(quoted(name))\n"
                case .redirect(let to, let status, _): out += "    redirect: {to: \(quoted(to)), status: \(status)}\n"
                case .respond(let status, let body, let type):
                    out += "    respond: {status: \(status), body: \(quoted(body)), content_type: \(quoted(type))}\n"
                }
                if let rp = r.replacePrefix { out += "    replace_prefix: \(quoted(rp))\n" }
                out += "    host_header: \(r.hostHeader.rawValue)\n"
                if let t = r.timeout { out += "    timeout: \(TimeSpan.milliseconds(Int64((t * 1000).rounded())))\n" }
                if let b = r.maxBody { out += "    max_body: \(ByteSize(bytes: b))\n" }
                if let rules = routeHeaderRules[r.name], !rules.isEmpty {
                    out += "    header_rules:\n" + Self.renderHeaderRules(rules, indent: "      ")
                }
            }
        }
        out += "filtering:\n  element_hiding: \(filtering.elementHiding)\n  public_suffix_list: \(quoted(filtering.publicSuffixList ?? ""))\n"
        if !headerRules.isEmpty { out += "header_rules:\n" + Self.renderHeaderRules(headerRules, indent: "  ") }
        if let dir = pages.directory { out += "pages:\n  directory: \(quoted(dir))\n" }
        if let auth {
            out += "auth:\n  realm: \(quoted(auth.realm))\n  users_file: \(quoted(auth.users.path))\n"
            if let g = auth.groups { out += "  groups_file: \(quoted(g.path))\n" }
            out += "  cache_ttl: \(auth.cacheTTL)\n"
        }
        out += "workers: \(workers.map(String.init) ?? "auto")\n"
        return out
    }

    /// `{request: {remove, replace, set, add}, response: …}` at `indent`.
    static func renderHeaderRules(_ all: [HeaderRule], indent: String) -> String {
        var out = ""
        for direction in HeaderRule.Direction.allCases {
            let rules = all.filter { $0.direction == direction }
            if rules.isEmpty { continue }
            out += "\(indent)\(direction.rawValue):\n"
            let removes = rules.filter { $0.action == .remove }.map { quoted($0.name) }
            if !removes.isEmpty { out += "\(indent)  remove: \(list(removes))\n" }
            let replaces = rules.compactMap { r -> String? in
                guard case .replace(let p, let with) = r.action else { return nil }
                return "\(indent)    - {name: \(quoted(r.name)), pattern: \(quoted(p.source)), with: \(quoted(with))}\n"
            }
            if !replaces.isEmpty { out += "\(indent)  replace:\n" + replaces.joined() }
            let sets = rules.compactMap { r -> String? in
                guard case .set(let v) = r.action else { return nil }
                return "\(indent)    \(quoted(r.name)): \(quoted(v))\n"
            }
            if !sets.isEmpty { out += "\(indent)  set:\n" + sets.joined() }
            let adds = rules.compactMap { r -> String? in
                guard case .add(let v) = r.action else { return nil }
                return "\(indent)    \(quoted(r.name)): \(quoted(v))\n"
            }
            if !adds.isEmpty { out += "\(indent)  add:\n" + adds.joined() }
        }
        return out
    }
}

/// Shown in the rendered file's first line.
let proximaConfigSchemaVersion = "configuration schema 1"

/// A YAML double-quoted scalar: JSON's string syntax is a subset of it, so the access log's
/// JSON escaper serves (colons, '#', quotes, control characters, any unicode).
private func quoted(_ s: String) -> String { AccessLogLineFormat.jsonString(s) }

private func list(_ items: [String]) -> String { "[" + items.joined(separator: ", ") + "]" }

private func hhmm(_ minutes: Int) -> String {
    let h = minutes / 60, m = minutes % 60
    return (h < 10 ? "0" : "") + String(h) + ":" + (m < 10 ? "0" : "") + String(m)
}
