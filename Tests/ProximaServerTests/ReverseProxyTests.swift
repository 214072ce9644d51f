import Foundation
import NIOCore
import NIOPosix
import Synchronization
import ProximaAuth
import ProximaBalance
import ProximaConfig
import ProximaHTTP1
import ProximaPolicy
import ProximaTesting
import Testing

@Suite("Reverse proxy: routes, balancing, failover")
struct ReverseProxyTests {
    /// A reverse listener in front of `origins`, with the routes of a small site.
    static func configure(_ c: inout ProximaConfiguration, _ origins: [TestOrigin], algorithm: BalanceAlgorithm = .roundRobin) {
        c.listeners = [ListenerConfig(name: "web", role: .reverse, address: ListenAddress(host: "127.0.0.1", port: 0))]
        c.access = AccessPolicy(rules: [AccessRule(name: "anyone", action: .allow, clients: [CIDR("0.0.0.0/0")!, CIDR("::/0")!])])
        var group = UpstreamGroupConfig(name: "app", servers: origins.map { Backend(host: "127.0.0.1", port: $0.port) })
        group.algorithm = algorithm
        group.retries = origins.count
        c.upstreams = [group]
        var ping = Route(name: "ping", action: .respond(status: 200, body: "pong\n", contentType: "text/plain"))
        ping.path = .exact("/ping")
        var old = Route(name: "old", action: .redirect(to: "https://new.example/", status: 301, keepPath: true))
        old.path = .prefix("/old/")
        var api = Route(name: "api", action: .upstream("app"))
        api.hosts = ["api.example"]
        api.path = .prefix("/api/")
        api.replacePrefix = "/"
        var site = Route(name: "site", action: .upstream("app"))
        site.hosts = ["www.example", "*.example"]
        c.routes = RouteTable([ping, old, api, site])
    }

    /// `count` GETs one after another: how many failed, and which origin served the others.
    static func getMany(_ proxy: RunningProxy, _ count: Int) async throws -> (failures: Int, servedBy: [String: Int]) {
        var failures = 0
        var servedBy: [String: Int] = [:]
        for _ in 0..<count {
            let reply = try await send(proxy, ["GET /bytes/100 HTTP/1.1\r\nHost: www.example\r\nConnection: close\r\n\r\n"]).replies.first
            guard let reply, reply.status == 200, reply.body.utf8.count == 100 else {
                failures += 1
                continue
            }
            servedBy[reply.header("x-served-by") ?? "?", default: 0] += 1
        }
        return (failures, servedBy)
    }

    static func startOrigins(_ n: Int) async throws -> [TestOrigin] {
        var origins: [TestOrigin] = []
        for _ in 0..<n { origins.append(try await TestOrigin.start()) }
        return origins
    }

