import Foundation
import NIOCore
import ProximaBalance
import ProximaConfig
import ProximaPolicy
import ProximaServer
import ProximaTesting
import Testing

@Suite("Reverse proxy: TLS termination, HTTPS back-ends, HTTP/2")
struct TLSAndHTTP2Tests {
    static let anyone = AccessPolicy(rules: [AccessRule(name: "anyone", action: .allow, clients: [CIDR("0.0.0.0/0")!, CIDR("::/0")!])])

    /// A reverse listener (TLS when `tls` is given) sending everything to `origin`.
    static func site(_ c: inout ProximaConfiguration, origin: Int, tls: ListenerTLSConfig? = nil, http2: Bool? = nil) {
        var l = ListenerConfig(name: "web", role: .reverse, address: ListenAddress(host: "127.0.0.1", port: 0))
        l.tls = tls
        l.http2 = http2
        c.listeners = [l]
        c.access = anyone
        c.upstreams = [UpstreamGroupConfig(name: "app", servers: [Backend(host: "127.0.0.1", port: origin)])]
        c.routes = RouteTable([Route(name: "all", action: .upstream("app"))])
    }

    /// curl's status code, HTTP version and body for `url`, with `extra` options.
    static func curl(_ url: String, _ extra: [String]) async throws -> (code: String, version: String, body: String, error: String) {
        let marker = "\n--proxima-curl--"
        let r = try await run(curlPath, ["-sS", "--max-time", "20", "-w", "\(marker)%{http_code} %{http_version}"] + extra + [url])
        let parts = r.output.components(separatedBy: marker)
        let tail = (parts.last ?? "").split(separator: " ").map(String.init)
        return (tail.first ?? "", tail.count > 1 ? tail[1] : "", parts.dropLast().joined(separator: marker), r.error)
    }

