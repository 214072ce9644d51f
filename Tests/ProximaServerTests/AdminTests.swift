import Foundation
import NIOCore
import ProximaConfig
import ProximaPolicy
import Logging
import ProximaServer
import ProximaTesting
import Testing

let adminToken = "test-token-0123456789abcdef"

/// Starts a proxy with an admin listener on an ephemeral loopback port.
func withAdminProxy<T>(
    token: String? = adminToken, configure: (inout ProximaConfiguration) -> Void = { _ in },
    _ body: (RunningProxy, Int) async throws -> T
) async throws -> T {
    try await ProxyHarness.withProxy({ c in
        c.admin = AdminConfig(address: ListenAddress(host: "127.0.0.1", port: 0), token: token)
        configure(&c)
    }) { proxy in
        let port = try #require(proxy.server.adminAddress?.port)
        return try await body(proxy, port)
    }
}

/// One admin request on its own connection: status code, headers and body.
func admin(
    _ port: Int, _ path: String, method: String = "GET", token: String? = adminToken
) async throws -> (status: Int, headers: [String: String], body: String) {
    let auth = token.map { "Authorization: Bearer \($0)\r\n" } ?? ""
    let reply = try await RawClient.exchange(
        port: port, send: ["\(method) \(path) HTTP/1.1\r\nHost: admin\r\n\(auth)Content-Length: 0\r\nConnection: close\r\n\r\n"])
    let r = try #require(parseReplies(reply.text, headRequest: method == "HEAD").first)
    var headers: [String: String] = [:]
    for name in ["content-type", "www-authenticate", "allow", "cache-control"] { headers[name] = r.header(name) }
    return (r.status, headers, r.body)
}

func metricValue(_ exposition: String, _ series: String) -> Double? {
    for line in exposition.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}

@Suite("Admin API: health, status, metrics, configuration, reload")
struct AdminTests {
    @Test func healthAndReadinessNeedNoToken() async throws {
        try await withAdminProxy { _, port in
            let h = try await admin(port, "/healthz", token: nil)
            #expect(h.status == 200 && h.body == "ok\n")
            let r = try await admin(port, "/readyz", token: nil)
            #expect(r.status == 200 && r.body == "ready\n")
            #expect(try await admin(port, "/healthz", method: "POST", token: nil).status == 405)
            #expect(try await admin(port, "/nothing-here").status == 404)
        }
    }

    @Test(arguments: ["/status", "/metrics", "/config"])
    func everythingElseNeedsTheToken(_ path: String) async throws {
        try await withAdminProxy { _, port in
            let none = try await admin(port, path, token: nil)
            #expect(none.status == 401)
            #expect(none.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
            #expect(try await admin(port, path, token: "wrong-token-0123456789abcdef").status == 401)
            #expect(try await admin(port, path, token: String(adminToken.dropLast())).status == 401)
            #expect(try await admin(port, path).status == 200)
        }
    }

    @Test func metricsCountRequestsBytesAndLatencyAndPassPromtool() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await withAdminProxy { proxy, port in
            for _ in 0..<3 {
                #expect(try await send(proxy, ["GET \(origin.url)/bytes/100 HTTP/1.1\r\nHost: x\r\n\r\n"]).replies.first?.status == 200)
            }
            #expect(try await send(proxy, ["GET \(origin.url)/status/503 HTTP/1.1\r\nHost: x\r\n\r\n"]).replies.first?.status == 503)
            #expect(try await send(proxy, ["GET /local HTTP/1.1\r\nHost: x\r\n\r\n"]).replies.first?.status == 400)
            // Connections close after the exchange; the counts are updated when the record is.
            #expect(try await eventually {
                let m = try await admin(port, "/metrics").body
                return metricValue(m, #"proxima_requests_total{listener="test",method="GET",code="4xx",result="TAG_NONE"}"#) == 1
            })
            let m = try await admin(port, "/metrics")
            #expect(m.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
            let text = m.body
            #expect(metricValue(text, #"proxima_requests_total{listener="test",method="GET",code="2xx",result="TCP_MISS"}"#) == 3)
            #expect(metricValue(text, #"proxima_requests_total{listener="test",method="GET",code="5xx",result="TCP_MISS"}"#) == 1)
            #expect(metricValue(text, #"proxima_request_duration_seconds_count{listener="test"}"#) == 5)
            #expect(metricValue(text, #"proxima_upstream_response_duration_seconds_count{listener="test"}"#) == 4)
            #expect((metricValue(text, #"proxima_sent_bytes_total{listener="test"}"#) ?? 0) > 300)
            #expect((metricValue(text, #"proxima_received_bytes_total{listener="test"}"#) ?? 0) > 100)
            // One pooled connection per event loop that served a request.
            #expect((1.0...4.0).contains(metricValue(text, #"proxima_upstream_idle_connections"#) ?? 0))
            #expect(metricValue(text, #"proxima_build_info{version="\#(proximaVersion)"}"#) == 1)