    @Test func routesRedirectsAndFixedAnswers() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ Self.configure(&$0, [origin]) }) { proxy in
            func ask(_ host: String, _ path: String, _ extra: String = "") async throws -> Reply {
                try #require(try await send(proxy, ["GET \(path) HTTP/1.1\r\nHost: \(host)\r\n\(extra)\r\n"]).replies.first)
            }
            let ping = try await ask("anything", "/ping")
            #expect(ping.status == 200 && ping.body == "pong\n")
            let old = try await ask("www.example", "/old/page?id=3")
            #expect(old.status == 301 && old.header("location") == "https://new.example/page?id=3")
            // The API prefix is replaced before the request goes on; the client's Host is kept.
            let api = try await ask("api.example", "/api/headers", "X-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n")
            #expect(api.status == 200 && api.body.hasPrefix("GET /headers HTTP/1.1"), "\(api.body)")
            let seen = api.body.lowercased()
            #expect(seen.contains("host: api.example\n") && seen.contains("x-forwarded-host: api.example\n"))
            #expect(seen.contains("x-forwarded-proto: http\n") && !seen.contains("evil") && seen.contains("x-forwarded-for: 127.0.0.1"))
            #expect(try await ask("shop.example", "/bytes/5").body == "abcde")
            // The request id: the client's kept when acceptable, else one is made; the log has it.
            let kept = try await ask("www.example", "/headers", "X-Request-ID: abc-123\r\n")
            #expect(kept.body.lowercased().components(separatedBy: "x-request-id:").count == 2 && kept.body.contains("abc-123"))
            let made = try await ask("www.example", "/headers", "X-Request-ID: bad\"id\r\n")
            let madeID = made.body.lowercased().components(separatedBy: "x-request-id: ").dropFirst().first?.prefix { $0 != "\n" } ?? ""
            #expect(!madeID.isEmpty && !made.body.contains("bad\"id"), "\(made.body)")
            let ids = jsonRecords(await proxy.waitForAccessLog(count: 6)).compactMap { $0["request_id"] as? String }
            #expect(ids.contains("abc-123") && ids.contains(String(madeID)), "\(ids)")
            let none = try await ask("unknown.test", "/x")
            #expect(none.status == 404 && none.body.contains("No route"))
            // Absolute-form requests are for forward proxies.
            let absolute = try await ask("www.example", "http://www.example/bytes/1")
            #expect(absolute.status == 400)
        }
    }

    /// A route's own header rules apply on top of the global ones, to its requests only.
    @Test func routesCarryTheirOwnHeaderRules() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ c in
            Self.configure(&c, [origin])
            c.headerRules = [HeaderRule(direction: .response, name: "X-Powered-By", action: .remove)]
            c.routeHeaderRules["api"] = [
                HeaderRule(direction: .request, name: "X-Route", action: .set("api")),
                HeaderRule(direction: .request, name: "Cookie", action: .remove),
                HeaderRule(direction: .response, name: "Server", action: .remove),
                HeaderRule(direction: .response, name: "Strict-Transport-Security", action: .add("max-age=63072000")),
            ]
        }) { proxy in
            func ask(_ host: String, _ path: String) async throws -> Reply {
                try #require(try await send(proxy, ["GET \(path) HTTP/1.1\r\nHost: \(host)\r\nCookie: session=1\r\n\r\n"]).replies.first)
            }
            let api = try await ask("api.example", "/api/headers")
            #expect(api.body.contains("X-Route: api") && !api.body.lowercased().contains("cookie"), "\(api.body)")
            #expect(api.header("strict-transport-security") == "max-age=63072000")
            let apiPage = try await ask("api.example", "/api/html")
            #expect(apiPage.header("server") == nil && apiPage.header("x-powered-by") == nil)
            let site = try await ask("www.example", "/headers")
            #expect(!site.body.contains("X-Route") && site.body.lowercased().contains("cookie: session=1"))
            #expect(site.header("strict-transport-security") == nil)
            let sitePage = try await ask("www.example", "/html")
            #expect(sitePage.header("server") == "test-origin/1.0" && sitePage.header("x-powered-by") == nil)
        }
    }

    /// A route chosen by a request header (a canary): only requests with `X-Canary: 1` reach
    /// the second group.
    @Test func routesMatchHeaders() async throws {
        let stable = try await TestOrigin.start()
        let canary = try await TestOrigin.start()
        defer { Task { await stable.stop(); await canary.stop() } }
        try await ProxyHarness.withProxy({ c in
            Self.configure(&c, [stable])
            c.upstreams.append(UpstreamGroupConfig(name: "canary", servers: [Backend(host: "127.0.0.1", port: canary.port)]))
            var route = Route(name: "canary", action: .upstream("canary"))
            route.headers = [Route.HeaderMatch(name: "X-Canary", pattern: try! PathPattern("^1$"))]
            c.routes = RouteTable([route] + c.routes.routes)
        }) { proxy in
            func servedBy(_ extra: String) async throws -> String? {
                try await send(proxy, ["GET /bytes/1 HTTP/1.1\r\nHost: www.example\r\n\(extra)\r\n"]).replies.first?.header("x-served-by")
            }
            let (one, ten, none) = (try await servedBy("X-Canary: 1\r\n"), try await servedBy("X-Canary: 10\r\n"), try await servedBy(""))
            #expect(one == String(canary.port) && ten == String(stable.port) && none == String(stable.port))
        }
    }

    @Test(arguments: [BalanceAlgorithm.roundRobin, .leastConnections, .p2cEWMA])
    func requestsAreSpreadOverTheBackEnds(_ algorithm: BalanceAlgorithm) async throws {
        let origins = try await Self.startOrigins(3)
        defer { for o in origins { Task { await o.stop() } } }
        try await ProxyHarness.withProxy({ Self.configure(&$0, origins, algorithm: algorithm) }) { proxy in
            var servedBy: [String: Int] = [:]
            for _ in 0..<60 {
                let r = try #require(try await send(proxy, ["GET /bytes/10 HTTP/1.1\r\nHost: www.example\r\n\r\n"]).replies.first)
                #expect(r.status == 200)
                servedBy[r.header("x-served-by") ?? "?", default: 0] += 1
            }
            #expect(Set(servedBy.keys) == Set(origins.map { String($0.port) }), "\(algorithm): \(servedBy)")
            if algorithm == .roundRobin { #expect(servedBy.values.allSatisfy { $0 == 20 }, "\(servedBy)") }
        }
    }

    /// A back-end dies in the middle of a bounded loop of GETs: the client never sees a failure
    /// (connections refused are retried on the others, and the dead one is ejected).
    @Test func aDeadBackEndIsNeverNoticed() async throws {
        let origins = try await Self.startOrigins(3)
        defer { for o in origins { Task { await o.stop() } } }
        try await ProxyHarness.withProxy({ Self.configure(&$0, origins) }) { proxy in
            let before = try await Self.getMany(proxy, 30)
            #expect(before.failures == 0)
            await origins[1].kill()
            let (failures, servedBy) = try await Self.getMany(proxy, 60)
            #expect(failures == 0)
            #expect(servedBy[String(origins[1].port)] == nil, "\(servedBy)")
            #expect(servedBy.values.reduce(0, +) == 60)
            // Everything down: a clear 503 or 502, never a hang.
            await origins[0].kill()
            await origins[2].kill()
            let last = try #require(try await send(proxy, ["GET /bytes/1 HTTP/1.1\r\nHost: www.example\r\n\r\n"]).replies.first)
            #expect(last.status == 502 || last.status == 503, "\(last.status)")
        }
    }
}

