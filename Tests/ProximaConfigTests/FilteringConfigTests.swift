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