            // The exposition must satisfy Prometheus' own checker (CI installs it).
            let file = makeTempPath("proxima-metrics", ".txt")
            writeFile(file, text)
            defer { unlink(file) }
            let check = try await run("/bin/sh", ["-c", "command -v promtool >/dev/null || { echo 'promtool is not installed (apt-get install prometheus)'; exit 127; }; promtool check metrics < \(file)"])
            #expect(check.status == 0, "promtool: \(check.output) \(check.error)")
        }
    }

    @Test func denialsAreCountedByRule() async throws {
        try await withAdminProxy(configure: { c in
            c.access = AccessPolicy(rules: [
                AccessRule(name: "no-ads", action: .deny, domains: [DomainPattern(".ads.example")!]),
                AccessRule(name: "local", action: .allow, clients: [CIDR("127.0.0.0/8")!], ports: [80]),
            ])
        }) { proxy, port in
            for _ in 0..<2 { _ = try await send(proxy, ["GET http://x.ads.example/ HTTP/1.1\r\nHost: x\r\n\r\n"]) }
            _ = try await send(proxy, ["GET http://other.example:8080/ HTTP/1.1\r\nHost: x\r\n\r\n"])
            _ = try await send(proxy, ["CONNECT other.example:22 HTTP/1.1\r\nHost: x\r\n\r\n"])
            let m = try await admin(port, "/metrics").body
            #expect(metricValue(m, #"proxima_denied_total{listener="test",rule="access rule no-ads"}"#) == 2)
            #expect(metricValue(m, #"proxima_denied_total{listener="test",rule="access default deny"}"#) == 1)
            #expect(metricValue(m, #"proxima_denied_total{listener="test",rule="connect.allowed_ports"}"#) == 1)
        }
    }

    @Test func statusReportsListenersConnectionsAndTunnels() async throws {
        let echo = try await EchoServer.start()
        defer { Task { await echo.stop() } }
        try await withAdminProxy(configure: { $0.connect.allowedPorts = [echo.port] }) { proxy, port in
            // A tunnel held open while the status is read.
            let client = PersistentClient(port: proxy.port)
            try await client.open()
            let established = try await client.request("CONNECT 127.0.0.1:\(echo.port) HTTP/1.1\r\nHost: x\r\n\r\n", until: PersistentClient.oneResponse)
            #expect(established.contains(" 200 "))
            #expect(try await eventually {
                let s = try await admin(port, "/status")
                let json = try JSONSerialization.jsonObject(with: Data(s.body.utf8)) as? [String: Any]
                let listeners = json?["listeners"] as? [[String: Any]]
                return listeners?.first?["open_tunnels"] as? Int == 1 && json?["open_connections"] as? Int == 1
            })
            let m = try await admin(port, "/metrics").body
            #expect(metricValue(m, #"proxima_tunnels{listener="test"}"#) == 1)
            #expect(metricValue(m, #"proxima_client_connections{listener="test"}"#) == 1)
            await client.close()
            #expect(try await eventually {
                let s = try await admin(port, "/status")
                let json = try JSONSerialization.jsonObject(with: Data(s.body.utf8)) as? [String: Any]
                let l = (json?["listeners"] as? [[String: Any]])?.first
                return l?["open_tunnels"] as? Int == 0 && (l?["requests_by_status"] as? [String: Int])?["2xx"] == 1
            })
            let s = try await admin(port, "/status")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(s.body.utf8)) as? [String: Any])
            #expect(json["version"] as? String == proximaVersion)
            #expect(json["draining"] as? Bool == false)
            let l = try #require((json["listeners"] as? [[String: Any]])?.first)
            #expect(l["name"] as? String == "test")
            #expect(l["address"] as? String == "127.0.0.1:\(proxy.port)")
        }
    }

    @Test func configIsShownWithTheTokenRedacted() async throws {
        try await withAdminProxy { _, port in
            let c = try await admin(port, "/config")
            #expect(c.status == 200)
            #expect(c.body.contains("listeners:\n  - name: \"test\""))
            #expect(c.body.contains("token: \"<redacted>\""))
            #expect(!c.body.contains(adminToken))
        }
    }

    @Test func reloadRunsTheServersReloadAction() async throws {
        try await withAdminProxy { proxy, port in
            #expect(try await admin(port, "/reload", method: "POST").status == 501)
            #expect(try await admin(port, "/reload", method: "GET").status == 405)
            proxy.server.setReloadAction { ReloadOutcome(.refused, "file has 1 problem(s)") }
            let refused = try await admin(port, "/reload", method: "POST")
            #expect(refused.status == 422 && refused.body.contains("1 problem"))
            proxy.server.setReloadAction { ReloadOutcome(.reloaded, "reloaded") }
            #expect(try await admin(port, "/reload", method: "POST").status == 200)
        }
    }

    /// The admin socket is on loopback, where the proxy may forward: it must still not be
    /// reachable through the proxy, by address, by name or by CONNECT.
    @Test func adminIsNotReachableThroughTheProxy() async throws {
        try await withAdminProxy(configure: { c in c.connect.allowedPorts = [443] }) { proxy, port in
            for host in ["127.0.0.1", "localhost", "127.0.0.2"] {
                let r = try #require(try await send(proxy, ["GET http://\(host):\(port)/healthz HTTP/1.1\r\nHost: x\r\n\r\n"]).replies.first)
                #expect(r.status == 403, "\(host)")
                #expect(r.body.contains("admin API"))
            }
        }
        // Every port allowed for CONNECT, so only the admin rule can refuse it.
        try await withAdminProxy(configure: { $0.connect.allowedPorts = Set(1...65535) }) { proxy, port in
            let r = try #require(try await send(proxy, ["CONNECT 127.0.0.1:\(port) HTTP/1.1\r\nHost: x\r\n\r\n"]).replies.first)
            #expect(r.status == 403)
        }
    }

    @Test func readinessFailsWhileDraining() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await withAdminProxy { proxy, port in
            // A request in flight keeps the drain going while readiness is asked. The client gives
            // up after 15 s, which ends the drain; 3 s once let the drain end before /healthz was
            // asked on a loaded machine.
            let inFlight = Task { try await send(proxy, ["GET \(origin.url)/slow HTTP/1.1\r\nHost: x\r\n\r\n"], timeout: .seconds(15)) }
            #expect(await eventually { origin.connectionsOpen >= 1 })
            let drain = Task { await proxy.server.shutdown(drainTimeout: .seconds(60)) }
            #expect(await eventually { (try? await admin(port, "/readyz", token: nil).status) == 503 })
            let health = try await admin(port, "/healthz", token: nil)
            #expect(health.status == 200)
            _ = try? await inFlight.value
            await drain.value
        }
    }
}