@Suite("Reverse proxy: active health checks")
struct HealthCheckTests {
    /// A server goes down when its checks fail `fall` times, and comes back after `rise` good ones;
    /// while it is down nothing is sent to it.
    @Test func serversGoDownAndComeBack() async throws {
        let a = try await TestOrigin.start()
        var b = try await TestOrigin.start()
        let bPort = b.port
        defer { Task { await a.stop() } }
        try await ProxyHarness.withProxy({ c in
            ReverseProxyTests.configure(&c, [a, b])
            var check = ActiveCheckPolicy()
            check.path = "/status/204"
            check.interval = 0.05
            check.timeout = 3   // a loaded machine must not fail the live server's checks
            check.rise = 2
            check.fall = 2
            c.upstreams[0].activeCheck = check
            c.upstreams[0].outlier.consecutiveFailures = 0   // only the checks decide here
        }) { proxy in
            func usable() -> [Bool] { proxy.server.upstreamStatus["app"]?.map(\.usable) ?? [] }
            #expect(usable() == [true, true])
            await b.kill()
            #expect(await eventually { usable() == [true, false] }, "the checks must take b down")
            let (failures, servedBy) = try await ReverseProxyTests.getMany(proxy, 20)
            #expect(failures == 0 && servedBy == [String(a.port): 20], "\(servedBy)")
            b = try await TestOrigin.start(port: bPort)
            #expect(await eventually { usable() == [true, true] }, "the checks must bring b back")
            let after = try await ReverseProxyTests.getMany(proxy, 20)
            #expect(after.failures == 0 && after.servedBy[String(bPort)] == 10, "\(after.servedBy)")
        }
        await b.stop()
    }

