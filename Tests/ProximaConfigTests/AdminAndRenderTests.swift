import Glibc
import ProximaPolicy
import ProximaTelemetry
import Testing

@testable import ProximaConfig

@Suite("Admin listener settings and the rendered running configuration")
struct AdminAndRenderTests {
    @Test func adminIsOffByDefaultAndLoopbackNeedsNoToken() throws {
        #expect(ProximaConfiguration.builtInDefault.admin == nil)
        let c = try ConfigLoader.load(yaml: "admin:\n  address: 127.0.0.1:9380\n").get()
        #expect(c.admin == AdminConfig(address: ListenAddress(host: "127.0.0.1", port: 9380)))
    }

    @Test func adminOnOtherAddressesNeedsAToken() throws {
        let found = issues("admin:\n  address: 0.0.0.0:9380\n")
        #expect(found.map(\.path) == ["admin.address"])
        #expect(found.first?.message.contains("admin.token") == true)
        let c = try ConfigLoader.load(yaml: "admin:\n  address: 0.0.0.0:9380\n  token: abcdefghijklmnopqrstuvwxyz\n").get()
        #expect(c.admin?.token == "abcdefghijklmnopqrstuvwxyz")
        #expect(issues("admin:\n  address: 127.0.0.1:9380\n  token: short\n").map(\.path) == ["admin.token"])
        #expect(issues("admin:\n  token: abcdefghijklmnopqrstuvwxyz\n").map(\.path) == ["admin"])
        #expect(issues("admin:\n  address: 127.0.0.1:3128\n").map(\.path) == ["admin.address"])
    }

    @Test func tokenFromAFile() throws {
        let path = "/tmp/proxima-token-\(UInt32.random(in: 0...UInt32.max))"
        let fd = fopen(path, "w")!
        fputs("  s3cr3t-token-from-a-file-0123\n", fd)
        fclose(fd)
        defer { unlink(path) }
        let c = try ConfigLoader.load(yaml: "admin:\n  address: 127.0.0.1:9380\n  token_file: \(path)\n").get()
        #expect(c.admin?.token == "s3cr3t-token-from-a-file-0123")
        #expect(issues("admin:\n  address: 127.0.0.1:9380\n  token_file: /nonexistent/x\n").map(\.path) == ["admin.token_file"])
    }

    /// What /config shows must be the configuration that runs: rendering and loading again gives
    /// back the same value, for the default and for a file that sets everything.
    @Test func renderedConfigurationLoadsBackUnchanged() throws {
        var full = try ConfigLoader.load(yaml: ConfigLoaderTests.completeExample).get()
        full.admin = AdminConfig(address: ListenAddress(host: "::1", port: 9380), token: "0123456789abcdef-token")
        full.listeners[0].name = "odd: name # with \"quotes\""
        full.workers = 3
        full.proxy.anonymize = true
        full.proxy.userAgent = "Mozilla/5.0 (X11)"
        full.listeners[1].anonymize = false
        full.logging.access.append(AccessLogConfig(sink: .syslog(SyslogTarget(transport: .tcp, host: "::1", port: 601), .local4), format: .json))
        full.logging.access.append(AccessLogConfig(sink: .syslog(SyslogTarget(transport: .unix, host: "/dev/log"), .daemon), format: .squid))
        full.logging.access.append(AccessLogConfig(
            sink: .file("/var/log/p.log"), format: .squid, template: try LogTemplate(#"$client "$url" \ $status"#),
            rotation: FileRotation(maxBytes: 100 << 20, keep: 7)))
        var noRules = ProximaConfiguration.builtInDefault
        noRules.access = AccessPolicy(rules: [])
        noRules.logging.access = []
        for config in [ProximaConfiguration.builtInDefault, full, noRules] {
            let text = config.yaml(redactingSecrets: false)
            let loaded = try ConfigLoader.load(yaml: text).get()
            #expect(loaded == config, "\(text)")
        }
        let shown = full.yaml()
        #expect(!shown.contains("0123456789abcdef-token"))
        #expect(shown.contains("token: \"<redacted>\""))
    }
}

@Suite("Syslog sinks in the configuration")
struct SyslogConfigTests {
    @Test func syslogSinksLoad() throws {
        let c = try ConfigLoader.load(yaml: """
            logging:
              access:
                - sink: syslog
                  address: udp://127.0.0.1:514
                - sink: syslog
                  address: tcp://logs.example:601
                  facility: local5
                  format: json
                - sink: syslog
                  address: unix:/dev/log
            """).get()
        #expect(c.logging.access == [
            AccessLogConfig(sink: .syslog(SyslogTarget(transport: .udp, host: "127.0.0.1", port: 514), .local0), format: .squid),
            AccessLogConfig(sink: .syslog(SyslogTarget(transport: .tcp, host: "logs.example", port: 601), .local5), format: .json),
            AccessLogConfig(sink: .syslog(SyslogTarget(transport: .unix, host: "/dev/log"), .local0), format: .squid),
        ])
    }

    @Test func syslogMistakesAreReported() {
        #expect(issues("logging:\n  access:\n    - sink: syslog\n").map(\.path) == ["logging.access[0]"])
        #expect(issues("logging:\n  access:\n    - sink: syslog\n      address: http://x:1\n").map(\.path) == ["logging.access[0].address"])
        #expect(issues("logging:\n  access:\n    - sink: syslog\n      address: udp://x:1\n      facility: local9\n").map(\.path) == ["logging.access[0].facility"])
        #expect(issues("logging:\n  access:\n    - sink: file\n      path: /tmp/x\n      facility: local1\n").map(\.path) == ["logging.access[0].facility"])
        #expect(issues("logging:\n  access:\n    - sink: stdout\n      address: udp://x:1\n").map(\.path) == ["logging.access[0].address"])
    }
}

