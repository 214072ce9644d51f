import Foundation
import ProximaHTTP1
import ProximaPolicy
import Testing

@testable import ProximaConfig

@Suite("Header rules, filtering and page templates in the configuration")
struct FilteringConfigTests {
    static func directory(_ files: [String: String]) throws -> String {
        let dir = NSTemporaryDirectory() + "proxima-pages-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (name, text) in files { try text.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8) }
        return dir
    }

    @Test func everythingLoadsAndRoundTrips() throws {
        let dir = try Self.directory(["403.html": "<h1>$status</h1><p>${message}</p><p>$rule $list</p>", "default.json": "{\"e\":\"$reason\"}"])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = try ConfigLoader.load(yaml: """
            access:
              - name: private-browsing
                action: allow
                clients: [127.0.0.1]
                anonymize: true
            filtering:
              element_hiding: false
              public_suffix_list: ""
            header_rules:
              request:
                remove: [X-Client-Data, "Sec-CH-*"]
                replace:
                  - {name: User-Agent, pattern: "Chrome/[0-9.]+", with: "Chrome/130.0"}
                set: {DNT: "1"}
              response:
                remove: [Server, X-Powered-By]
            pages:
              directory: \(dir)
            """).get()
        #expect(c.access.rules[0].anonymize == true)
        #expect(!c.filtering.elementHiding && c.filtering.publicSuffixList == nil)
        #expect(c.headerRules.map(\.description) == [
            "request remove x-client-data", "request remove sec-ch-*", "request replace user-agent /Chrome/[0-9.]+/ → Chrome/130.0",
            "request set dnt: 1", "response remove server", "response remove x-powered-by",
        ])
        #expect(c.pages.template(status: 403, kind: "html") != nil && c.pages.template(status: 404, kind: "html") == nil)
        #expect(c.pages.template(status: 502, kind: "json")?.source == "{\"e\":\"$reason\"}")
        let rendered = c.pages.template(status: 403, kind: "html")!.render(["status": "403", "message": "<no>", "rule": "r", "list": "l"]) {
            $0.replacingOccurrences(of: "<", with: "&lt;")
        }
        #expect(rendered == "<h1>403</h1><p>&lt;no></p><p>r l</p>")
        #expect(try ConfigLoader.load(yaml: c.yaml()).get() == c, "\(c.yaml())")
    }

    @Test func mistakesNameTheKey() throws {
        #expect(issues("header_rules:\n  request:\n    remove: [\"bad name\"]\n").map(\.path) == ["header_rules.request.remove[0]"])
        #expect(issues("header_rules:\n  request:\n    remove: [Host]\n").first?.message.contains("managed by the proxy") == true)
        #expect(issues("header_rules:\n  request:\n    replace:\n      - {name: X, pattern: \"(\"}\n").map(\.path) == ["header_rules.request.replace[0].pattern"])
        #expect(issues("header_rules:\n  sideways:\n    remove: [X]\n").count == 1)
        #expect(issues("filtering:\n  public_suffix_list: /nonexistent/psl.dat\n").map(\.path) == ["filtering.public_suffix_list"])
        let dir = try Self.directory(["403.html": "$nonsense"])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(issues("pages:\n  directory: \(dir)\n").first?.message.contains("unknown placeholder $nonsense") == true)
        #expect(issues("pages:\n  directory: /nonexistent\n").map(\.path) == ["pages.directory"])
    }

    @Test func suffixListLoadedWhenBlockListsNeedIt() throws {
        let list = NSTemporaryDirectory() + "proxima-list-\(UInt32.random(in: 0...UInt32.max)).txt"
        try "||ads.example^\n".write(toFile: list, atomically: true, encoding: .utf8)
        defer { unlink(list) }
        let c = try ConfigLoader.load(yaml: "blocklists:\n  - file: \(list)\n").get()
        #expect(c.filtering.suffixes.ruleCount > 1000, "apt-get install publicsuffix")
        #expect(try ConfigLoader.load(yaml: "").get().filtering.suffixes.isEmpty)
        #expect(try ConfigLoader.load(yaml: "proxy:\n  anonymize: true\n").get().filtering.suffixes.ruleCount > 1000)
    }
}