    /// A reload keeps what the checks learnt: a server found down stays down, instead of being
    /// taken as up again until enough checks fail anew.
    @Test func healthSurvivesAReload() async throws {
        let a = try await TestOrigin.start()
        let b = try await TestOrigin.start()
        defer { Task { await a.stop() } }
        try await ProxyHarness.withProxy({ c in
            ReverseProxyTests.configure(&c, [a, b])
            var check = ActiveCheckPolicy()
            check.path = "/status/204"
            check.interval = 0.05
            check.timeout = 3
            check.fall = 2
            c.upstreams[0].activeCheck = check
        }) { proxy in
            func usable() -> [Bool] { proxy.server.upstreamStatus["app"]?.map(\.usable) ?? [] }
            await b.kill()
            #expect(await eventually { usable() == [true, false] })
            // After the reload one check runs at once and the next an hour later: with fall 2,
            // only the carried-over state can keep b down.
            var next = proxy.server.configuration
            next.listeners[0].address.port = proxy.port
            next.upstreams[0].activeCheck?.interval = 3600
            try await proxy.server.reload(next)
            #expect(usable() == [true, false])
            let (failures, servedBy) = try await ReverseProxyTests.getMany(proxy, 10)
            #expect(failures == 0 && servedBy == [String(a.port): 10], "\(servedBy)")
        }
    }

    /// Every server down by its checks: requests still go out (Envoy's panic mode), and a live
    /// one answers.
    @Test func whenAllAreDownTheyAreTriedAnyway() async throws {
        let a = try await TestOrigin.start()
        defer { Task { await a.stop() } }
        try await ProxyHarness.withProxy({ c in
            ReverseProxyTests.configure(&c, [a])
            var check = ActiveCheckPolicy()
            check.path = "/no-such-page"   // 404: never healthy
            check.interval = 0.05
            check.fall = 1
            c.upstreams[0].activeCheck = check
        }) { proxy in
            #expect(await eventually { proxy.server.upstreamStatus["app"]?.first?.up == false })
            let r = try await ReverseProxyTests.getMany(proxy, 3)
            #expect(r.failures == 0)
        }
    }
}

@Suite("Reverse proxy: retries")
struct RetryTests {
    /// Idempotent requests that meet a 503 or a connection closed without an answer are sent to
    /// another server; a request with a body never is.
    @Test func idempotentRequestsAreRetriedElsewhere() async throws {
        let good = try await TestOrigin.start()
        let busy = try await RawOrigin.start { _ in "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy\n" }
        let broken = try await RawOrigin.start { _ in "" }
        defer {
            Task {
                await good.stop()
                await busy.stop()
                await broken.stop()
            }
        }
        try await ProxyHarness.withProxy({ c in
            c.listeners = [ListenerConfig(name: "web", role: .reverse, address: ListenAddress(host: "127.0.0.1", port: 0))]
            c.access = AccessPolicy(rules: [AccessRule(name: "anyone", action: .allow, clients: [CIDR("0.0.0.0/0")!])])
            var group = UpstreamGroupConfig(name: "app", servers: [busy.port, broken.port, good.port].map { Backend(host: "127.0.0.1", port: $0) })
            group.retries = 2
            group.outlier.consecutiveFailures = 0   // keep the bad servers in the rotation
            c.upstreams = [group]
            c.routes = RouteTable([Route(name: "all", action: .upstream("app"))])
        }) { proxy in
            let gets = try await ReverseProxyTests.getMany(proxy, 12)
            #expect(gets.failures == 0 && gets.servedBy == [String(good.port): 12], "\(gets.servedBy)")
            #expect(busy.requestsSeen >= 4 && broken.requestsSeen >= 4, "the bad servers were tried: \(busy.requestsSeen), \(broken.requestsSeen)")
            var statuses: [Int] = []
            for _ in 0..<3 {
                let r = try #require(try await send(proxy, ["POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"]).replies.first)
                statuses.append(r.status)
            }
            #expect(statuses.sorted() == [200, 502, 503], "\(statuses)")
        }
    }
}