@Suite("Templates and rotation in the configuration")
struct TemplateConfigTests {
    @Test func templatesAndRotationLoad() throws {
        let c = try ConfigLoader.load(yaml: """
            logging:
              access:
                - sink: file
                  path: /var/log/proxima.log
                  template: '$client [$time_iso8601] "$method $url" $status $request_id'
                  rotate_size: 100MiB
                  rotate_keep: 3
            """).get()
        let a = try #require(c.logging.access.first)
        #expect(a.template?.source == #"$client [$time_iso8601] "$method $url" $status $request_id"#)
        #expect(a.rotation == FileRotation(maxBytes: 100 << 20, keep: 3))
    }

    @Test func mistakesAreReported() {
        #expect(issues("logging:\n  access:\n    - sink: stdout\n      template: '$nope'\n").first?.message.contains("unknown field '$nope'") == true)
        #expect(issues("logging:\n  access:\n    - sink: stdout\n      template: '$status'\n      format: json\n").map(\.path) == ["logging.access[0].template"])
        #expect(issues("logging:\n  access:\n    - sink: stdout\n      rotate_size: 1MiB\n").map(\.path) == ["logging.access[0].rotate_size"])
        #expect(issues("logging:\n  access:\n    - sink: file\n      path: /x\n      rotate_keep: 2\n").map(\.path) == ["logging.access[0].rotate_keep"])
        #expect(issues("logging:\n  access:\n    - sink: file\n      path: /x\n      rotate_size: 1KiB\n").map(\.path) == ["logging.access[0].rotate_size"])
    }
}

@Suite("Named lists and the newer rule conditions")
struct ListsAndConditionsConfigTests {
    @Test func listsExpandInlineAndFromFiles() throws {
        let file = "/tmp/proxima-list-\(UInt32.random(in: 0...UInt32.max)).txt"
        let fd = fopen(file, "w")!
        fputs("# social networks\n.facebook.com\n\n*.tiktok.com   # short videos\n", fd)
        fclose(fd)
        defer { unlink(file) }
        let yaml = """
            access:
              - name: no-social
                action: deny
                domains: ["@social", example.org]
                time: {days: [mon, tue, wed, thu, fri], hours: "09:00-17:00", zone: Europe/Berlin}
              - name: no-exe
                action: deny
                schemes: [http]
                url_prefixes: [http://downloads.example/]
                url_regex: ['\\.exe$']
                headers: {User-Agent: '^curl/', X-Debug: null}
              - name: lan
                action: allow
                clients: ["@lan"]
                destinations: [0.0.0.0/0, "::/0"]
            lists:
              lan: [10.0.0.0/8, 192.168.0.0/16]
              social: {file: \(file)}
            """
        let c = try ConfigLoader.load(yaml: yaml).get()
        #expect(c.lists == ["lan": .inline(["10.0.0.0/8", "192.168.0.0/16"]), "social": .file(file)])
        #expect(c.access.rules[0].domains?.map(\.description) == [".facebook.com", "*.tiktok.com", "example.org"])
        #expect(c.access.rules[0].time?.zone == "Europe/Berlin")
        #expect(c.access.rules[1].headers?.map(\.name) == ["user-agent", "x-debug"] || c.access.rules[1].headers?.map(\.name) == ["x-debug", "user-agent"])
        #expect(c.access.rules[2].clients?.count == 2)
        // Rendered and loaded back: the same configuration.
        let again = try ConfigLoader.load(yaml: c.yaml(redactingSecrets: false)).get()
        #expect(again == c)
    }