@Suite("Reverse listeners, upstream groups and routes in the configuration")
struct ReverseConfigTests {
    static let yaml = """
        proxy:
          forwarded: true
          trusted_proxies: [10.0.0.0/8, "fd00::/8"]
        listeners:
          - name: web
            role: reverse
            address: 127.0.0.1:8080
        upstreams:
          - name: app
            balance: least_connections
            retries: 1
            outlier: {consecutive_failures: 3, base_ejection: 10s, max_ejection: 2m, max_ejected_percent: 34}
            health_check: {path: /healthz, interval: 2s, timeout: 500ms, rise: 3, fall: 2, expect: "200-299"}
            servers:
              - {address: 10.0.0.1:8081, weight: 3}
              - {address: "[fd00::2]:8081", max_connections: 50}
              - {address: 10.0.0.9:8081, backup: true}
          - name: sticky
            balance: hash
            hash: {key: "cookie:session", method: maglev}
            servers:
              - {address: 10.0.1.1:80}
        routes:
          - name: ping
            path_exact: /ping
            respond: {status: 200, body: "pong\\n"}
          - name: old
            path_prefix: /old/
            redirect: {to: "https://new.example/", status: 308}
          - name: api
            hosts: [api.example.com, "*.api.example.com"]
            path_prefix: /api/
            methods: [get, post]
            upstream: app
            replace_prefix: /
            host_header: upstream
            headers: {X-Canary: "^1$", X-Debug: null}
            header_rules:
              request: {set: {X-Route: api}, remove: [Cookie]}
              response: {add: {Strict-Transport-Security: max-age=63072000}, remove: [Server]}
          - name: rest
            upstream: sticky
        """

