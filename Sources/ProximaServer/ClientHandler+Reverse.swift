import NIOCore
import ProximaBalance
import ProximaHTTP1
import ProximaPolicy
import ProximaTelemetry

/// The reverse role's steps of a request: the route decides (proxy to a group, redirect, or a
/// fixed answer), the group picks a server, failures are retried elsewhere within the budget,
/// and the forwarding headers are made.
extension ClientHandler {
    /// A request to a reverse listener: the route decides (proxy to a group, redirect, or a
    /// fixed answer); the access rules apply as to forward requests.
    func startReverse(_ cur: Current, _ head: RequestHead) {
        guard head.target.hasPrefix("/") else {
            return respondLocally(400, "This server takes requests for paths (GET /path HTTP/1.1).", result: .none)
        }
        let hostValue = head.firstValue("host") ?? ""
        let host = Self.hostWithoutPort(hostValue)
        if let port = redirectHTTPS {
            return redirectToHTTPS(cur, head, host: host, port: port)
        }
        guard let route = settings.routes.route(host: host, pathAndQuery: head.target, method: head.method, header: { head.firstValue($0) }) else {
            cur.record.detail = "no route"
            return respondLocally(404, "No route for \(hostValue.isEmpty ? "this host" : hostValue)\(head.target.prefix { $0 != "?" }).", result: .none)
        }
        if let limit = route.maxBody { cur.maxBody = limit }
        if let t = route.timeout { cur.responseTimeout = .nanoseconds(Int64(t * 1e9)) }
        if bodyTooLarge(cur) { return }
        // Without a rule that needs a user, no closure is made (an allocation per request).
        guard settings.policy.usesIdentity, settings.auth != nil else {
            return admitReverse(cur, route, host: host, hostValue: hostValue, user: nil, failedLogin: false)
        }
        identifyUser(cur, field: "authorization") { [self] user, failed in
            admitReverse(cur, route, host: host, hostValue: hostValue, user: user, failedLogin: failed)
        }
    }