@Suite("Request ids")
struct RequestIDTests {
    @Test func errorPagesAndLogsCarryTheRequestID() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            // A client's id is kept, on the error page, its header and the log.
            let denied = try #require(try await send(proxy, ["GET /x HTTP/1.1\r\nHost: x\r\nX-Request-ID: client-id-42\r\n\r\n"]).replies.first)
            #expect(denied.status == 400)
            #expect(denied.header("x-request-id") == "client-id-42")
            #expect(denied.body.contains("Request id: client-id-42"))
            // Without one (or with an unusable one), an id is made.
            let made = try #require(try await send(proxy, ["GET /y HTTP/1.1\r\nHost: x\r\nX-Request-ID: \"bad\"\r\n\r\n"]).replies.first)
            let id = try #require(made.header("x-request-id"))
            #expect(id.count == 29 && id != "\"bad\"")
            #expect(made.body.contains("Request id: \(id)"))
            // Forwarded requests get one in the JSON log too; the client's travels on unchanged.
            let ok = try #require(try await send(proxy, ["GET \(origin.url)/headers HTTP/1.1\r\nHost: x\r\nX-Request-ID: trace-7\r\n\r\n"]).replies.first)
            #expect(ok.body.lowercased().contains("x-request-id: trace-7"))
            _ = try await send(proxy, ["GET \(origin.url)/bytes/1 HTTP/1.1\r\nHost: x\r\n\r\n"])
            let records = jsonRecords(await proxy.waitForAccessLog(count: 4))
            let ids = records.compactMap { $0["request_id"] as? String }
            #expect(ids.count == 4)
            #expect(ids[0] == "client-id-42" && ids[1] == id && ids[2] == "trace-7")
            #expect(Set(ids).count == 4)
        }
    }
}

