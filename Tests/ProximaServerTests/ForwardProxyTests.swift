import Foundation
import NIOCore
import ProximaConfig
import ProximaHTTP1
import ProximaTesting
import Testing

@Suite("Forward proxy: HTTP/1.1 and 1.0 through real sockets")
struct ForwardProxyTests {
    @Test func getThroughProxyIsLoggedFromTheExchange() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            let r = try await send(proxy, ["GET \(origin.url)/bytes/1000 HTTP/1.1\r\nHost: x\r\nUser-Agent: tester\r\n\r\n"])
            let reply = try #require(r.replies.first)
            #expect(reply.status == 200)
            #expect(reply.body == String(decoding: patternBytes(1000), as: UTF8.self))
            #expect(reply.header("via")?.contains("(proxima/") == true)
            let records = jsonRecords(await proxy.waitForAccessLog(count: 1))
            let rec = try #require(records.first)
            #expect(rec["method"] as? String == "GET")
            #expect(rec["url"] as? String == "\(origin.url)/bytes/1000")
            #expect(rec["status"] as? Int == 200)
            #expect(rec["result"] as? String == "TCP_MISS")
            #expect(rec["client"] as? String == "127.0.0.1")
            #expect(rec["upstream"] as? String == "127.0.0.1:\(origin.port)")
            #expect(rec["user_agent"] as? String == "tester")
            #expect((rec["bytes_out"] as? Int ?? 0) > 1000)
            #expect((rec["bytes_in"] as? Int ?? 0) > 40)
        }
    }

    @Test func originSeesCleanedHeaders() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            let req = "GET \(origin.url)/headers HTTP/1.1\r\nHost: wrong.example\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic dTpw\r\nKeep-Alive: 300\r\nTE: trailers\r\nX-Forwarded-For: 203.0.113.5\r\nX-Kept: yes\r\n\r\n"
            let reply = try #require(try await send(proxy, [req]).replies.first)
            let seen = reply.body.lowercased()
            #expect(seen.hasPrefix("get /headers http/1.1\n"))
            #expect(seen.contains("host: 127.0.0.1:\(origin.port)\n"))
            for gone in ["x-private", "proxy-connection", "proxy-authorization", "keep-alive", "te:", "connection:"] {
                #expect(!seen.contains(gone), "\(gone) reached the origin")
            }
            #expect(seen.contains("x-kept: yes"))
            #expect(seen.contains("x-forwarded-for: 203.0.113.5, 127.0.0.1"))
            #expect(seen.contains("via: 1.1 "))
        }
    }

    @Test(arguments: [ForwardedForMode.keep, .remove])
    func forwardedForIsConfigurable(_ mode: ForwardedForMode) async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ $0.proxy.forwardedFor = mode }) { proxy in
            let reply = try #require(try await send(proxy, ["GET \(origin.url)/headers HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.5\r\n\r\n"]).replies.first)
            let seen = reply.body.lowercased()
            #expect(!seen.contains("127.0.0.1\n"))
            #expect(seen.contains("x-forwarded-for: 203.0.113.5") == (mode == .keep))
        }
    }

    @Test func requestBodiesContentLengthAndChunked() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            let body = String(repeating: "0123456789", count: 5000)
            let r1 = try await send(proxy, ["POST \(origin.url)/echo HTTP/1.1\r\nHost: a\r\nContent-Length: \(body.utf8.count)\r\n\r\n", body])
            #expect(r1.replies.first?.body == body)
            let chunked = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            let r2 = try await send(proxy, ["POST \(origin.url)/echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", chunked])
            #expect(r2.replies.first?.body == "hello world")
        }
    }

    @Test func chunkedResponsesPassToHTTP11AndAreDechunkedForHTTP10() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            let expected = String(decoding: patternBytes(5500), as: UTF8.self)
            let r11 = try await send(proxy, ["GET \(origin.url)/chunked/5500 HTTP/1.1\r\nHost: a\r\n\r\n"])
            #expect(r11.replies.first?.header("transfer-encoding") == "chunked")
            #expect(r11.replies.first?.body == expected)
            let r10 = try await send(proxy, ["GET \(origin.url)/chunked/5500 HTTP/1.0\r\n\r\n"], responses: 99)
            #expect(r10.replies.first?.header("transfer-encoding") == nil)
            #expect(r10.replies.first?.body == expected)
            #expect(r10.closed)
        }
    }

    @Test func trailersReachHTTP11Clients() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            let r = try await send(proxy, ["GET \(origin.url)/trailers HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n"])
            let reply = try #require(r.replies.first)
            #expect(reply.body == "hello trailers")
            #expect(reply.header("trailer:X-Checksum") == "42")
        }
    }

    @Test func headAnd204And304HaveNoBody() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            // Three requests on one connection: if a body were expected for any, the next would be lost.
            let r = try await send(proxy, [
                "HEAD \(origin.url)/bytes/500 HTTP/1.1\r\nHost: a\r\n\r\n"
                    + "GET \(origin.url)/status/204 HTTP/1.1\r\nHost: a\r\n\r\n"
                    + "GET \(origin.url)/status/304 HTTP/1.1\r\nHost: a\r\n\r\n"
                    + "GET \(origin.url)/bytes/3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            ], responses: 99)
            let text = r.raw
            #expect(text.components(separatedBy: "HTTP/1.1 ").count - 1 == 4)
            #expect(text.contains("Content-Length: 500\r\n"))
            #expect(text.hasSuffix("\r\n\r\nabc"))
        }
    }

    @Test func keepAliveReusesOneUpstreamConnection() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            let client = PersistentClient(port: proxy.port)
            try await client.open()
            for i in 0..<5 {
                let text = try await client.request("GET \(origin.url)/bytes/\(10 + i) HTTP/1.1\r\nHost: a\r\n\r\n")
                #expect(parseReplies(text).first?.body.count == 10 + i)
            }
            #expect(client.isOpen)
            await client.close()
            // Upstream pools are per event loop: new client connections reuse at most one
            // upstream connection per loop.
            for _ in 0..<6 {
                _ = try await send(proxy, ["GET \(origin.url)/bytes/1 HTTP/1.1\r\nHost: a\r\n\r\n"])
            }
            #expect(origin.connectionsAccepted <= ProcessInfo.processInfo.activeProcessorCount)
        }
    }

    @Test func idleUpstreamConnectionsAreClosedAfterTheirTimeout() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ $0.upstreamPool.idleTimeout = .milliseconds(200) }) { proxy in
            let r = try await send(proxy, ["GET \(origin.url)/bytes/1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"], responses: 9)
            #expect(r.replies.first?.status == 200)
            #expect(origin.connectionsAccepted == 1)
            // The client is gone; the pooled upstream connection goes once it has idled 200ms.
            #expect(await eventually { origin.connectionsOpen == 0 })
        }
    }

    @Test func upstreamConnectionIsNotReusedAfterAnUnfinishedBody() async throws {
        let origin = try await RawOrigin.start(closeAfter: false) { head in
            head.contains("/short") ? "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nonly5" : "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        }
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            // The client gives up mid-body: that upstream connection must not serve anyone else.
            let cut = try await RawClient.exchange(port: proxy.port, send: ["GET \(origin.url)/short HTTP/1.1\r\nHost: a\r\n\r\n"], timeout: .seconds(30)) {
                $0.hasSuffix("only5")
            }
            #expect(cut.text.hasSuffix("only5"))
            for _ in 0..<4 {
                let r = try await send(proxy, ["GET \(origin.url)/ok HTTP/1.1\r\nHost: a\r\n\r\n"])
                #expect(r.replies.first?.body == "ok")
            }
            // And the abandoned exchange does not linger.
            #expect(await eventually { proxy.server.openConnections["test"] == 0 })
        }
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            let reqs = (1...5).map { "GET \(origin.url)/bytes/\($0 * 7) HTTP/1.1\r\nHost: a\r\n\r\n" }.joined()
            let r = try await send(proxy, [reqs], responses: 5)
            #expect(r.replies.map(\.body.count) == [7, 14, 21, 28, 35])
        }
    }

    @Test func http10KeepAliveOnRequest() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            let r = try await send(proxy, ["GET \(origin.url)/bytes/4 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"])
            #expect(r.replies.first?.header("connection")?.lowercased() == "keep-alive")
            #expect(!r.closed)
            let r2 = try await send(proxy, ["GET \(origin.url)/bytes/4 HTTP/1.0\r\n\r\n"], responses: 9)
            #expect(r2.closed)
        }
    }

    @Test func expectContinueIsRelayed() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            let reply = try await RawClient.exchange(
                port: proxy.port, send: ["PUT \(origin.url)/echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"],
                timeout: .seconds(30)
            ) { $0.contains("100 Continue") }
            #expect(reply.text.hasPrefix("HTTP/1.1 100 Continue\r\n"))
        }
    }

    @Test func ipv6Upstream() async throws {
        guard let origin = try? await TestOrigin.start(host: "::1") else {
            Issue.record("cannot bind ::1 on this machine")
            return
        }
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            let r = try await send(proxy, ["GET http://[::1]:\(origin.port)/bytes/9 HTTP/1.1\r\nHost: a\r\n\r\n"])
            #expect(r.replies.first?.status == 200)
            #expect(r.replies.first?.body.count == 9)
        }
    }

    @Test func hostNamesAreResolved() async throws {
        let origin = try await TestOrigin.start()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            let r = try await send(proxy, ["GET http://localhost:\(origin.port)/bytes/2 HTTP/1.1\r\nHost: a\r\n\r\n"])
            #expect(r.replies.first?.status == 200)
        }
    }

    @Test func staleIdleUpstreamConnectionsAreRetried() async throws {
        // The server answers keep-alive-looking responses but closes each connection after one.
        let origin = try await RawOrigin.start(closeAfter: true) { _ in "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" }
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            for _ in 0..<20 {
                let r = try await send(proxy, ["GET \(origin.url)/ HTTP/1.1\r\nHost: a\r\n\r\n"])
                #expect(r.replies.first?.status == 200)
                #expect(r.replies.first?.body == "ok")
            }
        }
    }

    @Test func closeDelimitedResponseIsChunkedForHTTP11AndCloseDelimitedForHTTP10() async throws {
        let origin = try await RawOrigin.start(closeAfter: true) { _ in "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end" }
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy { proxy in
            // HTTP/1.1: re-framed as chunks, and the client connection stays open for more.
            let r = try await send(proxy, [
                "GET \(origin.url)/ HTTP/1.1\r\nHost: a\r\n\r\nGET \(origin.url)/again HTTP/1.1\r\nHost: a\r\n\r\n"
            ], responses: 2)
            #expect(r.replies.count == 2)
            #expect(r.replies.allSatisfy { $0.body == "until the end" && $0.header("transfer-encoding") == "chunked" })
            #expect(!r.closed)
            // HTTP/1.0: passed on as it came, ended by closing.
            let r10 = try await send(proxy, ["GET \(origin.url)/ HTTP/1.0\r\n\r\n"], responses: 9)
            #expect(r10.replies.first?.body == "until the end")
            #expect(r10.closed)
        }
    }
}