    @Test func loadsAndRoundTrips() throws {
        let c = try ConfigLoader.load(yaml: Self.yaml).get()
        #expect(c.listeners[0].role == .reverse)
        #expect(c.proxy.forwarded && c.proxy.trustedProxies.map(\.description) == ["10.0.0.0/8", "fd00::/8"])
        #expect(c.upstreams.map(\.name) == ["app", "sticky"])
        #expect(c.upstreams[0].algorithm == .leastConnections && c.upstreams[0].retries == 1)
        #expect(c.upstreams[0].outlier.consecutiveFailures == 3 && c.upstreams[0].outlier.baseEjection == 10 && c.upstreams[0].outlier.maxEjection == 120)
        #expect(c.upstreams[0].servers.map(\.weight) == [3, 1, 1] && c.upstreams[0].servers[1].host == "fd00::2" && c.upstreams[0].servers[2].backup)
        #expect(c.upstreams[1].algorithm == .hash(.cookie("session"), .maglev))
        let check = try #require(c.upstreams[0].activeCheck)
        #expect(check.path == "/healthz" && check.interval == 2 && check.timeout == 0.5 && check.rise == 3 && check.fall == 2 && check.expectedStatuses == 200...299)
        #expect(c.upstreams[1].activeCheck == nil)
        #expect(c.routes.routes.map(\.name) == ["ping", "old", "api", "rest"])
        #expect(c.routes.routes[2].methods == ["GET", "POST"] && c.routes.routes[2].hostHeader == .upstream)
        let canary: (String) -> String? = { ["x-canary": "1", "x-debug": ""][$0] }
        let chosen = c.routes.route(host: "x.api.example.com", pathAndQuery: "/api/v1", method: "GET", header: canary)
        #expect(chosen?.rewrite("/api/v1") == "/v1", "\(String(describing: chosen?.name)) \(String(describing: chosen?.replacePrefix))")
        #expect(c.routes.route(host: "x.api.example.com", pathAndQuery: "/api/v1", method: "GET")?.name == "rest")
        #expect(c.routes.routes[2].headers.map(\.name).sorted() == ["x-canary", "x-debug"], "\(c.routes.routes[2].headers.map { ($0.name, $0.pattern?.source) })")
        #expect(c.routeHeaderRules["api"]?.map(\.description) == [
            "request remove cookie", "request set x-route: api", "response remove server", "response add strict-transport-security: max-age=63072000",
        ])
        #expect(try ConfigLoader.load(yaml: c.yaml()).get() == c, "\(c.yaml())")
    }

    @Test func mistakes() throws {
        #expect(issues("listeners:\n  - role: reverse\n    address: 127.0.0.1:0\n").map(\.path) == ["routes"])
        #expect(issues("routes:\n  - upstream: nope\n").map(\.path) == ["routes[0].upstream"])
        #expect(issues("routes:\n  - {name: a, respond: {status: 200}}\n  - {name: a, respond: {status: 200}}\n").map(\.path) == ["routes[1].name"])
        #expect(issues("routes:\n  - {respond: {status: 200}, header_rules: {request: {set: {Host: x}}}}\n").map(\.path) == ["routes[0].header_rules.request.set"])
        #expect(issues("routes:\n  - {respond: {status: 200}, headers: {X-A: \"(\"}}\n").map(\.path) == ["routes[0].headers.X-A"])
        #expect(issues("routes:\n  - respond: {status: 200}\n    redirect: {to: \"/x\"}\n").map(\.path) == ["routes[0]"])
        #expect(issues("routes:\n  - path_exact: /a\n    replace_prefix: /\n    respond: {status: 200}\n").map(\.path) == ["routes[0].replace_prefix"])
        #expect(issues("upstreams:\n  - name: a\n    servers: []\n").map(\.path) == ["upstreams[0]"])
        #expect(issues("upstreams:\n  - name: a\n    servers:\n      - {address: 10.0.0.1}\n").count == 1)
        #expect(issues("upstreams:\n  - name: a\n    balance: random\n    servers:\n      - {address: 10.0.0.1:80}\n").map(\.path) == ["upstreams[0].balance"])
        #expect(issues("upstreams:\n  - name: a\n    health_check: {expect: \"300-200\"}\n    servers:\n      - {address: 10.0.0.1:80}\n").map(\.path) == ["upstreams[0].health_check.expect"])
        #expect(issues("upstreams:\n  - name: a\n    health_check: {interval: 1ms}\n    servers:\n      - {address: 10.0.0.1:80}\n").map(\.path) == ["upstreams[0].health_check.interval"])
    }
}

@Suite("Configuration: TLS, HTTP/2, HTTPS back-ends, queues")
struct TLSConfigTests {
    /// Real files are needed: the loader checks that certificate, key and CA files are readable.
    static func withFiles<T>(_ body: (String, String) throws -> T) rethrows -> T {
        let id = UUID().uuidString
        let cert = NSTemporaryDirectory() + "/proxima-cert-\(id).pem"
        let key = NSTemporaryDirectory() + "/proxima-key-\(id).pem"
        _ = FileManager.default.createFile(atPath: cert, contents: Data("not checked by the loader\n".utf8))
        _ = FileManager.default.createFile(atPath: key, contents: Data("not checked by the loader\n".utf8))
        defer {
            try? FileManager.default.removeItem(atPath: cert)
            try? FileManager.default.removeItem(atPath: key)
        }
        return try body(cert, key)
    }

