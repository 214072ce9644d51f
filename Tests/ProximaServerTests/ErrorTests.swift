import Foundation
import NIOCore
import ProximaConfig
import ProximaPolicy
import ProximaTesting
import Testing

@Suite("Errors and bad input get the right status, a page and a log record")
struct ErrorTests {
    static let badRequests: [(String, String, Int, Bool)] = [
        ("CL and TE", "POST http://127.0.0.1:9/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400, true),
        ("conflicting CL", "POST http://127.0.0.1:9/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400, true),
        ("invalid CL", "POST http://127.0.0.1:9/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3x\r\n\r\n", 400, true),
        ("unknown TE", "POST http://127.0.0.1:9/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, true),
        ("space before colon", "GET http://127.0.0.1:9/ HTTP/1.1\r\nHost : a\r\n\r\n", 400, true),
        ("bare LF", "GET http://127.0.0.1:9/ HTTP/1.1\nHost: a\n\n", 400, true),
        ("bare CR", "GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400, true),
        ("obs-fold", "GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n", 400, true),
        ("garbage", "\u{16}\u{3}\u{1}\u{0}\u{a5}\u{1}\u{0}\r\n\r\n", 400, true),
        ("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, true),
        ("user info in URL", "GET http://user:pw@127.0.0.1:9/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, true),
        ("ftp scheme", "GET ftp://127.0.0.1/ HTTP/1.1\r\nHost: a\r\n\r\n", 501, false),
    ]

    @Test(arguments: badRequests)
    func malformedRequests(_ c: (String, String, Int, Bool)) async throws {
        try await ProxyHarness.withProxy { proxy in
            let r = try await send(proxy, [c.1], responses: c.3 ? 9 : 1)
            #expect(r.replies.first?.status == c.2, "\(c.0): \(r.raw)")
            #expect(r.closed == c.3, "\(c.0): a framing error closes the connection, a well-framed one does not")
            #expect(r.replies.first?.body.contains("Proxima") == true)
            let records = jsonRecords(await proxy.waitForAccessLog(count: 1))
            #expect(records.first?["status"] as? Int == c.2, "\(c.0)")
        }
    }

    @Test func requestLineTooLongIs414() async throws {
        try await ProxyHarness.withProxy({ $0.limits.requestLine = ByteSize(bytes: 1024) }) { proxy in
            let r = try await send(proxy, ["GET http://127.0.0.1:9/" + String(repeating: "a", count: 2000) + " HTTP/1.1\r\nHost: a\r\n\r\n"], responses: 9)
            #expect(r.replies.first?.status == 414)
        }
    }

    @Test func headersTooLargeIs431() async throws {
        try await ProxyHarness.withProxy({ $0.limits.headers = ByteSize(bytes: 4096) }) { proxy in
            let r = try await send(proxy, ["GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: a\r\nX-Big: " + String(repeating: "b", count: 5000) + "\r\n\r\n"], responses: 9)
            #expect(r.replies.first?.status == 431)
        }
    }

    @Test func deniedByRuleSaysWhich() async throws {
        try await ProxyHarness.withProxy({ c in
            c.access = AccessPolicy(rules: [
                AccessRule(name: "no-example", action: .deny, domains: [DomainPattern(".example.org")!]),
                AccessRule(name: "local", action: .allow, clients: [CIDR("127.0.0.0/8")!]),
            ])
        }) { proxy in
            let r = try await send(proxy, ["GET http://www.example.org/ HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\n"])
            let reply = try #require(r.replies.first)
            #expect(reply.status == 403)
            #expect(reply.header("content-type")?.hasPrefix("text/html") == true)
            #expect(reply.body.contains("denied by rule &#39;no-example&#39;"))
            let rec = try #require(jsonRecords(await proxy.waitForAccessLog(count: 1)).first)
            #expect(rec["result"] as? String == "TCP_DENIED")
            #expect(rec["detail"] as? String == "rule no-example")
        }
    }

    @Test func longPipelineOfLocalAnswersDoesNotGrowTheStack() async throws {
        try await ProxyHarness.withProxy({ c in
            c.access = AccessPolicy(rules: [AccessRule(name: "nothing", action: .deny)])
        }) { proxy in
            let count = 2000
            let pipeline = String(repeating: "GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: a\r\n\r\n", count: count)
            let r = try await send(proxy, [pipeline], responses: count, timeout: .seconds(30))
            #expect(r.replies.count == count)
            #expect(r.replies.allSatisfy { $0.status == 403 })
        }
    }

    @Test func clientsOutsideTheAllowedNetworksAreDenied() async throws {
        try await ProxyHarness.withProxy({ c in
            c.access = AccessPolicy(rules: [AccessRule(name: "lan", action: .allow, clients: [CIDR("10.0.0.0/8")!])])
        }) { proxy in
            let r = try await send(proxy, ["GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: a\r\n\r\n"])
            #expect(r.replies.first?.status == 403)
            #expect(r.replies.first?.body.contains("implicit deny") == true)
            #expect(r.replies.first?.header("content-type")?.hasPrefix("text/plain") == true)
        }
    }

    @Test func connectToDisallowedPortIs403() async throws {
        try await ProxyHarness.withProxy { proxy in
            // The client sends its TLS hello right behind the CONNECT, as browsers may.
            let r = try await send(proxy, ["CONNECT 127.0.0.1:25 HTTP/1.1\r\nHost: 127.0.0.1:25\r\n\r\n\u{16}\u{3}\u{1}hello"], responses: 9)
            #expect(r.replies.count == 1)
            #expect(r.replies.first?.status == 403)
            #expect(r.replies.first?.body.contains("connect.allowed_ports: 443") == true)
            // The hello is not taken for a second (malformed) request: the connection just ends.
            #expect(r.closed)
        }
    }

    @Test func connectionRefusedIs502NamingHostAndCause() async throws {
        let closed = try ClosedPort()
        let port = closed.port
        try await ProxyHarness.withProxy { proxy in
            let r = try await send(proxy, ["GET http://127.0.0.1:\(port)/ HTTP/1.1\r\nHost: a\r\n\r\n"])
            let reply = try #require(r.replies.first)
            #expect(reply.status == 502)
            #expect(reply.body.contains("127.0.0.1:\(port)"))
            #expect(reply.body.lowercased().contains("refused"))
        }
        withExtendedLifetime(closed) {}
    }

    /// The test harness's "dead server": refused at once, its port never handed to another
    /// test's listener in the meantime, and usable again when the test restarts the server.
    @Test func aKilledOriginRefusesUntilItComesBack() async throws {
        let origin = try await TestOrigin.start()
        let port = origin.port
        await origin.kill()
        try await ProxyHarness.withProxy { proxy in
            let r = try await send(proxy, ["GET http://127.0.0.1:\(port)/ HTTP/1.1\r\nHost: a\r\n\r\n"])
            #expect(r.replies.first?.status == 502 && r.replies.first?.body.lowercased().contains("refused") == true)
            let again = try await TestOrigin.start(port: port)
            defer { Task { await again.stop() } }
            let back = try await send(proxy, ["GET http://127.0.0.1:\(port)/bytes/2 HTTP/1.1\r\nHost: a\r\n\r\n"])
            #expect(back.replies.first?.status == 200 && back.replies.first?.body == "ab")
        }
        withExtendedLifetime(origin) {}
    }

    @Test func unresolvableHostIs502() async throws {
        try await ProxyHarness.withProxy { proxy in
            let r = try await send(proxy, ["GET http://no-such-host.invalid/ HTTP/1.1\r\nHost: a\r\n\r\n"], timeout: .seconds(30))
            #expect(r.replies.first?.status == 502)
            #expect(r.replies.first?.body.contains("no-such-host.invalid") == true)
        }
    }

    static let badUpstreamAnswers: [(String, String, String)] = [
        ("conflicting Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "invalid response"),
        ("bare LF in the head", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "invalid response"),
        ("closes without answering", "", "closed the connection without responding"),
        ("closes inside the head", "HTTP/1.1 200 OK\r\nContent-Le", "in the middle of the response head"),
        ("unasked-for 101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "switched protocols"),
    ]

    @Test(arguments: badUpstreamAnswers)
    func badUpstreamAnswersAre502(_ c: (String, String, String)) async throws {
        let origin = try await RawOrigin.start { _ in c.1 }
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            let r = try await send(proxy, ["GET \(origin.url)/ HTTP/1.1\r\nHost: a\r\n\r\n"])
            #expect(r.replies.first?.status == 502, "\(c.0)")
            #expect(r.replies.first?.body.contains(c.2) == true, "\(c.0): \(r.raw)")
        }
    }

    @Test func truncatedBodyClosesTheClientConnection() async throws {
        let origin = try await RawOrigin.start { _ in "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this" }
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            let r = try await send(proxy, ["GET \(origin.url)/ HTTP/1.1\r\nHost: a\r\n\r\n"], responses: 9)
            #expect(r.closed)
            #expect(r.raw.hasSuffix("only this"))
            let rec = try #require(jsonRecords(await proxy.waitForAccessLog(count: 1)).first)
            #expect(rec["result"] as? String == "TCP_MISS_ABORTED")
        }
    }

    @Test func upstreamTimeoutIs504() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ $0.timeouts.upstreamResponse = .milliseconds(300) }) { proxy in
            let r = try await send(proxy, ["GET \(origin.url)/slow HTTP/1.1\r\nHost: a\r\n\r\n"])
            #expect(r.replies.first?.status == 504)
            #expect(r.replies.first?.body.contains("did not respond") == true)
        }
    }

    @Test func upstreamConnectTimeoutIs504() async throws {
        // A listener with a zero backlog that never accepts: once one connection waits in its
        // queue, further SYNs are dropped and a connect hangs until its timeout.
        let listener = try BlackholeListener()
        defer { listener.close() }
        try await ProxyHarness.withProxy({ $0.timeouts.upstreamConnect = .milliseconds(300) }) { proxy in
            let r = try await send(proxy, ["GET http://127.0.0.1:\(listener.port)/ HTTP/1.1\r\nHost: a\r\n\r\n"])
            #expect(r.replies.first?.status == 504)
            #expect(r.replies.first?.body.contains("Timed out connecting to 127.0.0.1:\(listener.port)") == true)
        }
    }

    @Test func forwardingLoopIs508() async throws {
        try await ProxyHarness.withProxy({ $0.proxy.viaName = "loopy" }) { proxy in
            // A request that already passed through a proxy with this name.
            let r = try await send(proxy, ["GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: a\r\nVia: 1.0 other, 1.1 loopy (proxima/0.1.0)\r\n\r\n"])
            #expect(r.replies.first?.status == 508)
            #expect(r.replies.first?.body.contains("Forwarding loop detected") == true)
            // A URL naming the proxy itself does not loop: the next hop is sent in origin form,
            // which the proxy answers with its own page, relayed back.
            let own = try await send(proxy, ["GET http://127.0.0.1:\(proxy.port)/x HTTP/1.1\r\nHost: a\r\n\r\n"])
            #expect(own.replies.first?.status == 400)
            #expect(own.replies.first?.body.contains("This is Proxima, a forward proxy") == true)
        }
    }

    @Test func requestAimedAtTheProxyGetsAPage() async throws {
        try await ProxyHarness.withProxy { proxy in
            let r = try await send(proxy, ["GET / HTTP/1.1\r\nHost: 127.0.0.1:\(proxy.port)\r\nAccept: text/html\r\n\r\n"])
            let reply = try #require(r.replies.first)
            #expect(reply.status == 400)
            #expect(reply.body.contains("forward proxy"))
            #expect(reply.body.hasPrefix("<!DOCTYPE html>"))
        }
    }

    /// The partial head must reach the proxy before its timer fires (with no bytes at all the
    /// connection is closed without a page). The client writes it from the event loop as the
    /// connection opens: written from the test task, it was seen to arrive after the timeout
    /// when other tests held the concurrency pool's threads with blocking calls.
    @Test func slowHeadersTimeOut() async throws {
        try await ProxyHarness.withProxy({ $0.timeouts.clientHeader = .seconds(3) }) { proxy in
            // Written by the event loop on connect: the test task itself may wait for a thread.
            let reply = try await RawClient.exchange(
                port: proxy.port, send: ["GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: a\r\n"], timeout: .seconds(10), writeOnConnect: true)
            let r = (replies: parseReplies(reply.text), closed: reply.closedByServer)
            #expect(r.replies.first?.status == 408)
            #expect(r.closed)
        }
    }

    @Test func idleKeepAliveConnectionsClose() async throws {
        try await ProxyHarness.withProxy({ $0.timeouts.clientHeader = .milliseconds(300) }) { proxy in
            let r = try await RawClient.exchange(port: proxy.port, send: [], timeout: .seconds(5))
            #expect(r.closedByServer)
            #expect(r.text.isEmpty)
        }
    }

    @Test func keepAliveIdleTimeoutClosesAfterAResponse() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ $0.timeouts.idle = .milliseconds(300) }) { proxy in
            let client = PersistentClient(port: proxy.port)
            try await client.open()
            let text = try await client.request("GET \(origin.url)/bytes/3 HTTP/1.1\r\nHost: a\r\n\r\n")
            #expect(text.hasSuffix("abc"))
            #expect(await eventually { !client.isOpen })
            await client.close()
        }
    }

    @Test func connectionLimitRefusesOnlyTheExtraConnections() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ $0.limits.maxConnections = 2 }) { proxy in
            // Two clients that stay connected.
            let held = [PersistentClient(port: proxy.port), PersistentClient(port: proxy.port)]
            for c in held { try await c.open() }
            #expect(await eventually { proxy.server.openConnections["test"] == 2 })
            let extra = try await RawClient.exchange(port: proxy.port, send: [], timeout: .seconds(5))
            #expect(extra.closedByServer && extra.text.isEmpty)
            // The held connections still work.
            for c in held {
                let text = try await c.request("GET \(origin.url)/bytes/3 HTTP/1.1\r\nHost: a\r\n\r\n")
                #expect(text.hasSuffix("abc"))
                await c.close()
            }
        }
    }
}