@Suite("Limits: request bodies, per-route timeouts")
struct LimitTests {
    @Test func bodiesOverTheLimitGet413() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ c in c.limits.requestBody = ByteSize(bytes: 10) }) { proxy in
            let small = try #require(try await send(proxy, ["POST \(origin.url)/count HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"]).replies.first)
            #expect(small.status == 200 && small.body == "10")
            let big = try await send(proxy, ["POST \(origin.url)/count HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n01234567890"])
            #expect(big.replies.first?.status == 413 && big.replies.first?.header("connection") == "close")
            var chunked = "POST \(origin.url)/count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            for _ in 0..<10 { chunked += "400\r\n" + String(repeating: "x", count: 1024) + "\r\n" }
            chunked += "0\r\n\r\n"
            let streamed = try await send(proxy, [chunked])
            #expect(streamed.replies.first?.status == 413 || (streamed.replies.isEmpty && streamed.closed), "\(streamed.raw.prefix(200))")
        }
    }

    @Test func routesCarryTheirOwnLimits() async throws {
        let slow = try await RawOrigin.start(delay: .seconds(3)) { _ in "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" }
        defer { Task { await slow.stop() } }
        try await ProxyHarness.withProxy({ c in
            c.listeners = [ListenerConfig(name: "web", role: .reverse, address: ListenAddress(host: "127.0.0.1", port: 0))]
            c.access = AccessPolicy(rules: [AccessRule(name: "anyone", action: .allow, clients: [CIDR("0.0.0.0/0")!])])
            var group = UpstreamGroupConfig(name: "slow", servers: [Backend(host: "127.0.0.1", port: slow.port)])
            group.retries = 0
            c.upstreams = [group]
            var quick = Route(name: "quick", action: .upstream("slow"))
            quick.path = .prefix("/quick/")
            quick.timeout = 0.2
            quick.maxBody = 4
            c.routes = RouteTable([quick, Route(name: "rest", action: .upstream("slow"))])
        }) { proxy in
            // The 504 names the route's 0.2 s (the global timeout is 60 s and the origin answers
            // after 3 s): no clock needed, so a loaded machine cannot fail this.
            let timedOut = try #require(try await send(proxy, ["GET /quick/x HTTP/1.1\r\nHost: a\r\n\r\n"]).replies.first)
            #expect(timedOut.status == 504 && timedOut.body.contains("within 0.2s"), "\(timedOut.body)")
            let tooBig = try #require(try await send(proxy, ["POST /quick/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n12345"]).replies.first)
            #expect(tooBig.status == 413)
            // Other routes keep the global limits: this one waits for the slow answer.
            let patient = try #require(try await send(proxy, ["GET /other HTTP/1.1\r\nHost: a\r\n\r\n"]).replies.first)
            #expect(patient.status == 200 && patient.body == "ok")
        }
    }
}

@Suite("Reverse proxy: connection limits and the queue")
struct UpstreamQueueTests {
    /// One server taking one request at a time, a queue of one: `/slow` holds the slot (the
    /// origin never answers it; the route gives up after `slowTimeout`).
    static func configure(_ c: inout ProximaConfiguration, origin: Int, queueTimeout: Double, slowTimeout: Double) {
        c.listeners = [ListenerConfig(name: "web", role: .reverse, address: ListenAddress(host: "127.0.0.1", port: 0))]
        c.access = AccessPolicy(rules: [AccessRule(name: "anyone", action: .allow, clients: [CIDR("0.0.0.0/0")!])])
        var group = UpstreamGroupConfig(name: "app", servers: [Backend(host: "127.0.0.1", port: origin, maxConnections: 1)])
        group.retries = 0
        group.queueLimit = 1
        group.queueTimeout = queueTimeout
        c.upstreams = [group]
        var slow = Route(name: "slow", action: .upstream("app"))
        slow.path = .prefix("/slow")
        slow.timeout = slowTimeout
        c.routes = RouteTable([slow, Route(name: "rest", action: .upstream("app"))])
    }

