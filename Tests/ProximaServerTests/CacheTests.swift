import Atomics
import Foundation
import NIOCore
import ProximaBalance
import ProximaConfig
import ProximaPolicy
import ProximaTesting
import Testing

@testable import ProximaServer

/// The memory cache through the proxy, both roles, against an origin that says how it may be
/// cached and numbers its answers (a body that repeats a number came from the cache).
@Suite("HTTP cache: memory store through the proxy")
struct CacheTests {
    /// Routes by path: the answer's caching fields, and a body carrying the answer's number.
    static func origin() async throws -> RawOrigin {
        let counter = ManagedAtomic(0)
        return try await RawOrigin.start(closeAfter: false) { head in
            let n = counter.wrappingIncrementThenLoad(ordering: .relaxed)
            let line = head.prefix { $0 != "\r" }
            let parts = line.split(separator: " ")
            let method = parts.first.map(String.init) ?? ""
            let path = parts.count > 1 ? String(parts[1]) : "/"
            func header(_ name: String) -> String {
                head.split(separator: "\r\n").first { $0.lowercased().hasPrefix(name + ":") }.map { String($0.dropFirst(name.count + 1)).trimmingCharacters(in: .whitespaces) } ?? ""
            }
            var fields = ["Cache-Control: max-age=60", "ETag: \"v\(n)\""]
            var body = "answer \(n)"
            let route = path.prefix(while: { $0 != "?" })
            switch route {
            case "/private": fields = ["Cache-Control: private, max-age=60"]
            case "/nostore": fields = ["Cache-Control: no-store"]
            case "/stale": fields = ["Cache-Control: max-age=0"]
            case "/cookie": fields = ["Cache-Control: max-age=60", "Set-Cookie: id=\(n)"]
            case "/vary":
                fields = ["Cache-Control: max-age=60", "Vary: Accept-Language"]
                body = "answer \(n) in \(header("accept-language"))"
            case "/proxyauth":
                // Fields of the proxy the answer came through are never stored (RFC 9111 3.1).
                fields = ["Cache-Control: max-age=60", "Proxy-Authenticate: Basic realm=\"up\"", "Proxy-Authentication-Info: x", "X-Kept: yes"]
            case "/big": body = String(repeating: "x", count: 5000) + " \(n)"
            case "/fields": fields = ["Cache-Control: max-age=60, private=\"X-User\", no-cache=\"X-Token\"", "X-User: alice", "X-Token: t1", "X-Kept: yes"]
            case "/validate":
                // Stale at once; the origin confirms it while its tag is unchanged.
                if header("if-none-match") == "\"fixed\"" {
                    // The 304 updates every field it carries, except Content-Length (it describes
                    // the stored body) and what is never stored (hop-by-hop, connection-listed).
                    return "HTTP/1.1 304 Not Modified\r\nETag: \"fixed\"\r\nCache-Control: max-age=60\r\nX-Refreshed: \(n)\r\n"
                        + "Content-Type: text/x-updated\r\nContent-Length: 999\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n"
                }
                fields = ["Cache-Control: max-age=0", "ETag: \"fixed\"", "X-Refreshed: no", "Content-Type: text/plain"]
            case "/changing": fields = ["Cache-Control: max-age=0", "ETag: \"v\(n)\""]
            case "/swr":
                if header("if-none-match") == "\"s\"" {
                    return "HTTP/1.1 304 Not Modified\r\nETag: \"s\"\r\nCache-Control: max-age=60\r\nX-Refreshed: \(n)\r\n\r\n"
                }
                fields = ["Cache-Control: max-age=0, stale-while-revalidate=60", "ETag: \"s\""]
            case "/fragile":
                // The origin fails every validation; the stored answer allows stale-if-error.
                if !header("if-none-match").isEmpty {
                    return "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown"
                }
                fields = ["Cache-Control: max-age=0, stale-if-error=600", "ETag: \"f\""]
            case "/strict":
                if !header("if-none-match").isEmpty {
                    return "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown"
                }
                fields = ["Cache-Control: max-age=0, must-revalidate, stale-if-error=600", "ETag: \"s\""]
            case "/chunked":
                let chunk = "answer \(n)"
                return "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n\(String(chunk.utf8.count, radix: 16))\r\n\(chunk)\r\n0\r\n\r\n"
            default: break
            }
            if method == "POST" { fields = path == "/form" ? ["Location: /item"] : [] }
            return "HTTP/1.1 200 OK\r\n" + fields.map { $0 + "\r\n" }.joined() + "Content-Length: \(body.utf8.count)\r\n\r\n" + (method == "HEAD" ? "" : body)
        }
    }

