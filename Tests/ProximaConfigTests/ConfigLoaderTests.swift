import ProximaPolicy
import Testing

@testable import ProximaConfig

func issues(_ yaml: String) -> [ConfigIssue] {
    switch ConfigLoader.load(yaml: yaml) {
    case .success: return []
    case .failure(let e): return e.issues
    }
}

@Suite("Configuration loading")
struct ConfigLoaderTests {
    @Test func emptyFileIsTheBuiltInDefault() throws {
        let c = try ConfigLoader.load(yaml: "").get()
        #expect(c == ProximaConfiguration.builtInDefault)
        #expect(c.listeners.first?.address == ListenAddress(host: "127.0.0.1", port: 3128))
        #expect(c.connect.allowedPorts == [443])
        #expect(c.limits.requestLine.bytes == 8192)
        #expect(c.limits.headers.bytes == 65536)
        #expect(c.limits.maxConnections == 10_000)
        #expect(c.timeouts.clientHeader == .seconds(30))
        #expect(c.timeouts.idle == .seconds(60))
        #expect(c.timeouts.upstreamConnect == .seconds(10))
        #expect(c.timeouts.upstreamResponse == .seconds(60))
    }

    @Test func defaultPolicyAllowsOnlyLocalAndPrivateClients() {
        let p = ProximaConfiguration.builtInDefault.access
        func allowed(_ ip: String) -> Bool {
            p.evaluate(AccessRequest(client: IPAddress(ip)!, method: "GET", host: "example.com", port: 80)).allowed
        }
        for ip in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "::1", "fd00::1"] { #expect(allowed(ip), "\(ip)") }
        for ip in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "1.1.1.1"] { #expect(!allowed(ip), "\(ip)") }
    }

    static let completeExample = """
        listeners:
          - name: office
            role: forward
            address: 0.0.0.0:3128
          - role: forward
            address: "[::1]:3129"
        access:
          - name: no-social
            action: deny
            domains: [.facebook.com, "*.tiktok.com"]
          - name: office-lan
            action: allow
            clients: [192.168.0.0/16, "fd00::/8"]
            methods: [GET, HEAD, POST, CONNECT]
            ports: [80, 443, 8080]
        connect:
          allowed_ports: [443, 8443]
        proxy:
          via: true
          via_name: gw1
          forwarded_for: remove
        limits:
          request_line: 16KiB
          headers: 128KiB
          max_connections: 20000
        timeouts:
          client_header: 15s
          idle: 2m
          upstream_connect: 5s
          upstream_response: 90s
          tunnel_idle: 1h
          drain: 10s
        upstream_pool:
          max_idle_per_host: 8
          idle_timeout: 30s
        dns:
          cache_ttl: 5m
          negative_ttl: 2s
          max_entries: 5000
        logging:
          level: notice
          access:
            - sink: stdout
              format: json
            - sink: file
              path: /var/log/proxima/access.log
              format: squid
        """