    @Test func aQueuedRequestTakesTheNextFreeSlot() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        // The slot is held long enough for a loaded machine to send the other two requests.
        try await ProxyHarness.withProxy({ Self.configure(&$0, origin: origin.port, queueTimeout: 30, slowTimeout: 5) }) { proxy in
            async let holder = send(proxy, ["GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"], timeout: .seconds(60))
            #expect(await eventually { origin.connectionsOpen == 1 })
            async let queued = send(proxy, ["GET /bytes/3 HTTP/1.1\r\nHost: a\r\n\r\n"], timeout: .seconds(60))
            #expect(await eventually { proxy.server.upstreamQueues["app"] == 1 })
            // The queue is full: answered at once.
            let refused = try #require(try await send(proxy, ["GET /bytes/4 HTTP/1.1\r\nHost: a\r\n\r\n"]).replies.first)
            #expect(refused.status == 503 && refused.body.contains("queue is full"), "\(refused.body)")
            let (first, second) = try await (holder, queued)
            #expect(first.replies.first?.status == 504)
            #expect(second.replies.first?.status == 200 && second.replies.first?.body == "abc")
            #expect(proxy.server.upstreamQueues["app"] == 0)
        }
    }

    @Test func aRequestWaitsNoLongerThanTheQueueTimeout() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        // The slot is held for as long as the test needs (a loaded machine once outlasted a 3 s
        // hold); killing the origin then ends the holder at once.
        try await ProxyHarness.withProxy({ Self.configure(&$0, origin: origin.port, queueTimeout: 0.2, slowTimeout: 60) }) { proxy in
            async let holder = send(proxy, ["GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"], timeout: .seconds(90))
            #expect(await eventually { origin.connectionsOpen == 1 })
            let waited = try #require(try await send(proxy, ["GET /bytes/3 HTTP/1.1\r\nHost: a\r\n\r\n"]).replies.first)
            #expect(waited.status == 503 && waited.body.contains("stayed busy for 0.2s"), "\(waited.body)")
            #expect(proxy.server.upstreamQueues["app"] == 0)
            await origin.kill()
            _ = try await holder
        }
    }
}

/// The request head the back-end saw.
final class SeenHead: Sendable {
    let text = Mutex("")
}

/// A back-end that answers an Upgrade with `101` and then echoes every byte (what a WebSocket
/// echo server does at the TCP level; the proxy only relays bytes after the switch).
final class UpgradeEchoHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    var switched = false
    var head = ""
    let sawHead: SeenHead

    init(sawHead: SeenHead) { self.sawHead = sawHead }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if switched { return context.writeAndFlush(wrapOutboundOut(bytes), promise: nil) }
        head += bytes.readString(length: bytes.readableBytes) ?? ""
        guard let end = head.range(of: "\r\n\r\n") else { return }
        sawHead.text.withLock { $0 = String(head[..<end.lowerBound]) }
        let early = String(head[end.upperBound...])
        switched = true
        var out = ByteBuffer(string: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: test\r\n\r\n")
        out.writeString(early)
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }
}