    @Test func loadsAndRoundTrips() throws {
        try Self.withFiles { cert, key in
            let yaml = """
                listeners:
                  - name: https
                    role: reverse
                    address: 0.0.0.0:8443
                    tls:
                      min_version: "1.3"
                      certificates:
                        - {certificate: \(cert), key: \(key)}
                        - {certificate: \(cert), key: \(key), names: [API.example.com]}
                  - name: http
                    role: reverse
                    address: 0.0.0.0:8080
                    redirect_https: 8443
                  - name: plain
                    role: reverse
                    address: 0.0.0.0:8081
                    http2: false
                  - name: fwd
                    role: forward
                    address: 127.0.0.1:3128
                upstreams:
                  - name: secure
                    queue: 100
                    queue_timeout: 2s
                    tls: {ca: \(cert), server_name: app.internal}
                    servers:
                      - {address: "https://10.0.0.1", max_connections: 10}
                      - {address: "https://app2.internal:8443"}
                  - name: lab
                    tls: {insecure_skip_verify: true}
                    servers: [{address: 10.0.0.5:443}]
                routes:
                  - {name: all, upstream: secure}
                cache:
                  memory: 64MiB
                  max_object: 1MiB
                  default_ttl: 2m
                  purge_clients: [10.0.0.0/8]
                  disk: {path: /var/cache/proxima/, size: 10GiB}
                """
            let c = try ConfigLoader.load(yaml: yaml).get()
            let tls = try #require(c.listeners[0].tls)
            #expect(tls.minVersion == .tls13 && tls.certificates.count == 2 && tls.certificates[1].names == ["api.example.com"])
            #expect(c.listeners[0].speaksHTTP2 && c.listeners[1].redirectHTTPS == 8443 && !c.listeners[2].speaksHTTP2 && !c.listeners[3].speaksHTTP2)
            let secure = c.upstreams[0]
            #expect(secure.queueLimit == 100 && secure.queueTimeout == 2)
            #expect(secure.tls?.ca == cert && secure.tls?.serverName == "app.internal" && secure.tls?.insecureSkipVerify == false)
            #expect(secure.servers.map(\.port) == [443, 8443] && secure.servers[0].host == "10.0.0.1")
            #expect(c.upstreams[1].tls?.insecureSkipVerify == true)
            #expect(c.cache.enabled && c.cache.memory.bytes == 64 << 20 && c.cache.defaultTTL == .seconds(120) && c.cache.purgeClients.map(\.description) == ["10.0.0.0/8"])
            #expect(c.cache.disk == DiskCacheConfig(path: "/var/cache/proxima/", size: ByteSize(bytes: 10 << 30)))
            #expect(try ConfigLoader.load(yaml: c.yaml()).get() == c, "\(c.yaml())")
        }
    }

    @Test func mistakes() throws {
        #expect(issues("listeners:\n  - {role: reverse, address: 127.0.0.1:0, tls: {certificates: []}}\nroutes:\n  - {respond: {status: 200}}\n").map(\.path) == ["listeners[0].tls.certificates"])
        #expect(issues("listeners:\n  - {role: reverse, address: 127.0.0.1:0, tls: {certificates: [{certificate: /nonexistent.pem, key: /nonexistent.key}]}}\nroutes:\n  - {respond: {status: 200}}\n").map(\.path) == ["listeners[0].tls.certificates[0].certificate", "listeners[0].tls.certificates[0].key"])
        #expect(issues("listeners:\n  - {role: forward, address: 127.0.0.1:0, redirect_https: true}\n").map(\.path) == ["listeners[0].redirect_https"])
        #expect(issues("upstreams:\n  - name: a\n    servers:\n      - {address: \"https://10.0.0.1\"}\n      - {address: 10.0.0.2:80}\n").map(\.path) == ["upstreams[0].servers"])
        #expect(issues("upstreams:\n  - name: a\n    tls: {ca: /nonexistent.pem}\n    servers:\n      - {address: 10.0.0.2:443}\n").map(\.path) == ["upstreams[0].tls.ca"])
        #expect(issues("cache:\n  disk: {path: /x}\n").map(\.path) == ["cache.disk"])
        #expect(issues("cache:\n  disk: {size: 1GiB}\n").map(\.path) == ["cache.disk"])
        #expect(issues("cache:\n  disk: {path: /x, size: 64KiB}\n").map(\.path) == ["cache.disk.size"])
        #expect(issues("cache:\n  disk: /x\n").map(\.path) == ["cache.disk"])
        #expect(try ConfigLoader.load(yaml: "cache:\n  disk: {path: /x, size: 1GiB}\n").get().cache.enabled)
        #expect(issues("upstreams:\n  - name: a\n    queue: -1\n    servers:\n      - {address: 10.0.0.2:443}\n").map(\.path) == ["upstreams[0].queue"])
    }
}