    @Test func completeExampleLoads() throws {
        let c = try ConfigLoader.load(yaml: Self.completeExample).get()
        #expect(c.listeners.count == 2)
        #expect(c.listeners[0].name == "office")
        #expect(c.listeners[1].name == "forward-1")
        #expect(c.listeners[1].address == ListenAddress(host: "::1", port: 3129))
        #expect(c.access.rules.count == 2)
        #expect(c.access.rules[0].domains?.count == 2)
        #expect(c.access.rules[1].methods == ["GET", "HEAD", "POST", "CONNECT"])
        #expect(c.connect.allowedPorts == [443, 8443])
        #expect(c.proxy.viaName == "gw1")
        #expect(c.proxy.forwardedFor == .remove)
        #expect(c.limits.requestLine.bytes == 16384)
        #expect(c.limits.maxConnections == 20000)
        #expect(c.timeouts.idle == .seconds(120))
        #expect(c.timeouts.tunnelIdle == .seconds(3600))
        #expect(c.upstreamPool.maxIdlePerHost == 8)
        #expect(c.dns.cacheTTL == .seconds(300))
        #expect(c.logging.level == .notice)
        #expect(c.logging.access == [
            AccessLogConfig(sink: .stdout, format: .json),
            AccessLogConfig(sink: .file("/var/log/proxima/access.log"), format: .squid),
        ])
    }

    @Test func portOutOfRangeNamesPathAndLine() {
        let found = issues("""
            listeners:
              - role: forward
                address: 127.0.0.1:99999
            """)
        #expect(found.map(\.description) == ["listeners[0].address: port 99999 is out of range (0-65535) (line 3)"])
    }

    @Test func everyProblemIsReported() {
        let found = issues("""
            listeners:
              - role: sideways
                address: nowhere
            timeouts:
              idle: soon
            limits:
              headers: lots
            colour: blue
            """)
        let text = found.map(\.description)
        #expect(found.count == 5, "\(text)")
        #expect(text.contains { $0.hasPrefix("listeners[0].role: 'sideways' is not one of: forward, reverse (line 2)") })
        #expect(text.contains { $0.hasPrefix("listeners[0].address: 'nowhere' is not host:port") && $0.hasSuffix("(line 3)") })
        #expect(text.contains("timeouts.idle: 'soon' is not a duration (examples: 500ms, 10s, 5m, 1h) (line 5)"))
        #expect(text.contains { $0.hasPrefix("limits.headers:") && $0.hasSuffix("(line 7)") })
        #expect(text.contains { $0.hasPrefix("colour: unknown key 'colour'") && $0.hasSuffix("(line 8)") })
    }

    @Test func unknownNestedKeysAreErrors() {
        let found = issues("timeouts:\n  idel: 5s\n")
        #expect(found.count == 1)
        #expect(found[0].path == "timeouts.idel")
        #expect(found[0].line == 2)
    }

    @Test func badAccessRules() {
        let found = issues("""
            access:
              - action: maybe
                clients: [10.0.0.0/33, bogus]
              - clients: [10.0.0.0/8]
            """)
        let paths = found.map(\.path)
        #expect(paths.contains("access[0].action"))
        #expect(paths.contains("access[0].clients[0]"))
        #expect(paths.contains("access[0].clients[1]"))
        #expect(paths.contains("access[1]"))
    }

    @Test func yamlSyntaxErrorHasLine() {
        let found = issues("listeners:\n  - role: forward\n   address: [\n")
        #expect(found.count == 1)
        #expect(found[0].line != nil)
        #expect(found[0].message.hasPrefix("YAML syntax error"))
    }

    @Test func duplicateListenerAddresses() {
        let found = issues("""
            listeners:
              - {role: forward, address: "127.0.0.1:3128"}
              - {role: forward, address: "127.0.0.1:3128"}
            """)
        #expect(found.map(\.description) == ["listeners[1].address: 127.0.0.1:3128 is used by an earlier listener (line 3)"])
    }

    @Test func workers() throws {
        #expect(try ConfigLoader.load(yaml: "workers: 4").get().workers == 4)
        #expect(try ConfigLoader.load(yaml: "workers: auto").get().workers == nil)
        #expect(issues("workers: lots").map(\.description) == ["workers: 'lots' is not auto or a number of threads (1-1024) (line 1)"])
        #expect(issues("workers: 0").count == 1)
    }

    @Test func fileSinkNeedsPath() {
        #expect(issues("logging:\n  access:\n    - sink: file\n").map(\.path) == ["logging.access[0]"])
    }
}

@Suite("Durations, sizes and addresses")
struct UnitTests {
    @Test(arguments: [("10s", 10_000), ("500ms", 500), ("5m", 300_000), ("1h", 3_600_000), ("2d", 172_800_000), ("7", 7000)])
    func durations(_ c: (String, Int64)) {
        #expect(TimeSpan.parse(c.0)?.nanoseconds == c.1 * 1_000_000)
    }

    @Test(arguments: ["", "s", "10x", "-5s", "1.5s", "99999999999999999999s"])
    func badDurations(_ s: String) {
        #expect(TimeSpan.parse(s) == nil)
    }

    @Test(arguments: [("64MiB", 64 << 20), ("8KiB", 8192), ("1GiB", 1 << 30), ("10KB", 10_000), ("5MB", 5_000_000), ("8k", 8192), ("512", 512), ("512B", 512)])
    func sizes(_ c: (String, Int)) {
        #expect(ByteSize.parse(c.0)?.bytes == c.1)
    }

    @Test(arguments: ["", "MiB", "1TiB", "-1", "1.5MiB"])
    func badSizes(_ s: String) {
        #expect(ByteSize.parse(s) == nil)
    }

    @Test func listenAddresses() throws {
        #expect(try ListenAddress.parse("127.0.0.1:3128").get() == ListenAddress(host: "127.0.0.1", port: 3128))
        #expect(try ListenAddress.parse("[::1]:80").get() == ListenAddress(host: "::1", port: 80))
        #expect(throws: ListenAddress.Failure.portOutOfRange("70000")) { try ListenAddress.parse("a:70000").get() }
        #expect(throws: ListenAddress.Failure.syntax) { try ListenAddress.parse("::1:80").get() }
        #expect(throws: ListenAddress.Failure.syntax) { try ListenAddress.parse("3128").get() }
    }

    @Test func unitsPrintBack() {
        #expect(TimeSpan.seconds(90).description == "90s")
        #expect(TimeSpan.seconds(120).description == "2m")
        #expect(ByteSize(bytes: 64 << 20).description == "64MiB")
    }
}