@Suite("Reverse proxy: protocol upgrades (WebSocket)")
struct UpgradeTests {
    @Test func upgradesArePassedOnAndBytesFlowBothWays() async throws {
        let sawHead = SeenHead()
        let echo = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(UpgradeEchoHandler(sawHead: sawHead)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { echo.close(promise: nil) }
        try await ProxyHarness.withProxy({ c in
            c.listeners = [ListenerConfig(name: "web", role: .reverse, address: ListenAddress(host: "127.0.0.1", port: 0))]
            c.access = AccessPolicy(rules: [AccessRule(name: "anyone", action: .allow, clients: [CIDR("0.0.0.0/0")!])])
            c.upstreams = [UpstreamGroupConfig(name: "ws", servers: [Backend(host: "127.0.0.1", port: echo.localAddress!.port!)])]
            c.routes = RouteTable([Route(name: "ws", action: .upstream("ws"))])
        }) { proxy in
            // After the handshake the proxy relays bytes without looking at them; the client's
            // first bytes may even come with the handshake (sent before the 101 arrives).
            let handshake = "GET /chat HTTP/1.1\r\nHost: app.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            let payload = "early-bytes|second-message"
            let reply = try await RawClient.exchange(
                port: proxy.port, send: [handshake + "early-bytes|", "second-message"], timeout: .seconds(10),
                until: { $0.hasSuffix(payload) })
            #expect(reply.text.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"), "\(reply.text)")
            #expect(reply.text.lowercased().contains("upgrade: websocket") && reply.text.lowercased().contains("connection: upgrade"))
            #expect(reply.text.hasSuffix("\r\n\r\n" + payload), "the bytes come back through the tunnel: \(reply.text)")
            let seen = sawHead.text.withLock { $0 }.lowercased()
            #expect(seen.contains("upgrade: websocket") && seen.contains("connection: upgrade") && seen.contains("sec-websocket-key"), "\(seen)")
        }
    }
}

@Suite("WebSocket round trips with real clients")
struct WebSocketTests {
    /// Headless Chromium loads a page through a reverse listener; the page's script opens a
    /// WebSocket to the same host (so through the proxy too) and shows the echo it gets back.
    @Test func browserThroughAReverseListener() async throws {
        let chromium = try #require(chromiumPath(), "headless Chromium is needed (apt-get install chromium; .ci/run does)")
        let origin = try await WebSocketOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ c in
            c.listeners = [ListenerConfig(name: "web", role: .reverse, address: ListenAddress(host: "127.0.0.1", port: 0))]
            c.access = AccessPolicy(rules: [AccessRule(name: "anyone", action: .allow, clients: [CIDR("0.0.0.0/0")!])])
            c.upstreams = [UpstreamGroupConfig(name: "ws", servers: [Backend(host: "127.0.0.1", port: origin.port)])]
            c.routes = RouteTable([Route(name: "ws", action: .upstream("ws"))])
        }) { proxy in
            // The page reports its echo to the origin; the browser runs until then (bounded), so a
            // slow machine only makes the test slower.
            let browser = Process()
            browser.executableURL = URL(fileURLWithPath: chromium)
            browser.arguments = [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--user-data-dir=\(makeTempPath("proxima-chromium", ""))", "--remote-debugging-port=0",
                "http://127.0.0.1:\(proxy.port)/ws/page.html",
            ]
            browser.standardOutput = FileHandle.nullDevice
            browser.standardError = FileHandle.nullDevice
            let reported = try await withBrowser {
                try browser.run()
                defer { browser.terminate() }
                return await eventually(timeout: .seconds(90)) { !origin.results.isEmpty }
            }
            #expect(reported)
            #expect(origin.results == ["echo:hello through proxima"])
            // The WebSocket's record is written when its tunnel ends, after the page's report.
            let tunnelLogged = await eventually(timeout: .seconds(30)) {
                jsonRecords(proxy.accessLogLines()).contains { ($0["status"] as? Int) == 101 && ($0["url"] as? String) == "/ws/echo" }
            }
            #expect(tunnelLogged, "\(proxy.accessLogLines())")
        }
    }

    /// A WebSocket client speaking to a forward proxy in absolute form (RFC 6455 frames made by
    /// hand in Python): the handshake is passed on, the 101 comes back, a masked message is echoed.
    @Test func pythonThroughAForwardProxy() async throws {
        let origin = try await WebSocketOrigin.start()
        defer { Task { await origin.stop() } }
        let script = """
            import base64, hashlib, os, socket, sys
            proxy, origin = int(sys.argv[1]), int(sys.argv[2])
            s = socket.create_connection(("127.0.0.1", proxy), timeout=10)
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall(("GET http://127.0.0.1:%d/ws/echo HTTP/1.1\\r\\nHost: 127.0.0.1:%d\\r\\nUpgrade: websocket\\r\\n"
                       "Connection: Upgrade\\r\\nSec-WebSocket-Key: %s\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n" % (origin, origin, key)).encode())
            def recv(n):
                data = b""
                while len(data) < n:
                    chunk = s.recv(n - len(data))
                    if not chunk: raise SystemExit("closed after %r" % data)
                    data += chunk
                return data
            head = b""
            while not head.endswith(b"\\r\\n\\r\\n"): head += recv(1)
            accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            msg = b"hello through proxima"
            mask = os.urandom(4)
            s.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
            frame = recv(2)
            print(head.split(b"\\r\\n")[0].decode(), accept in head, frame[0] == 0x81, recv(frame[1] & 0x7F).decode())
            """
        try await ProxyHarness.withProxy { proxy in
            let r = try await run("/usr/bin/python3", ["-c", script, String(proxy.port), String(origin.port)])
            #expect(r.output == "HTTP/1.1 101 Switching Protocols True True hello through proxima\n", "\(r.output) \(r.error)")
        }
    }
}

