import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import ProximaAuth
import ProximaConfig

/// What a reload asked for through the admin API came to.
public struct ReloadOutcome: Sendable, Equatable {
    public enum Result: String, Sendable { case reloaded, refused, unavailable }
    public var result: Result
    public var message: String

    public init(_ result: Result, _ message: String) {
        self.result = result
        self.message = message
    }
}

extension ProximaServer {
    /// The admin API's listener: its own socket, its own (NIOHTTP1) pipeline, never reachable
    /// through a proxy listener. Not a hot path, so the stock codec is fine here.
    func bindAdmin(_ admin: AdminConfig) async throws -> Channel {
        let bootstrap = ServerBootstrap(group: services.group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(server: self))
                }
            }
        do {
            return try await bootstrap.bind(host: admin.address.host, port: admin.address.port).get()
        } catch {
            throw ServerStartError(description: "cannot listen on \(admin.address) (admin): \(error)")
        }
    }

    /// Everything /status reports; also what the dashboard will draw.
    struct Status: Encodable {
        struct ListenerStatus: Encodable {
            var name: String
            var address: String
            var openConnections: Int
            var openTunnels: Int
            var requests: Int
            var requestsByStatus: [String: Int]
        }
        var version: String
        var startTime: Int
        var uptimeSeconds: Int
        var draining: Bool
        var listeners: [ListenerStatus]
        var openConnections: Int
        var upstreamIdleConnections: Int
        var accessLogDropped: Int
        var dnsLookups: Int
        var requests: Int
        /// Mean over the last 10 seconds.
        var requestsPerSecond: Double
        var requestsByStatus: [String: Int]
        var latencyMs: Latency?
        var topHosts: [HostCount]
        var topDenied: [HostCount]
        /// One point a second for the last five minutes: [unix time, none, 1xx, 2xx, 3xx, 4xx, 5xx].
        var history: [[Int]]
        /// Not in this version yet: said plainly rather than shown as zeros.
        var cache: String?
        /// Each upstream group's servers: up (active checks), ejected (outlier detection), in flight.
        var upstreams: [String: [UpstreamServerStatus]]

        struct Latency: Encodable {
            var windowSeconds: Int
            var count: Int
            var p50: Double
            var p90: Double
            var p99: Double
        }

        struct HostCount: Encodable {
            var host: String
            var requests: Int
        }
    }

    func status(idleUpstream: Int) -> Status {
        let listeners = currentListeners.map { l -> Status.ListenerStatus in
            let classes = ListenerMetrics.statusClasses
            var byStatus: [String: Int] = [:]
            for (i, c) in l.metrics.requestsByClass.enumerated() { byStatus[classes[i]] = c.load(ordering: .relaxed) }
            return Status.ListenerStatus(
                name: l.name, address: l.channel.localAddress.map(socketText) ?? l.address.description,
                openConnections: l.open.load(ordering: .relaxed), openTunnels: l.metrics.openTunnels.load(ordering: .relaxed),
                requests: byStatus.values.reduce(0, +), requestsByStatus: byStatus)
        }
        let live = metrics.live
        let samples = live.samples
        let recent = samples.suffix(10)
        let perSecond = recent.isEmpty ? 0 : Double(recent.reduce(0) { $0 + $1.byClass.reduce(0, +) }) / Double(recent.count)
        var byStatus: [String: Int] = [:]
        for l in listeners { byStatus.merge(l.requestsByStatus, uniquingKeysWith: +) }
        let latency = live.percentiles().map {
            Status.Latency(windowSeconds: 60, count: $0.count, p50: ($0.p50 * 1000).rounded() / 1000, p90: ($0.p90 * 1000).rounded() / 1000, p99: ($0.p99 * 1000).rounded() / 1000)
        }
        return Status(
            version: proximaVersion, startTime: startTime, uptimeSeconds: wallClock().0 - startTime, draining: isDraining,
            listeners: listeners, openConnections: listeners.reduce(0) { $0 + $1.openConnections },
            upstreamIdleConnections: idleUpstream, accessLogDropped: currentAccessLog.droppedCount,
            dnsLookups: services.resolver.lookups.load(ordering: .relaxed),
            requests: listeners.reduce(0) { $0 + $1.requests }, requestsPerSecond: (perSecond * 10).rounded() / 10,
            requestsByStatus: byStatus, latencyMs: latency,
            topHosts: live.hosts.top(10).map { Status.HostCount(host: $0.key, requests: $0.count) },
            topDenied: live.denied.top(10).map { Status.HostCount(host: $0.key, requests: $0.count) },
            history: samples.map { [$0.time] + $0.byClass },
            cache: cacheSummary, upstreams: upstreamStatus)
    }
}