@Suite("Diagnostic log as JSON lines")
struct DiagnosticLogTests {
    final class Lines: @unchecked Sendable {
        let lock = NSLock()
        var lines: [String] = []
        func add(_ l: String) { lock.lock(); lines.append(l); lock.unlock() }
    }

    @Test func oneObjectPerLineWithLevelAndMetadata() throws {
        let sink = Lines()
        var handler = JSONLogHandler(label: "proxima", output: { sink.add($0) })
        handler.logLevel = .notice
        handler[metadataKey: "listener"] = "fwd"
        var logger = Logger(label: "proxima", factory: { _ in handler })
        logger.logLevel = .notice
        logger.info("not shown")
        logger.warning("upstream \"slow\"\nsecond line", metadata: ["host": "example.com"])
        #expect(sink.lines.count == 1)
        let line = try #require(sink.lines.first)
        #expect(line.hasSuffix("}\n") && line.filter { $0 == "\n" }.count == 1)
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(obj["level"] as? String == "warning")
        #expect(obj["message"] as? String == "upstream \"slow\"\nsecond line")
        #expect(obj["host"] as? String == "example.com")
        #expect(obj["listener"] as? String == "fwd")
        #expect(obj["label"] as? String == "proxima")
        #expect((obj["time"] as? String)?.hasSuffix("Z") == true)
    }
}

/// The text of the element with `id` in a dumped DOM.
func elementText(_ dom: String, id: String) -> String? {
    guard let r = dom.range(of: "id=\"\(id)\">") else { return nil }
    return String(dom[r.upperBound...].prefix { $0 != "<" })
}

func chromiumPath() -> String? {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].first { FileManager.default.isExecutableFile(atPath: $0) }
}