@Suite("Reverse proxy: forwarding headers and trusted proxies")
struct ForwardingHeaderTests {
    static let request = "GET /headers HTTP/1.1\r\nHost: www.example\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\r\n"

    @Test(arguments: [false, true])
    func clientChainsAreKeptOnlyFromTrustedProxies(_ trusted: Bool) async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ c in
            ReverseProxyTests.configure(&c, [origin])
            c.proxy.forwarded = true
            if trusted { c.proxy.trustedProxies = [CIDR("127.0.0.0/8")!] }
        }) { proxy in
            let r = try #require(try await send(proxy, [Self.request]).replies.first)
            let seen = r.body.lowercased()
            if trusted {
                #expect(seen.contains("x-forwarded-for: 6.6.6.6, 127.0.0.1\n"), "\(seen)")
                #expect(seen.contains("forwarded: for=6.6.6.6\n") && seen.contains("forwarded: for=127.0.0.1;host=www.example;proto=http\n"), "\(seen)")
            } else {
                #expect(seen.contains("x-forwarded-for: 127.0.0.1\n") && !seen.contains("6.6.6.6"), "\(seen)")
                #expect(seen.contains("forwarded: for=127.0.0.1;host=www.example;proto=http\n"), "\(seen)")
            }
        }
    }
}

@Suite("Reverse proxy: logins (401)")
struct ReverseAuthTests {
    /// A rule that needs a user on a reverse listener asks with 401 and `WWW-Authenticate`, and
    /// takes `Authorization` (not the proxy's header); the user is logged.
    @Test func adminPathsAskForALogin() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        // A file as Apache's tool writes it (apache2-utils; .ci/run installs it).
        let made = try await run("/usr/bin/htpasswd", ["-nbB", "alice", "s3cret"])
        let users = try PasswordFile.parse(made.output, path: "htpasswd").get()
        try await ProxyHarness.withProxy({ c in
            ReverseProxyTests.configure(&c, [origin])
            var auth = AuthConfig(users: users)
            auth.realm = "Admin area"
            c.auth = auth
            c.access = AccessPolicy(rules: [
                AccessRule(name: "admin-login", action: .authenticate, urlPrefixes: ["http://www.example/admin/"]),
                AccessRule(name: "anyone", action: .allow, clients: [CIDR("0.0.0.0/0")!]),
            ])
        }) { proxy in
            let open = try #require(try await send(proxy, ["GET /bytes/3 HTTP/1.1\r\nHost: www.example\r\n\r\n"]).replies.first)
            #expect(open.status == 200)
            let asked = try #require(try await send(proxy, ["GET /admin/x HTTP/1.1\r\nHost: www.example\r\n\r\n"]).replies.first)
            #expect(asked.status == 401 && asked.header("www-authenticate") == "Basic realm=\"Admin area\", charset=\"UTF-8\"")
            #expect(asked.header("proxy-authenticate") == nil)
            let login = "Authorization: Basic " + Data("alice:s3cret".utf8).base64EncodedString() + "\r\n"
            let inside = try #require(try await send(proxy, ["GET /admin/x HTTP/1.1\r\nHost: www.example\r\n\(login)\r\n"]).replies.first)
            #expect(inside.status == 404, "passed to the back-end (which has no /admin/x)")
            // The back-end still gets the field (it is not the proxy's own, as Proxy-Authorization is).
            let echoed = try #require(try await send(proxy, ["GET /headers HTTP/1.1\r\nHost: www.example\r\n\(login)\r\n"]).replies.first)
            #expect(echoed.body.lowercased().contains("authorization: basic"), "\(echoed.body)")
            let wrong = "Authorization: Basic " + Data("alice:nope".utf8).base64EncodedString() + "\r\n"
            #expect(try await send(proxy, ["GET /admin/x HTTP/1.1\r\nHost: www.example\r\n\(wrong)\r\n"]).replies.first?.status == 401)
            let users = jsonRecords(await proxy.waitForAccessLog(count: 5)).compactMap { $0["user"] as? String }
            #expect(users == ["alice", "alice"], "valid credentials are checked and logged wherever they come: \(users)")
        }
    }
}