func socketText(_ a: SocketAddress) -> String {
    guard let ip = a.ipAddress, let port = a.port else { return a.description }
    return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
}

/// Routes one admin request at a time per connection (HTTP/1.1 keep-alive, no pipelining needed:
/// NIOHTTP1's pipelining handler queues for us).
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Admin requests carry no meaningful body; anything larger is refused.
    static let maxBody = 64 * 1024

    let server: ProximaServer
    private var head: HTTPRequestHead?
    private var bodyBytes = 0

    init(server: ProximaServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            bodyBytes = 0
        case .body(let b):
            bodyBytes += b.readableBytes
        case .end:
            guard let head else { return }
            self.head = nil
            if bodyBytes > Self.maxBody {
                return respond(context, head, .payloadTooLarge, "text/plain", "request body too large\n", close: true)
            }
            route(context, head)
        }
    }

    struct Reply: Sendable {
        var status: HTTPResponseStatus
        var contentType: String
        var body: [UInt8]
        var extraHeaders: [(String, String)] = []
    }

    private func route(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let isRead = head.method == .GET || head.method == .HEAD
        switch path {
        case "/", "/dashboard":
            guard isRead else { return methodNotAllowed(context, head, "GET, HEAD") }
            // Static, no data in it: the page asks /status with the token itself.
            return respond(
                context, head, .ok, "text/html; charset=utf-8", Dashboard.html,
                extra: [
                    ("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"),
                    ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"),
                ])
        case "/healthz":
            guard isRead else { return methodNotAllowed(context, head, "GET, HEAD") }
            return respond(context, head, .ok, "text/plain; charset=utf-8", "ok\n")
        case "/readyz":
            guard isRead else { return methodNotAllowed(context, head, "GET, HEAD") }
            if server.isDraining { return respond(context, head, .serviceUnavailable, "text/plain; charset=utf-8", "draining\n") }
            return respond(context, head, .ok, "text/plain; charset=utf-8", "ready\n")
        case "/metrics", "/status", "/config", "/reload", "/purge":
            guard authorized(head) else {
                return respond(
                    context, head, .unauthorized, "text/plain; charset=utf-8", "a bearer token is required (Authorization: Bearer ...)\n",
                    extra: [("WWW-Authenticate", "Bearer realm=\"proxima-admin\"")])
            }
        default:
            return respond(context, head, .notFound, "text/plain; charset=utf-8", "not found; try /healthz /readyz /status /metrics /config, POST /reload, POST /purge?url=…\n")
        }
        let server = self.server
        let loop = context.eventLoop
        let reply: EventLoopFuture<Reply>
        switch path {
        case "/metrics":
            guard isRead else { return methodNotAllowed(context, head, "GET, HEAD") }
            reply = server.services.pools.idleCount(on: loop).map { idle in
                let log = server.currentAccessLog
                let text = server.metrics.exposition(
                    droppedRecords: log.droppedCount, dnsLookups: server.services.resolver.lookups.load(ordering: .relaxed),
                    idleUpstreamConnections: idle)
                return Reply(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: text)
            }
        case "/status":
            guard isRead else { return methodNotAllowed(context, head, "GET, HEAD") }
            reply = server.services.pools.idleCount(on: loop).flatMapThrowing { idle in
                let encoder = JSONEncoder()
                encoder.keyEncodingStrategy = .convertToSnakeCase
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                var body = Array(try encoder.encode(server.status(idleUpstream: idle)))
                body.append(UInt8(ascii: "\n"))
                return Reply(status: .ok, contentType: "application/json", body: body)
            }
        case "/config":
            guard isRead else { return methodNotAllowed(context, head, "GET, HEAD") }
            reply = loop.makeSucceededFuture(
                Reply(status: .ok, contentType: "application/yaml; charset=utf-8", body: Array(server.configuration.yaml().utf8)))
        case "/purge":
            guard head.method == .POST else { return methodNotAllowed(context, head, "POST") }
            let query = head.uri.split(separator: "?", maxSplits: 1).dropFirst().first.map(String.init) ?? ""
            let url = query.split(separator: "&").compactMap { pair -> String? in
                let kv = pair.split(separator: "=", maxSplits: 1)
                guard kv.count == 2, kv[0] == "url" else { return nil }
                return String(kv[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
            }.first
            guard let url, url.hasPrefix("http://") || url.hasPrefix("https://") else {
                return respond(context, head, .badRequest, "text/plain; charset=utf-8", "POST /purge?url=http://host/path (an absolute, URL-encoded URL)\n")
            }
            guard let removed = server.purge(url: url) else {
                return respond(context, head, .conflict, "text/plain; charset=utf-8", "the cache is off (cache.memory)\n")
            }
            reply = loop.makeSucceededFuture(
                Reply(status: removed ? .ok : .notFound, contentType: "text/plain; charset=utf-8", body: Array((removed ? "purged\n" : "not cached\n").utf8)))
        default:  // /reload
            guard head.method == .POST else { return methodNotAllowed(context, head, "POST") }
            let promise = loop.makePromise(of: Reply.self)
            promise.completeWithTask {
                guard let action = server.reloadAction else {
                    return Reply(status: .notImplemented, contentType: "application/json", body: reloadJSON(.unavailable, "this server has no reload source"))
                }
                let outcome = await action()
                let status: HTTPResponseStatus =
                    switch outcome.result {
                    case .reloaded: .ok
                    case .refused: .unprocessableEntity
                    case .unavailable: .conflict
                    }
                return Reply(status: status, contentType: "application/json", body: reloadJSON(outcome.result, outcome.message))
            }
            reply = promise.futureResult
        }
        reply.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let r): self.respond(context, head, r.status, r.contentType, r.body, extra: r.extraHeaders)
            case .failure(let e): self.respond(context, head, .internalServerError, "text/plain; charset=utf-8", "\(e)\n")
            }
        }
    }

    /// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
    private func authorized(_ head: HTTPRequestHead) -> Bool {
        guard let token = server.adminSettings?.token else { return true }
        guard let value = head.headers.first(name: "authorization"), value.hasPrefix("Bearer ") else { return false }
        return constantTimeEquals(Array(value.dropFirst("Bearer ".count).utf8), Array(token.utf8))
    }

    private func methodNotAllowed(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, _ allow: String) {
        respond(context, head, .methodNotAllowed, "text/plain; charset=utf-8", "method not allowed\n", extra: [("Allow", allow)])
    }

    private func respond(
        _ context: ChannelHandlerContext, _ head: HTTPRequestHead, _ status: HTTPResponseStatus, _ type: String, _ text: String,
        extra: [(String, String)] = [], close: Bool = false
    ) {
        respond(context, head, status, type, Array(text.utf8), extra: extra, close: close)
    }

    private func respond(
        _ context: ChannelHandlerContext, _ request: HTTPRequestHead, _ status: HTTPResponseStatus, _ type: String, _ body: [UInt8],
        extra: [(String, String)] = [], close: Bool = false
    ) {
        var headers = HTTPHeaders([("Content-Type", type), ("Content-Length", String(body.count)), ("Cache-Control", "no-store")])
        for (k, v) in extra { headers.add(name: k, value: v) }
        let keepAlive = request.isKeepAlive && !close
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive { done.assumeIsolated().whenComplete { _ in context.close(promise: nil) } }
    }
}

private func reloadJSON(_ result: ReloadOutcome.Result, _ message: String) -> [UInt8] {
    struct Body: Encodable {
        var result: String
        var message: String
    }
    let data = (try? JSONEncoder().encode(Body(result: result.rawValue, message: message))) ?? Data("{}".utf8)
    return Array(data) + [UInt8(ascii: "\n")]
}