    @Test func terminatesTLSChoosingTheCertificateBySNI() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let www = try pki.leaf("www", names: ["www.example", "*.shop.example"])
        let api = try pki.leaf("api", names: ["api.example"])
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        let tls = ListenerTLSConfig(certificates: [CertificateConfig(certificate: www.certificate, key: www.key), CertificateConfig(certificate: api.certificate, key: api.key)])
        try await ProxyHarness.withProxy({ Self.site(&$0, origin: origin.port, tls: tls) }) { proxy in
            func get(_ host: String, _ path: String, _ extra: [String] = []) async throws -> (code: String, version: String, body: String, error: String) {
                try await Self.curl(
                    "https://\(host):\(proxy.port)\(path)", ["--cacert", pki.caCertificate, "--resolve", "\(host):\(proxy.port):127.0.0.1"] + extra)
            }
            // curl checks the name: each host only works if its own certificate was chosen.
            let first = try await get("www.example", "/bytes/5")
            #expect(first.code == "200" && first.body == "abcde", "\(first)")
            #expect(first.version == "2", "ALPN offers h2 on reverse listeners")
            let second = try await get("api.example", "/bytes/3", ["--http1.1"])
            #expect(second.code == "200" && second.body == "abc" && second.version == "1.1", "\(second)")
            let wildcard = try await get("deals.shop.example", "/bytes/2")
            #expect(wildcard.code == "200", "\(wildcard)")
            // Many streams on one connection at once (curl multiplexes once ALPN said h2).
            let urls = (0..<20).map { "https://www.example:\(proxy.port)/bytes/\($0 + 1)" }
            let many = try await run(
                curlPath,
                ["-sS", "--cacert", pki.caCertificate, "--resolve", "www.example:\(proxy.port):127.0.0.1", "--parallel", "--parallel-max", "20",
                 "-w", "%{http_code} %{http_version} %{num_connects}\n"] + urls.flatMap { ["-o", "/dev/null", $0] })
            let lines = many.output.split(separator: "\n")
            #expect(lines.filter { $0.hasPrefix("200 2") }.count == 20, "\(many.output) \(many.error)")
            #expect(lines.filter { $0.hasSuffix(" 1") }.count <= 2, "the streams share connections: \(many.output)")
            // The back-end is told the client came over HTTPS.
            let headers = try await get("www.example", "/headers")
            #expect(headers.body.lowercased().contains("x-forwarded-proto: https"), "\(headers.body)")
            // An unknown name gets the first certificate, which curl then refuses for that name.
            let unknown = try await get("other.example", "/bytes/1")
            #expect(unknown.code == "000" && !unknown.error.isEmpty)
            let log = jsonRecords(await proxy.waitForAccessLog(count: 4))
            #expect(log.count >= 24)
            #expect(log.contains { ($0["version"] as? String) == "HTTP/2.0" } && log.contains { ($0["version"] as? String) == "HTTP/1.1" }, "\(log)")
        }
    }

    @Test func minimumVersionRefusesOlderClients() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let www = try pki.leaf("www", names: ["www.example"])
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        var tls = ListenerTLSConfig(certificates: [CertificateConfig(certificate: www.certificate, key: www.key)])
        tls.minVersion = .tls13
        try await ProxyHarness.withProxy({ Self.site(&$0, origin: origin.port, tls: tls) }) { proxy in
            let args = ["--cacert", pki.caCertificate, "--resolve", "www.example:\(proxy.port):127.0.0.1"]
            let url = "https://www.example:\(proxy.port)/bytes/1"
            let old = try await Self.curl(url, args + ["--tls-max", "1.2"])
            let new = try await Self.curl(url, args + ["--tlsv1.3"])
            #expect(old.code == "000" && new.code == "200", "\(old) \(new)")
        }
    }

    /// Certificates are read again on reload: new connections get the new one, and a
    /// connection opened before the reload keeps working.
    @Test func reloadSwapsCertificatesWithoutDroppingConnections() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let www = try pki.leaf("www", names: ["www.example"])
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        let tls = ListenerTLSConfig(certificates: [CertificateConfig(certificate: www.certificate, key: www.key)])
        try await ProxyHarness.withProxy({ Self.site(&$0, origin: origin.port, tls: tls) }) { proxy in
            let out = pki.directory + "/client.out"
            let flag = pki.directory + "/reloaded"
            let script = """
                import os, socket, ssl, sys, time
                port, ca, out, flag = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
                ctx = ssl.create_default_context(cafile=ca)
                def connect():
                    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="www.example")
                def get(s):
                    s.sendall(b"GET /bytes/3 HTTP/1.1\\r\\nHost: www.example\\r\\n\\r\\n")
                    data = b""
                    while not data.endswith(b"abc"):
                        chunk = s.recv(4096)
                        if not chunk: return "closed"
                        data += chunk
                    return data.split(b"\\r\\n")[0].decode()
                def say(line):
                    with open(out, "a") as f: f.write(line + "\\n")
                old = connect()
                say(old.getpeercert()["serialNumber"] + " " + get(old))
                deadline = time.time() + 20
                while not os.path.exists(flag) and time.time() < deadline: time.sleep(0.02)
                say(get(old))
                new = connect()
                say(new.getpeercert()["serialNumber"] + " " + get(new))
                """
            async let client = run("/usr/bin/python3", ["-c", script, String(proxy.port), pki.caCertificate, out, flag])
            #expect(await eventually(timeout: .seconds(60)) { (readFile(out) ?? "").contains("\n") })
            try pki.leaf("www", names: ["www.example"])
            var same = proxy.server.configuration
            same.listeners[0].address.port = proxy.port
            try await proxy.server.reload(same)
            writeFile(flag, "")
            let result = try await client
            let lines = (readFile(out) ?? "").split(separator: "\n").map(String.init)
            #expect(result.status == 0 && lines.count == 3, "\(lines) \(result.error)")
            if lines.count == 3 {
                let (before, after) = (lines[0].split(separator: " ")[0], lines[2].split(separator: " ")[0])
                #expect(lines[0].hasSuffix("HTTP/1.1 200 OK") && lines[1] == "HTTP/1.1 200 OK" && lines[2].hasSuffix("HTTP/1.1 200 OK"))
                #expect(before != after, "the new connection must see the renewed certificate")
            }
        }
    }

    @Test func badCertificateFilesStopTheStartAndAreRefusedOnReload() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let www = try pki.leaf("www", names: ["www.example"])
        let other = try pki.leaf("other", names: ["other.example"])
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        // A key that is not the certificate's.
        let mismatched = ListenerTLSConfig(certificates: [CertificateConfig(certificate: www.certificate, key: other.key)])
        await #expect(throws: ServerStartError.self) {
            let p = try await ProxyHarness.start { Self.site(&$0, origin: origin.port, tls: mismatched) }
            await p.stop()
        }
        let good = ListenerTLSConfig(certificates: [CertificateConfig(certificate: www.certificate, key: www.key)])
        try await ProxyHarness.withProxy({ Self.site(&$0, origin: origin.port, tls: good) }) { proxy in
            var broken = proxy.server.configuration
            broken.listeners[0].tls = mismatched
            await #expect(throws: ServerStartError.self) { try await proxy.server.reload(broken) }
            // Still serving with the certificate it had.
            let r = try await Self.curl(
                "https://www.example:\(proxy.port)/bytes/2", ["--cacert", pki.caCertificate, "--resolve", "www.example:\(proxy.port):127.0.0.1"])
            #expect(r.code == "200")
        }
    }

    @Test func plainListenerRedirectsToHTTPS() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ c in
            Self.site(&c, origin: origin.port)
            c.listeners[0].redirectHTTPS = 8443
        }) { proxy in
            let get = try #require(try await send(proxy, ["GET /a/b?c=1 HTTP/1.1\r\nHost: www.example:8080\r\n\r\n"]).replies.first)
            #expect(get.status == 301 && get.header("location") == "https://www.example:8443/a/b?c=1")
            let post = try #require(try await send(proxy, ["POST /form HTTP/1.1\r\nHost: www.example\r\nContent-Length: 0\r\n\r\n"]).replies.first)
            #expect(post.status == 308 && post.header("location") == "https://www.example:8443/form")
            #expect(origin.connectionsAccepted == 0)
        }
    }

    @Test func http2PriorKnowledgeOnPlainListeners() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ Self.site(&$0, origin: origin.port) }) { proxy in
            let base = "http://127.0.0.1:\(proxy.port)"
            let get = try await Self.curl(base + "/bytes/100000", ["--http2-prior-knowledge"])
            #expect(get.code == "200" && get.version == "2" && get.body.utf8.count == 100_000, "\(get.code) \(get.version) \(get.error)")
            // A request body without Content-Length (chunked towards the back-end) and one with.
            let echo = try await Self.curl(base + "/echo", ["--http2-prior-knowledge", "--data-binary", "hello over h2"])
            #expect(echo.code == "200" && echo.body == "hello over h2", "\(echo)")
            let bodyFile = makeTempPath("proxima-h2-body", ".bin")
            writeFile(bodyFile, String(repeating: "x", count: 200_000))
            defer { unlink(bodyFile) }
            let counted = try await Self.curl(base + "/count", ["--http2-prior-knowledge", "--data-binary", "@" + bodyFile])
            #expect(counted.code == "200" && counted.body == "200000", "\(counted.body)")
            // A chunked answer, re-framed as DATA frames.
            let chunked = try await Self.curl(base + "/chunked/5000", ["--http2-prior-knowledge"])
            #expect(chunked.code == "200" && chunked.body.utf8.count == 5000)
            // HTTP/1.1 still works on the same listener.
            let h1 = try await Self.curl(base + "/bytes/4", [])
            #expect(h1.code == "200" && h1.version == "1.1")
            // Routing and errors are the same as for HTTP/1.1.
            let missing = try await Self.curl(base + "/status/404", ["--http2-prior-knowledge"])
            #expect(missing.code == "404")
        }
    }

    @Test func http2CanBeTurnedOff() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ Self.site(&$0, origin: origin.port, http2: false) }) { proxy in
            let r = try await Self.curl("http://127.0.0.1:\(proxy.port)/bytes/1", ["--http2-prior-knowledge"])
            #expect(r.code != "200")
        }
    }

    /// Proxima as its own HTTPS back-end: a TLS reverse listener in front of the origin, and a
    /// second proxy whose upstream group reaches it over TLS.
    @Test func httpsBackEndsAreVerified() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let strangers = try TestPKI.make("Some Other CA")
        defer { strangers.remove() }
        // Named only: a connection by address must not accept it (NIOSSL would also accept a
        // certificate listing the address itself).
        let backend = try pki.leaf("backend", names: ["backend.internal"])
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        let tls = ListenerTLSConfig(certificates: [CertificateConfig(certificate: backend.certificate, key: backend.key)])
        try await ProxyHarness.withProxy({ Self.site(&$0, origin: origin.port, tls: tls) }) { inner in
            func front(_ upstreamTLS: UpstreamTLSConfig, check: Bool = false) async throws -> (Reply?, Bool) {
                try await ProxyHarness.withProxy({ c in
                    Self.site(&c, origin: inner.port)
                    c.upstreams[0].tls = upstreamTLS
                    if check {
                        var policy = ActiveCheckPolicy()
                        policy.path = "/bytes/1"
                        policy.interval = 0.05
                        policy.fall = 1
                        c.upstreams[0].activeCheck = policy
                    }
                }) { outer in
                    let reply = try await send(outer, ["GET /headers HTTP/1.1\r\nHost: www.example\r\n\r\n"]).replies.first
                    var down = false
                    if check {
                        down = await eventually { outer.server.upstreamStatus["app"]?.first?.up == false }
                    }
                    return (reply, down)
                }
            }
            var trusted = UpstreamTLSConfig()
            trusted.ca = pki.caCertificate
            // By address: the certificate does not name 127.0.0.1.
            let byAddress = try await front(trusted).0
            #expect(byAddress?.status == 502 && byAddress?.body.contains("TLS") == true, "\(String(describing: byAddress?.body))")
            // By name, sent in SNI and checked.
            var named = trusted
            named.serverName = "backend.internal"
            let ok = try await front(named).0
            #expect(ok?.status == 200 && ok?.body.lowercased().contains("x-forwarded-proto: https") == true, "\(String(describing: ok))")
            var wrongName = trusted
            wrongName.serverName = "elsewhere.internal"
            let refusedName = try await front(wrongName).0
            #expect(refusedName?.status == 502 && refusedName?.body.contains("TLS") == true, "\(String(describing: refusedName?.status)) \(String(describing: refusedName?.body))")
            // Another authority's certificate is refused, and active checks see the server down.
            var stranger = UpstreamTLSConfig()
            stranger.ca = strangers.caCertificate
            let (refused, down) = try await front(stranger, check: true)
            #expect(refused?.status == 502 || refused?.status == 503)
            #expect(down)
            var insecure = UpstreamTLSConfig()
            insecure.ca = strangers.caCertificate
            insecure.insecureSkipVerify = true
            let unverified = try await front(insecure).0
            #expect(unverified?.status == 200)
        }
    }
}
