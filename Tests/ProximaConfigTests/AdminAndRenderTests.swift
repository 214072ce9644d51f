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