    static func reverse(_ c: inout ProximaConfiguration, origin: Int) {
        c.listeners = [ListenerConfig(name: "web", role: .reverse, address: ListenAddress(host: "127.0.0.1", port: 0))]
        c.access = AccessPolicy(rules: [AccessRule(name: "anyone", action: .allow, clients: [CIDR("0.0.0.0/0")!])])
        c.upstreams = [UpstreamGroupConfig(name: "app", servers: [Backend(host: "127.0.0.1", port: origin)])]
        c.routes = RouteTable([Route(name: "all", action: .upstream("app"))])
        c.cache.memory = ByteSize(bytes: 1 << 20)
        c.cache.maxObject = ByteSize(bytes: 4096)
    }

    static func get(_ proxy: RunningProxy, _ path: String, _ extra: String = "", method: String = "GET") async throws -> Reply {
        try #require(try await send(proxy, ["\(method) \(path) HTTP/1.1\r\nHost: www.example\r\n\(extra)\r\n"]).replies.first)
    }

    @Test func freshAnswersComeFromTheCache() async throws {
        let origin = try await Self.origin()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ Self.reverse(&$0, origin: origin.port) }) { proxy in
            let first = try await Self.get(proxy, "/page")
            #expect(first.body == "answer 1" && first.header("cache-status") == "proxima; fwd=uri-miss; stored", "\(first.headers("cache-status"))")
            let second = try await Self.get(proxy, "/page")
            #expect(second.body == "answer 1" && second.header("cache-status") == "proxima; hit", "\(second.body)")
            #expect(second.header("age").flatMap(Int.init) != nil && second.header("etag") == "\"v1\"")
            #expect(origin.requestsSeen == 1)
            // HEAD from the stored GET: the same fields and length, no body.
            let headRaw = try await send(proxy, ["HEAD /page HTTP/1.1\r\nHost: www.example\r\nConnection: close\r\n\r\n"]).raw
            let head = try #require(parseReplies(headRaw, headRequest: true).first)
            #expect(head.status == 200 && head.header("content-length") == "8" && head.body.isEmpty)
            // The client's own validators: 304 from the cache.
            let conditional = try await Self.get(proxy, "/page", "If-None-Match: \"v1\"\r\n")
            #expect(conditional.status == 304 && conditional.body.isEmpty && conditional.header("etag") == "\"v1\"")
            #expect(origin.requestsSeen == 1)
            // The request's no-cache goes to the origin (and the new answer replaces the old).
            let reload = try await Self.get(proxy, "/page", "Cache-Control: no-cache\r\n")
            #expect(reload.body == "answer 2")
            #expect(try await Self.get(proxy, "/page").body == "answer 2")
            // private="X-User" and no-cache="X-Token": stored without those fields.
            _ = try await Self.get(proxy, "/fields")
            let fields = try await Self.get(proxy, "/fields")
            #expect(fields.header("cache-status") == "proxima; hit" && fields.header("x-kept") == "yes")
            #expect(fields.header("x-user") == nil && fields.header("x-token") == nil)
            // A chunked answer is stored de-chunked and served with a length.
            _ = try await Self.get(proxy, "/chunked")
            let chunked = try await Self.get(proxy, "/chunked")
            #expect(chunked.body == "answer 4" && chunked.header("content-length") == "8" && chunked.header("transfer-encoding") == nil)
            _ = try await Self.get(proxy, "/proxyauth")
            let proxyAuth = try await Self.get(proxy, "/proxyauth")
            #expect(proxyAuth.header("cache-status") == "proxima; hit" && proxyAuth.header("x-kept") == "yes")
            #expect(proxyAuth.header("proxy-authenticate") == nil && proxyAuth.header("proxy-authentication-info") == nil, "\(proxyAuth.headers)")
            let results = jsonRecords(await proxy.waitForAccessLog(count: 8)).compactMap { $0["result"] as? String }
            #expect(results.contains("TCP_MEM_HIT") && results.contains("TCP_INM_HIT") && results.contains("TCP_MISS"), "\(results)")
        }
    }

    @Test func whatMustNotBeStoredIsNot() async throws {
        let origin = try await Self.origin()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ Self.reverse(&$0, origin: origin.port) }) { proxy in
            for path in ["/private", "/nostore", "/cookie", "/stale", "/big"] {
                let a = try await Self.get(proxy, path)
                let b = try await Self.get(proxy, path)
                #expect(a.body != b.body, "\(path) must not be served from the cache")
            }
            // A request with credentials is not stored (the answer has no public/s-maxage).
            let withAuth = try await Self.get(proxy, "/secret", "Authorization: Basic YTpi\r\n")
            let after = try await Self.get(proxy, "/secret")
            #expect(withAuth.body != after.body)
            // A request's no-store: neither served from nor put in the cache.
            _ = try await Self.get(proxy, "/ns", "Cache-Control: no-store\r\n")
            let fetched = try await Self.get(proxy, "/ns")
            #expect(fetched.header("cache-status") == "proxima; fwd=uri-miss; stored")
            // only-if-cached with nothing stored: 504 without asking the origin.
            let before = origin.requestsSeen
            let onlyCached = try await Self.get(proxy, "/never", "Cache-Control: only-if-cached\r\n")
            #expect(onlyCached.status == 504 && origin.requestsSeen == before)
        }
    }

    @Test func varyKeepsVariantsApart() async throws {
        let origin = try await Self.origin()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ Self.reverse(&$0, origin: origin.port) }) { proxy in
            let de = try await Self.get(proxy, "/vary", "Accept-Language: de\r\n")
            let fr = try await Self.get(proxy, "/vary", "Accept-Language: fr\r\n")
            #expect(de.body.hasSuffix("in de") && fr.body.hasSuffix("in fr"))
            #expect(try await Self.get(proxy, "/vary", "Accept-Language: de\r\n").body == de.body)
            #expect(try await Self.get(proxy, "/vary", "Accept-Language: fr\r\n").body == fr.body)
            #expect(origin.requestsSeen == 2)
        }
    }

    @Test func unsafeMethodsInvalidate() async throws {
        let origin = try await Self.origin()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ Self.reverse(&$0, origin: origin.port) }) { proxy in
            let first = try await Self.get(proxy, "/item")
            #expect(try await Self.get(proxy, "/item").body == first.body)
            _ = try await send(proxy, ["POST /item HTTP/1.1\r\nHost: www.example\r\nContent-Length: 1\r\n\r\nx"])
            let second = try await Self.get(proxy, "/item")
            #expect(second.body != first.body)
            // Any method not known to be safe invalidates, an extension method too (the caching
            // test suite uses M-SEARCH); a 5xx answer does not.
            #expect(try await Self.get(proxy, "/item").body == second.body)
            for method in ["PUT", "DELETE", "M-SEARCH"] {
                let before = try await Self.get(proxy, "/item").body
                _ = try await send(proxy, ["\(method) /item HTTP/1.1\r\nHost: www.example\r\nContent-Length: 3\r\n\r\nabc"])
                #expect(try await Self.get(proxy, "/item").body != before, "\(method)")
            }
        }
    }

    /// Stale answers are validated with the origin: a 304 makes the stored one answer again
    /// (with the 304's fields), a 200 replaces it, a failure serves it only under stale-if-error.
    @Test func staleAnswersAreValidated() async throws {
        let origin = try await Self.origin()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ Self.reverse(&$0, origin: origin.port) }) { proxy in
            let first = try await Self.get(proxy, "/validate")
            let second = try await Self.get(proxy, "/validate")
            #expect(second.status == 200 && second.body == first.body, "the stored body")
            #expect(second.header("x-refreshed") == "2" && second.header("cache-status") == "proxima; fwd=stale; fwd-status=304")
            #expect(second.header("content-type") == "text/x-updated" && second.header("content-length") == String(first.body.utf8.count), "\(second.headers)")
            #expect(second.header("x-hop") == nil)
            // Fresh now (the 304 said max-age=60): no third request to the origin.
            let third = try await Self.get(proxy, "/validate")
            #expect(third.body == first.body && third.header("cache-status") == "proxima; hit" && origin.requestsSeen == 2)

            let a = try await Self.get(proxy, "/changing")
            let b = try await Self.get(proxy, "/changing")
            #expect(a.body != b.body && b.header("etag") != a.header("etag"))

            let stored = try await Self.get(proxy, "/fragile")
            let whileDown = try await Self.get(proxy, "/fragile")
            #expect(whileDown.status == 200 && whileDown.body == stored.body, "stale-if-error: \(whileDown.status) \(whileDown.body)")
            _ = try await Self.get(proxy, "/strict")
            let strict = try await Self.get(proxy, "/strict")
            #expect(strict.status == 503, "must-revalidate forbids serving it stale")

            let results = jsonRecords(await proxy.waitForAccessLog(count: 9)).compactMap { $0["result"] as? String }
            for code in ["TCP_REFRESH_UNMODIFIED", "TCP_REFRESH_MODIFIED", "TCP_REFRESH_FAIL_OLD"] {
                #expect(results.contains(code), "\(code) in \(results)")
            }
        }
    }

    @Test func rangesAreCutFromStoredAnswers() async throws {
        let origin = try await Self.origin()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ Self.reverse(&$0, origin: origin.port) }) { proxy in
            let full = try await Self.get(proxy, "/page")  // "answer 1", stored
            #expect(full.body == "answer 1")
            let part = try await Self.get(proxy, "/page", "Range: bytes=2-5\r\n")
            #expect(part.status == 206 && part.body == "swer" && part.header("content-range") == "bytes 2-5/8", "\(part.status) \(part.body)")
            let suffix = try await Self.get(proxy, "/page", "Range: bytes=-1\r\n")
            #expect(suffix.status == 206 && suffix.body == "1")
            let beyond = try await Self.get(proxy, "/page", "Range: bytes=50-\r\n")
            #expect(beyond.status == 416 && beyond.header("content-range") == "bytes */8")
            // If-Range with another validator: the whole answer.
            let changed = try await Self.get(proxy, "/page", "Range: bytes=0-1\r\nIf-Range: \"other\"\r\n")
            #expect(changed.status == 200 && changed.body == "answer 1")
            #expect(origin.requestsSeen == 1)
        }
    }

    @Test func purgeAndLocationInvalidate() async throws {
        let origin = try await Self.origin()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ Self.reverse(&$0, origin: origin.port) }) { proxy in
            let first = try await Self.get(proxy, "/item")
            let again = try await Self.get(proxy, "/item")
            #expect(again.body == first.body)
            let purged = try await Self.get(proxy, "/item", method: "PURGE")
            let purgedTwice = try await Self.get(proxy, "/item", method: "PURGE")
            #expect(purged.status == 200 && purgedTwice.status == 404)
            let refetched = try await Self.get(proxy, "/item")
            #expect(refetched.body != first.body)
            // A POST elsewhere whose answer points at /item (Location) invalidates /item too.
            _ = try await send(proxy, ["POST /form HTTP/1.1\r\nHost: www.example\r\nContent-Length: 1\r\n\r\nx"])
            let afterPost = try await Self.get(proxy, "/item")
            #expect(afterPost.body != refetched.body)
        }
        // From a client outside purge_clients: refused.
        try await ProxyHarness.withProxy({ c in
            Self.reverse(&c, origin: origin.port)
            c.cache.purgeClients = [CIDR("10.0.0.0/8")!]
        }) { proxy in
            let refused = try await Self.get(proxy, "/item", method: "PURGE")
            #expect(refused.status == 403)
        }
    }

    /// Concurrent misses for one URL: one request reaches the origin, the others get its answer;
    /// for a URL whose answer is not storable, nobody waits for long (each fetches).
    @Test func concurrentMissesAreCollapsed() async throws {
        let counter = ManagedAtomic(0)
        let slow = try await RawOrigin.start(closeAfter: false, delay: .milliseconds(300)) { head in
            let n = counter.wrappingIncrementThenLoad(ordering: .relaxed)
            let cc = head.contains("/private") ? "private" : "max-age=60"
            let body = "answer \(n)"
            return "HTTP/1.1 200 OK\r\nCache-Control: \(cc)\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        }
        defer { Task { await slow.stop() } }
        try await ProxyHarness.withProxy({ Self.reverse(&$0, origin: slow.port) }) { proxy in
            let bodies = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<5 { group.addTask { try await Self.get(proxy, "/popular").body } }
                return try await group.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(bodies.count == 5 && Set(bodies).count == 1, "\(bodies)")
            #expect(slow.requestsSeen == 1)
            let before = slow.requestsSeen
            let privateBodies = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<3 { group.addTask { try await Self.get(proxy, "/private").body } }
                return try await group.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(Set(privateBodies).count == 3 && slow.requestsSeen == before + 3, "each gets its own answer: \(privateBodies)")
        }
    }

    /// The admin API's purge, by URL, for both roles' keys.
    @Test func adminPurgeByURL() async throws {
        let origin = try await Self.origin()
        defer { Task { await origin.stop() } }
        try await withAdminProxy(configure: { Self.reverse(&$0, origin: origin.port) }) { proxy, adminPort in
            let first = try await Self.get(proxy, "/doc?x=1")
            let cached = try await Self.get(proxy, "/doc?x=1")
            #expect(cached.body == first.body)
            let purged = try await admin(adminPort, "/purge?url=" + "http://www.example/doc?x=1".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!, method: "POST")
            #expect(purged.status == 200, "\(purged)")
            let again = try await admin(adminPort, "/purge?url=http%3A%2F%2Fwww.example%2Fdoc%3Fx%3D1", method: "POST")
            #expect(again.status == 404)
            let refetched = try await Self.get(proxy, "/doc?x=1")
            #expect(refetched.body != first.body)
            let status = try await admin(adminPort, "/status")
            #expect(status.body.contains("\"cache\" : \"1 URL, 0.0 MiB of 1.0 MiB in memory\""), "\(status.body.prefix(400))")
            let bad = try await admin(adminPort, "/purge?url=nonsense", method: "POST")
            #expect(bad.status == 400)
            let noToken = try await admin(adminPort, "/purge?url=http%3A%2F%2Fwww.example%2F", method: "POST", token: nil)
            #expect(noToken.status == 401)
        }
    }

    /// stale-while-revalidate: the stale answer at once, the refresh behind it.
    @Test func staleWhileRevalidateRefreshesInTheBackground() async throws {
        let origin = try await Self.origin()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ Self.reverse(&$0, origin: origin.port) }) { proxy in
            let first = try await Self.get(proxy, "/swr")
            let stale = try await Self.get(proxy, "/swr")
            #expect(stale.body == first.body && stale.header("cache-status") == "proxima; hit; fwd=stale; detail=stale-while-revalidate", "\(stale.headers("cache-status"))")
            // The refresh (a conditional request answered 304) makes it fresh again.
            #expect(await eventually { origin.requestsSeen == 2 })
            let refreshed = try await Self.get(proxy, "/swr")
            let fresh = try await eventually {
                let r = try await Self.get(proxy, "/swr")
                return r.header("cache-status") == "proxima; hit" && r.header("x-refreshed") == "2"
            }
            #expect(fresh, "\(refreshed.headers("cache-status"))")
            #expect(origin.requestsSeen == 2)
            let results = jsonRecords(await proxy.waitForAccessLog(count: 3)).compactMap { $0["result"] as? String }
            #expect(results.contains("TCP_STALE_HIT"), "\(results)")
        }
    }

    /// The forward role caches by absolute URL.
    @Test func forwardProxyCachesToo() async throws {
        let origin = try await Self.origin()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ $0.cache.memory = ByteSize(bytes: 1 << 20) }) { proxy in
            func get() async throws -> Reply {
                try #require(try await send(proxy, ["GET \(origin.url)/page HTTP/1.1\r\nHost: 127.0.0.1:\(origin.port)\r\n\r\n"]).replies.first)
            }
            let a = try await get()
            let b = try await get()
            #expect(a.body == "answer 1" && b.body == "answer 1" && b.header("cache-status") == "proxima; hit")
            #expect(origin.requestsSeen == 1)
        }
    }
}

/// Which stored URL a `Location` or `Content-Location` of an unsafe request's answer names
/// (RFC 9111 section 4.4: the same origin only; references resolved as RFC 3986 section 5.2 says).
@Suite("Invalidation targets")
struct InvalidationTargetTests {
    @Test(arguments: [
        ("/item", "http://h:81/item"),
        ("/a/./b/../c", "http://h:81/a/c"),
        ("item", "http://h:81/dir/item"),
        ("../up?x=1", "http://h:81/up?x=1"),
        ("./", "http://h:81/dir/"),
        ("http://h:81/other", "http://h:81/other"),
        ("HTTP://H:81/other", "http://h:81/other"),
    ])
    func sameOrigin(location: String, expected: String) {
        #expect(ClientHandler.sameOriginKey(location, of: "http://h:81/dir/page?q=1") == expected)
    }

    @Test(arguments: ["http://elsewhere/item", "//h:81/item", "https://h:81/item", "mailto:a@b", "", "?q=2", "#frag"])
    func otherOriginsAreLeftAlone(location: String) {
        #expect(ClientHandler.sameOriginKey(location, of: "http://h:81/dir/page?q=1") == nil)
    }
}