    /// A plain listener's answer to everything: the same URL on `https://` (301 for GET and
    /// HEAD as nginx does, 308 otherwise so that the method and body are kept).
    func redirectToHTTPS(_ cur: Current, _ head: RequestHead, host: String, port: Int) {
        guard !host.isEmpty, host.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: "@") }) else {
            return respondLocally(400, "A request needs a Host to be redirected to HTTPS.", result: .none)
        }
        let bracketed = host.contains(":") ? "[\(host)]" : host
        let authority = port == 443 ? bracketed : "\(bracketed):\(port)"
        let location = "https://\(authority)\(head.target)"
        cur.record.detail = "redirect to https"
        let status = head.method == "GET" || head.method == "HEAD" ? 301 : 308
        respondLocally(status, "Moved to \(location).", result: .none, headers: [("Location", location)])
    }

    /// The access rules for a reverse request (a rule that needs a user answers 401 with
    /// `WWW-Authenticate`), then the route's action.
    func admitReverse(_ cur: Current, _ route: Route, host: String, hostValue: String, user: String?, failedLogin: Bool) {
        let head = cur.head
        if let ip = clientIP {
            // The absolute URL is built only when a rule looks at URLs.
            let url = settings.policy.usesURL ? "\(isSecure ? "https" : "http")://\(hostValue)\(head.target)" : head.target
            var request = AccessRequest(
                client: ip, method: head.method, host: host, port: isSecure ? 443 : 80, url: url, scheme: isSecure ? "https" : "http",
                time: cur.record.startSeconds)
            if let user {
                cur.record.user = user
                request.user = user
                request.groups = settings.auth?.groups?.groupsByUser[user] ?? []
            }
            let decision = settings.policy.evaluate(request, headers: RequestHeaders(current: cur))
            if decision.challenge { return challenge(cur, decision, failedLogin: failedLogin, reverse: true) }
            if !decision.allowed {
                cur.record.detail = decision.rule.map { "rule \($0)" } ?? "default deny"
                cur.pageFields = [("rule", decision.rule ?? "(default deny)")]
                metrics.denied(by: decision.rule.map { "access rule \($0)" } ?? "access default deny")
                return respondLocally(403, "Access denied: \(decision.explanation).", result: .denied)
            }
        }
        switch route.action {
        case .respond(let status, let body, let type):
            cur.record.detail = "route \(route.name)"
            respondLocally(status, body, result: .none, body: (Array(body.utf8), type))
        case .redirect(_, let status, _):
            let location = route.location(head.target) ?? "/"
            cur.record.detail = "route \(route.name)"
            respondLocally(status, "Moved to \(location).", result: .none, headers: [("Location", location)])
        case .upstream(let name):
            guard let group = settings.upstreams.byName[name] else {
                return respondLocally(502, "The route's upstream group '\(name)' does not exist.", result: .none)
            }
            if settings.cache != nil,
                answerFromCache(cur, key: (isSecure ? "https://" : "http://") + hostValue.lowercased() + head.target, next: .reverse(route, group, hostValue: hostValue))
            {
                return
            }
            proxy(cur, route, group, hostValue: hostValue)
        }
    }

    /// Sends a reverse request to a server of `group`; when every usable server is at its
    /// connection limit, waits in the group's queue (bounded in length and time) for a slot.
    func proxy(_ cur: Current, _ route: Route, _ group: UpstreamGroup, hostValue: String) {
        let head = cur.head
        let name = group.config.name
        guard let server = group.pick(key: hashKey(group.config.algorithm, cur, hostValue), tried: ServerSet()) else {
            if let context {
                let loop = context.eventLoop
                let me = NIOLoopBound(self, eventLoop: loop)
                let waiting = NIOLoopBound(cur, eventLoop: loop)
                if let id = group.enqueue({
                    loop.execute {
                        let handler = me.value
                        let cur = waiting.value
                        guard handler.current === cur, cur.queued else { return group.wakeNext() }
                        cur.queued = false
                        handler.proxy(cur, route, group, hostValue: hostValue)
                    }
                }) {
                    cur.queued = true
                    cur.queueID = id
                    if cur.queueTimer == nil {
                        cur.queueTimer = loop.scheduleTask(in: .nanoseconds(Int64(group.config.queueTimeout * 1e9))) {
                            let handler = me.value
                            let cur = waiting.value
                            // Out of the queue even when the client has gone, so it does not hold a place.
                            guard cur.queued, group.leaveQueue(cur.queueID), handler.current === cur else { return }
                            cur.queued = false
                            cur.record.detail = "queue timeout in upstream \(name)"
                            handler.respondLocally(503, "Every server of '\(name)' stayed busy for \(group.config.queueTimeout)s.", result: .none)
                        }
                    }
                    return
                }
            }
            cur.queueTimer?.cancel()
            let full = group.config.queueLimit > 0 && group.queueLength >= group.config.queueLimit
            cur.record.detail = full ? "queue of upstream \(name) full" : "no usable server in upstream \(name)"
            return respondLocally(
                503, full ? "Every server of '\(name)' is busy and its queue is full." : "No server of the upstream group '\(name)' is available.",
                result: .none)
        }
        cur.queueTimer?.cancel()
        let pathAndQuery = route.rewrite(head.target)
        var tried = ServerSet()
        tried.insert(server)
        cur.reverse = ReverseTarget(
            group: group, route: route, server: server, tried: tried,
            hostHeader: route.hostHeader == .keep && !hostValue.isEmpty ? hostValue : group.targets[server].authority,
            pathAndQuery: pathAndQuery)
        cur.record.result = .miss
        connectReverse(cur)
    }

    func connectReverse(_ cur: Current) {
        guard let r = cur.reverse else { return }
        let target = r.group.targets[r.server].with(pathAndQuery: r.pathAndQuery)
        cur.target = target
        connectUpstream(cur, target, reuse: true)
    }

    /// The hashing key the group's algorithm asks for.
    func hashKey(_ algorithm: BalanceAlgorithm, _ cur: Current, _ host: String) -> String? {
        guard case .hash(let key, _) = algorithm else { return nil }
        switch key {
        case .clientAddress: return clientIP.map { "\($0)" }
        case .url: return host + cur.head.target
        case .header(let name): return cur.head.firstValue(name)
        case .cookie(let name):
            guard let cookies = cur.head.firstValue("cookie") else { return nil }
            for part in cookies.split(separator: ";") {
                let kv = part.split(separator: "=", maxSplits: 1)
                if kv.count == 2, kv[0].drop(while: { $0 == " " }) == name { return String(kv[1]) }
            }
            return nil
        }
    }

    /// A body announced larger than the limit is refused before anything goes upstream (413;
    /// the connection closes, as the body would have to be read to find the next request).
    func bodyTooLarge(_ cur: Current) -> Bool {
        guard let limit = cur.maxBody, case .length(let n) = cur.head.framing, n > limit else { return false }
        cur.record.detail = "request body of \(n) bytes over the limit of \(limit)"
        respondLocally(413, "The request body (\(n) bytes) is larger than this server accepts (\(limit) bytes).", result: .none)
        return true
    }

    /// Reports how the request to the current server ended (once): latency for the balancer,
    /// success or failure for outlier detection.
    func reportReverse(_ cur: Current, ok: Bool) {
        guard let r = cur.reverse, !r.reported else { return }
        r.reported = true
        let seconds = cur.upstreamHeadNanoseconds.map { Double($0) / 1e9 }
        r.group.finished(r.server, seconds: ok ? seconds : nil, ok: ok)
    }

    /// Connecting failed: the next server of the group, while tries and the budget allow.
    func retryReverse(_ cur: Current) -> Bool {
        guard nextReverseServer(cur) else { return false }
        connectReverse(cur)
        return true
    }

    /// Reports the current server as failed and reserves another one (not tried yet), if the
    /// group's retries and budget allow.
    func nextReverseServer(_ cur: Current) -> Bool {
        guard let r = cur.reverse else { return false }
        reportReverse(cur, ok: false)
        guard r.tried.count <= r.group.config.retries, let next = r.group.pick(key: hashKey(r.group.config.algorithm, cur, r.hostHeader), tried: r.tried) else {
            return false
        }
        r.server = next
        r.tried.insert(next)
        r.reported = false
        return true
    }

    /// Whether a reverse request may go to another server after this one failed without
    /// answering (or answered 502/503): idempotent, no body (bodies are streamed, not kept),
    /// nothing sent to the client yet.
    func mayRetryElsewhere(_ cur: Current) -> Bool {
        cur.reverse != nil && cur.isIdempotent && cur.requestBodyDone && !cur.responseStarted
            && (cur.head.framing == .none || cur.head.framing == .length(0))
    }

    /// Drops the current server's connection and sends the request to the next one.
    func resendElsewhere(_ cur: Current, because reason: String) {
        cur.record.detail = reason
        cur.responseHeadBuffer = nil
        cur.response = .head
        detachUpstream(cur, reusable: false)
        phase = .connecting
        connectReverse(cur)
    }

    /// Whether the client is one of `proxy.trusted_proxies` (a load balancer in front).
    var clientIsTrustedProxy: Bool {
        guard let ip = clientIP, !settings.trustedProxies.isEmpty else { return false }
        return settings.trustedProxies.contains { $0.contains(ip) }
    }

    /// This hop's RFC 7239 element: `for`, `host`, `proto` (IPv6 and any value with a colon
    /// quoted, as the RFC's grammar requires).
    func forwardedElement(_ cur: Current) -> String {
        func value(_ v: String) -> String {
            v.utf8.allSatisfy { isTokenByte($0) } ? v : "\"" + v.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }
        let client = clientIP.map { ip -> String in
            let text = "\(ip)"
            return text.contains(":") ? "\"[\(text)]\"" : text
        } ?? "unknown"
        let host = cur.head.firstValue("host") ?? ""
        return "for=\(client);host=\(value(host));proto=\(isSecure ? "https" : "http")"
    }

    func isTokenByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || "!#$%&'*+-.^_`|~".utf8.contains(b)
    }

    static func hostWithoutPort(_ value: String) -> String {
        let v = value.lowercased()
        if v.hasPrefix("[") { return String(v.dropFirst().prefix { $0 != "]" }) }
        return String(v.prefix { $0 != ":" })
    }
}
