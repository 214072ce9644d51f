import Atomics
import Foundation
import ProximaBalance
import ProximaConfig
import ProximaPolicy
import ProximaTesting
import Testing

@testable import ProximaServer

/// On-the-fly compression through the proxy, decoded by curl (zlib and Brotli of its own).
@Suite("Compression of answers (gzip, Brotli)")
struct CompressionTests {
    static let text = String(repeating: "Proxima compresses text on the fly. ", count: 200)

    static func origin() async throws -> RawOrigin {
        try await RawOrigin.start(closeAfter: false) { head in
            let path = head.split(separator: " ").dropFirst().first.map(String.init) ?? "/"
            let body = text
            switch path {
            case "/small": return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nsmall"
            case "/png": return "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            case "/encoded": return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nGZIP"
            case "/notransform":
                return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: no-transform\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            case "/chunked":
                return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\(String(body.utf8.count, radix: 16))\r\n\(body)\r\n0\r\n\r\n"
            default:
                return "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nETag: \"abc\"\r\nVary: Accept-Language\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            }
        }
    }

    /// A reverse listener in front of `origin`, compression on.
    static func reverse(_ c: inout ProximaConfiguration, origin: Int) {
        c.listeners = [ListenerConfig(name: "web", role: .reverse, address: ListenAddress(host: "127.0.0.1", port: 0))]
        c.access = AccessPolicy(rules: [AccessRule(name: "anyone", action: .allow, clients: [CIDR("0.0.0.0/0")!])])
        c.upstreams = [UpstreamGroupConfig(name: "app", servers: [Backend(host: "127.0.0.1", port: origin)])]
        c.routes = RouteTable([Route(name: "all", action: .upstream("app"))])
        c.compression.enabled = true
    }

    /// curl's view: status, headers (lowercased names), decoded body, bytes on the wire.
    static func curl(_ url: String, _ extra: [String]) async throws -> (headers: String, body: String, wire: Int) {
        let headerFile = makeTempPath("proxima-curl-headers", ".txt")
        defer { unlink(headerFile) }
        let r = try await run(curlPath, ["-sS", "--max-time", "20", "-D", headerFile, "-w", "\n%{size_download}"] + extra + [url])
        let parts = r.output.components(separatedBy: "\n")
        return ((readFile(headerFile) ?? "").lowercased(), parts.dropLast().joined(separator: "\n"), Int(parts.last ?? "") ?? -1)
    }

    @Test func textIsCompressedForClientsThatAcceptIt() async throws {
        let origin = try await Self.origin()
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ c in
            Self.reverse(&c, origin: origin.port)
        }) { proxy in
            let base = "http://127.0.0.1:\(proxy.port)"
            for coding in ["gzip", "br"] {
                let r = try await Self.curl(base + "/page", ["--compressed", "-H", "Accept-Encoding: \(coding)"])
                #expect(r.headers.contains("content-encoding: \(coding)"), "\(coding): \(r.headers)")
                #expect(r.body == Self.text, "\(coding): decodes to the original")
                #expect(r.wire < Self.text.utf8.count / 5, "\(coding): \(r.wire) bytes on the wire")
                #expect(r.headers.contains("vary: accept-language, accept-encoding") && r.headers.contains("etag: w/\"abc\""), "\(r.headers)")
                #expect(r.headers.contains("transfer-encoding: chunked") && !r.headers.contains("content-length"))
            }
            // Preference: Brotli when both are accepted; q=0 refuses.
            let both = try await Self.curl(base + "/page", ["--compressed", "-H", "Accept-Encoding: gzip, br"])
            #expect(both.headers.contains("content-encoding: br"))
            let refused = try await Self.curl(base + "/page", ["--compressed", "-H", "Accept-Encoding: br;q=0, gzip"])
            #expect(refused.headers.contains("content-encoding: gzip"))
            // A chunked JSON answer is compressed as it streams.
            let chunked = try await Self.curl(base + "/chunked", ["--compressed", "-H", "Accept-Encoding: gzip"])
            #expect(chunked.headers.contains("content-encoding: gzip") && chunked.body == Self.text)
            // An HTTP/1.0 client gets it delimited by the close.
            let old = try await Self.curl(base + "/page", ["--http1.0", "--compressed", "-H", "Accept-Encoding: gzip"])
            #expect(old.headers.contains("content-encoding: gzip") && old.body == Self.text && old.headers.contains("connection: close"))
            // Left alone: no Accept-Encoding, too small, not text, already encoded, no-transform.
            let plain = try await Self.curl(base + "/page", [])
            #expect(!plain.headers.contains("content-encoding") && plain.wire == Self.text.utf8.count && plain.headers.contains("etag: \"abc\""))
            for path in ["/small", "/png", "/notransform"] {
                let r = try await Self.curl(base + path, ["-H", "Accept-Encoding: gzip, br"])
                #expect(!r.headers.contains("content-encoding"), "\(path)")
            }
            let encoded = try await Self.curl(base + "/encoded", ["-H", "Accept-Encoding: gzip, br"])
            #expect(encoded.headers.contains("content-encoding: gzip") && encoded.body == "GZIP", "never twice")
        }
    }

    /// Cache hits are compressed too: the first hit by a client that accepts a coding makes a
    /// compressed copy, later hits are served from it (with a length, no chunking), clients
    /// that accept none get the stored answer as it is, and a copy of an answer since replaced
    /// is never served.
    @Test func cacheHitsAreCompressedAndTheCopiesKeptApart() async throws {
        let counter = ManagedAtomic(0)
        let origin = try await RawOrigin.start(closeAfter: false) { _ in
            let n = counter.wrappingIncrementThenLoad(ordering: .relaxed)
            let body = "version \(n). " + CompressionTests.text
            return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=60\r\nETag: \"v\(n)\"\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        }
        defer { Task { await origin.stop() } }
        try await ProxyHarness.withProxy({ c in
            Self.reverse(&c, origin: origin.port)
            c.cache.memory = ByteSize(bytes: 1 << 20)
        }) { (proxy: RunningProxy) async throws in
            let url = "http://127.0.0.1:\(proxy.port)/doc"
            let v1 = "version 1. " + Self.text
            let miss = try await Self.curl(url, ["--compressed", "-H", "Accept-Encoding: gzip"])
            #expect(miss.body == v1 && miss.headers.contains("content-encoding: gzip") && miss.headers.contains("cache-status: proxima; fwd=uri-miss; stored"), "\(miss.headers)")
            for _ in 0..<2 {
                let hit = try await Self.curl(url, ["--compressed", "-H", "Accept-Encoding: br"])
                #expect(hit.body == v1 && hit.headers.contains("content-encoding: br") && hit.headers.contains("cache-status: proxima; hit"), "\(hit.headers)")
                #expect(hit.headers.contains("etag: w/\"v1\"") && hit.headers.contains("vary: accept-encoding") && hit.headers.contains("content-length: \(hit.wire)"), "\(hit.headers)")
                #expect(hit.wire < v1.utf8.count / 5)
            }
            // The copy is held apart: still one URL in the cache.
            #expect(proxy.server.cacheSummary?.hasPrefix("1 URL, ") == true, "\(proxy.server.cacheSummary ?? "")")
            // The client's validator of the compressed copy: a 304 that describes that copy.
            let revalidated = try await Self.curl(url, ["-H", "Accept-Encoding: br", "-H", "If-None-Match: W/\"v1\""])
            #expect(revalidated.headers.hasPrefix("http/1.1 304") && revalidated.headers.contains("etag: w/\"v1\""), "\(revalidated.headers)")
            #expect(revalidated.headers.contains("vary: accept-encoding"), "\(revalidated.headers)")
            let plain = try await Self.curl(url, [])
            #expect(plain.body == v1 && !plain.headers.contains("content-encoding") && plain.headers.contains("etag: \"v1\""), "\(plain.headers)")
            #expect(origin.requestsSeen == 1)

            _ = try await run(curlPath, ["-sS", "-X", "PURGE", url])
            let v2 = "version 2. " + Self.text
            #expect(try await Self.curl(url, ["--compressed", "-H", "Accept-Encoding: br"]).body == v2)
            let again = try await Self.curl(url, ["--compressed", "-H", "Accept-Encoding: br"])
            #expect(again.body == v2 && again.headers.contains("cache-status: proxima; hit"), "the copy of the purged answer is gone")
            let results = jsonRecords(await proxy.waitForAccessLog(count: 8)).compactMap { $0["result"] as? String }
            #expect(results == ["TCP_MISS", "TCP_MEM_HIT", "TCP_MEM_HIT", "TCP_INM_HIT", "TCP_MEM_HIT", "TAG_NONE", "TCP_MISS", "TCP_MEM_HIT"], "\(results)")
        }
    }
}