    @Test func mistakesAreReportedWithTheirPlace() {
        #expect(issues("access:\n  - action: deny\n    domains: ['@nope']\n").first?.message.contains("unknown list '@nope'") == true)
        let badEntry = issues("lists:\n  l: [not-a-cidr]\naccess:\n  - action: allow\n    clients: ['@l']\n")
        #expect(badEntry.map(\.path) == ["lists.l[0]"])
        #expect(issues("lists:\n  l: {file: /nonexistent}\n").map(\.path) == ["lists.l.file"])
        #expect(issues("access:\n  - action: deny\n    url_regex: ['(']\n").map(\.path) == ["access[0].url_regex[0]"])
        #expect(issues("access:\n  - action: deny\n    schemes: [gopher]\n").map(\.path) == ["access[0].schemes[0]"])
        #expect(issues("access:\n  - action: deny\n    time: {hours: '9-5'}\n").map(\.path) == ["access[0].time.hours"])
        #expect(issues("access:\n  - action: deny\n    time: {zone: Mars/Base}\n").map(\.path) == ["access[0].time.zone"])
        #expect(issues("access:\n  - action: deny\n    time: {days: [someday]}\n").map(\.path) == ["access[0].time.days[0]"])
    }
}

@Suite("Authentication in the configuration")
struct AuthConfigTests {
    func tempFile(_ text: String) -> String {
        let path = "/tmp/proxima-auth-\(UInt32.random(in: 0...UInt32.max))"
        let fd = fopen(path, "w")!
        fputs(text, fd)
        fclose(fd)
        return path
    }

    @Test func authLoadsAndRoundTrips() throws {
        let users = tempFile("alice:$2y$05$ZvosaoewX4al0./kmIgiROifv7Psh6Zh4sf.owuehd0wXlzPHDFdW\n")
        let groups = tempFile("staff: alice\n")
        defer { unlink(users); unlink(groups) }
        let c = try ConfigLoader.load(yaml: """
            auth:
              realm: Office proxy
              users_file: \(users)
              groups_file: \(groups)
              cache_ttl: 2m
            access:
              - name: login
                action: authenticate
              - name: staff
                action: allow
                groups: [staff]
                users: ["*"]
            """).get()
        #expect(c.auth?.realm == "Office proxy")
        #expect(c.auth?.users.hashes.keys.sorted() == ["alice"])
        #expect(c.auth?.groups?.groupsByUser["alice"] == ["staff"])
        #expect(c.auth?.cacheTTL == .seconds(120))
        #expect(c.access.rules[0].action == .authenticate)
        #expect(c.access.usesIdentity)
        let shown = c.yaml()
        #expect(!shown.contains("$2y$"), "password hashes must not be shown")
        #expect(try ConfigLoader.load(yaml: shown).get() == c)
    }

    @Test func mistakes() {
        #expect(issues("access:\n  - action: allow\n    users: [alice]\n").map(\.path) == ["access[0]"])
        #expect(issues("access:\n  - action: authenticate\n").first?.message.contains("auth section") == true)
        let plain = tempFile("alice:secret\n")
        defer { unlink(plain) }
        let found = issues("auth:\n  users_file: \(plain)\n")
        #expect(found.map(\.path) == ["auth.users_file"])
        #expect(found.first?.message.contains("line 1") == true && found.first?.message.contains("plain-text") == true)
        #expect(issues("auth:\n  realm: x\n").map(\.path) == ["auth"])
    }
}