@Suite("Dashboard in a real browser")
struct DashboardTests {
    @Test func headlessChromiumShowsTheNumbersOfStatus() async throws {
        let chromium = try #require(chromiumPath(), "headless Chromium is needed (apt-get install chromium; .ci/run does)")
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await withAdminProxy(configure: { c in
            c.access = AccessPolicy(rules: [
                AccessRule(name: "no-ads", action: .deny, domains: [DomainPattern(".blocked.example")!]),
                AccessRule(name: "local", action: .allow, clients: [CIDR("127.0.0.0/8")!]),
            ])
        }) { proxy, port in
            for _ in 0..<6 { _ = try await send(proxy, ["GET \(origin.url)/bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n"]) }
            for _ in 0..<3 { _ = try await send(proxy, ["GET \(origin.url)/status/404 HTTP/1.1\r\nHost: x\r\n\r\n"]) }
            for _ in 0..<2 { _ = try await send(proxy, ["GET http://ads.blocked.example/x.js HTTP/1.1\r\nHost: x\r\n\r\n"]) }
            #expect(try await eventually {
                let s = try await admin(port, "/status").body
                return (try JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any])?["requests"] as? Int == 11
            })
            let page = try await admin(port, "/", token: nil)
            #expect(page.status == 200 && page.headers["content-type"]?.hasPrefix("text/html") == true)
            for external in ["<script src", "<link", "src=\"http", "url(http", "@import"] {
                #expect(!page.body.contains(external), "the page loads an external asset (\(external))")
            }

            let url = "http://127.0.0.1:\(port)/#token=\(adminToken)"
            let flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars", "--no-first-run",
                         "--user-data-dir=\(makeTempPath("proxima-chromium", ""))", "--virtual-time-budget=5000"]
            let dom = try await withBrowser { try await run(chromium, flags + ["--dump-dom", url]).output }
            let status = try #require(try JSONSerialization.jsonObject(with: Data(try await admin(port, "/status").body.utf8)) as? [String: Any])
            #expect(dom.contains("data-loaded=\"yes\""), "the page did not render /status")
            #expect(elementText(dom, id: "total-requests") == "11")
            #expect(elementText(dom, id: "total-requests") == String(status["requests"] as? Int ?? -1))
            let byStatus = try #require(status["requests_by_status"] as? [String: Int])
            #expect(byStatus["2xx"] == 6 && byStatus["4xx"] == 5)
            for cls in ["2xx", "4xx", "5xx"] {
                #expect(elementText(dom, id: "status-\(cls)") == String(byStatus[cls] ?? -1), "\(cls)")
            }
            #expect(elementText(dom, id: "open-connections") == String(status["open_connections"] as? Int ?? -1))
            let latency = try #require(status["latency_ms"] as? [String: Any])
            #expect(elementText(dom, id: "p50") == String(format: "%.3f", latency["p50"] as? Double ?? -1))
            #expect(elementText(dom, id: "p99") == String(format: "%.3f", latency["p99"] as? Double ?? -1))
            #expect(dom.contains("data-host=\"127.0.0.1\" data-count=\"9\""))
            #expect(dom.contains("data-host=\"ads.blocked.example\" data-count=\"2\""))
            #expect(elementText(dom, id: "version") == proximaVersion)

            // The screenshot is kept with the build products for a look after the run.
            let shotDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent(".build/test-artifacts").path
            try FileManager.default.createDirectory(atPath: shotDir, withIntermediateDirectories: true)
            let shot = shotDir + "/dashboard.png"
            unlink(shot)
            _ = try await withBrowser { try await run(chromium, flags + ["--window-size=1400,1000", "--screenshot=\(shot)", url]) }
            let png = try #require(FileManager.default.contents(atPath: shot))
            #expect(png.count > 20_000 && png.starts(with: [0x89, 0x50, 0x4E, 0x47]))
        }
    }
}

@Suite("Access rules on real requests: URL, scheme, header conditions")
struct RuleConditionsThroughTheProxyTests {
    @Test func urlAndHeaderConditionsSeeTheRequest() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ c in
            c.access = AccessPolicy(rules: [
                AccessRule(name: "no-exe", action: .deny, schemes: ["http"], urlPatterns: [try! URLPattern(#"\.exe$"#)]),
                AccessRule(name: "no-curl-debug", action: .deny, headers: [HeaderCondition(name: "user-agent", pattern: try! URLPattern("^curl/")), HeaderCondition(name: "x-debug")]),
                AccessRule(name: "local", action: .allow, clients: [CIDR("127.0.0.0/8")!]),
            ])
        }) { proxy in
            func status(_ path: String, _ extra: String = "") async throws -> Int? {
                try await send(proxy, ["GET \(origin.url)\(path) HTTP/1.1\r\nHost: x\r\n\(extra)\r\n"]).replies.first?.status
            }
            #expect(try await status("/bytes/5") == 200)
            #expect(try await status("/setup.exe") == 403)
            #expect(try await status("/bytes/5", "User-Agent: curl/8\r\nX-Debug: 1\r\n") == 403)
            #expect(try await status("/bytes/5", "User-Agent: curl/8\r\n") == 200)
            let denied = try #require(try await send(proxy, ["GET \(origin.url)/a.exe HTTP/1.1\r\nHost: x\r\n\r\n"]).replies.first)
            #expect(denied.body.contains("no-exe"))
        }
    }
}
