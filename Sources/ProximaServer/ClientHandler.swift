import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ProximaAuth
import ProximaBalance
import ProximaCache
import ProximaHTTP1
import ProximaPolicy
import ProximaTelemetry

/// One client connection of a forward listener: reads requests, runs the policy, forwards to the
/// origin over a pooled upstream connection or tunnels CONNECT, and relays responses.
///
/// Bytes are framed by ProximaHTTP1 and passed on as slices; nothing is decoded into messages
/// and re-encoded. Back-pressure: this handler withholds `read` while the upstream cannot take
/// more, and the upstream handler withholds its reads while this channel cannot.
final class ClientHandler: ChannelDuplexHandler, UpstreamOwner {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Phase {
        /// Waiting for (the rest of) a request head.
        case head
        /// Resolving or connecting to the upstream; body bytes wait in `inbound`.
        case connecting
        /// Request sent (body may still stream), response being relayed.
        case forwarding
        case tunnel
        /// Last response written; waiting for the client to close (lingering close).
        case closing
    }

    enum RequestBody {
        case done
        case length(Int)
        case chunked(ChunkedScanner)
    }

    enum ResponseBody {
        case head
        case length(Int)
        case chunked(ChunkedScanner, decode: Bool)
        /// Until the server closes; `rechunk` frames it as chunks for an HTTP/1.1 client, so the
        /// client connection can stay open.
        case untilClose(rechunk: Bool)
        case done
    }

    /// The request in flight.
    final class Current {
        var record: Exchange
        let head: RequestHead
        var target: RequestTarget?
        let started: NIODeadline
        var clientKeepAlive: Bool
        var requestBody: RequestBody
        var upstream: UpstreamConnection?
        var reusedConnection = false
        var attempts = 0
        var responseHeadBuffer: ByteBuffer?
        var response: ResponseBody = .head
        var responseStarted = false
        var upstreamReusable = true
        var lastUpstreamActivity: NIODeadline
        var tunnelClientClosed = false
        var tunnelUpstreamClosed = false
        /// Counted in the open-tunnels gauge (taken off again when logged).
        var tunnelCounted = false
        /// The privacy profile for this request (the deciding rule's, else the listener's).
        var anonymizer: Anonymizer?
        /// Named values a deny or block page shows (rule, list).
        var pageFields: [(String, String)] = []
        /// Element hiding for the page this request loads, if it is one and the lists have rules.
        var cosmetics: PageCosmetics?
        /// Set while an HTML response streams through element hiding; its body is then framed
        /// anew (chunked, or until close for HTTP/1.0 clients).
        var hiding: ElementHidingStream?
        var reframedChunked = false
        /// The body limit and upstream silence allowed for this request (a route may set its own).
        var maxBody: Int?
        var responseTimeout: TimeAmount = .seconds(60)
        /// Body bytes received so far (for the limit on chunked bodies).
        var bodyReceived = 0
        /// A reverse request asking to switch protocols (WebSocket): passed on, and a `101`
        /// turns the connection into a tunnel.
        var upgradeRequested = false
        /// For a reverse listener: the group, the server being tried and those tried before.
        var reverse: ReverseTarget?
        /// The cache key of this request (set when the cache is on), the response being stored,
        /// and the Cache-Status the answer carries.
        var cacheKey: String?
        var capture: CacheCapture?
        /// A stale stored answer being validated with the origin (its validators went out with
        /// the request); `staleIfError`: it may answer if the origin fails.
        var revalidating: CacheEntry?
        var staleIfError = false
        /// This request fetches a miss others wait for (they are told when it ends).
        var collapseLeader = false
        /// This request waits for another's fetch; what it does if that stores nothing.
        var collapseWait: CacheMissNext?
        var collapseTimer: Scheduled<Void>?
        var collapseDone = false
        /// The disk store was looked at; what it held for this request (read off the event loop).
        var diskChecked = false
        var diskEntry: CacheEntry?
        /// Compresses the body on its way to the client (it is then re-framed as chunks, or
        /// until close for HTTP/1.0).
        var compressor: BodyCompressor?
        var cacheStatus: String?
        var requestWallTime = 0
        /// Waiting in an upstream group's queue, and when that wait ends.
        var queued = false
        var queueID: UInt64 = 0
        var queueTimer: Scheduled<Void>?
        /// When the request head went upstream, and how long its response head took.
        var requestSentAt: NIODeadline?
        var upstreamHeadNanoseconds: Int64?
        /// The request id, made when first needed (error page, or a log format that shows it).
        var requestID: String {
            if let id = record.requestID { return id }
            let id = head.firstValue("x-request-id").flatMap { RequestIDs.acceptable($0) ? $0 : nil } ?? RequestIDs.next()
            record.requestID = id
            return id
        }

        /// Whether a page the proxy writes should be HTML (decided only when one is written).
        var pageStyle: PageStyle { PageStyle(accept: head.firstValue("accept")) }

        init(record: Exchange, head: RequestHead, now: NIODeadline) {
            self.record = record
            self.head = head
            self.started = now
            self.clientKeepAlive = head.clientKeepAlive
            switch head.framing {
            case .length(let n) where n > 0: requestBody = .length(n)
            case .chunked: requestBody = .chunked(ChunkedScanner())
            default: requestBody = .done
            }
            self.lastUpstreamActivity = now
        }

        /// Hands the record over to the log without copying it (a copy retains every string in
        /// it); the exchange is over when this is called.
        func takeRecord() -> Exchange {
            var taken = Exchange(startSeconds: 0, startNanoseconds: 0, client: "", listener: "")
            swap(&taken, &record)
            return taken
        }

        var requestBodyDone: Bool {
            if case .done = requestBody { return true }
            return false
        }

        var isIdempotent: Bool {
            switch head.method {
            case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE": return true
            default: return false
            }
        }
    }

    /// How a request continues when the cache cannot answer it (after waiting for another
    /// request's fetch of the same URL).
    enum CacheMissNext {
        case forward(RequestTarget)
        case reverse(Route, UpstreamGroup, hostValue: String)
    }

    /// Where a reverse request is being sent. A class: it is read many times per request, and
    /// copying the route inside a struct cost a retain and release per field each time.
    final class ReverseTarget {
        let group: UpstreamGroup
        let route: Route
        var server: Int
        var tried: ServerSet
        /// The `Host` to send (the client's, or the server's with `host_header: upstream`).
        let hostHeader: String
        let pathAndQuery: String
        var reported = false

        init(group: UpstreamGroup, route: Route, server: Int, tried: ServerSet, hostHeader: String, pathAndQuery: String) {
            self.group = group
            self.route = route
            self.server = server
            self.tried = tried
            self.hostHeader = hostHeader
            self.pathAndQuery = pathAndQuery
        }
    }

    let settings: RuntimeSettings
    let services: ServerServices
    /// A reverse listener: requests in origin form, routed to upstream groups.
    let isReverse: Bool
    let listenerName: String
    let metrics: ListenerMetrics
    /// This listener's privacy profile, if it has one.
    let anonymizer: Anonymizer?
    var context: ChannelHandlerContext?
    private var clientText = "-"
    var clientIP: IPAddress?
    private var inbound: ByteBuffer?
    var phase: Phase = .head
    var current: Current?
    private var pendingRead = false
    private var inputClosed = false
    var quiescing = false
    /// When the current head must be complete (header-read or keep-alive idle timeout).
    private var headDeadline: NIODeadline = .now()
    private var waitingIdle = false
    private var timer: Scheduled<Void>?
    private var timerAt: NIODeadline?
    private var upstreamNeedsFlush = false

    /// The client reached us over TLS (X-Forwarded-Proto, Forwarded and access rules say https).
    let isSecure: Bool
    /// This handler serves one HTTP/2 stream behind `HTTP2StreamBridge` (logged as HTTP/2.0).
    let isHTTP2Stream: Bool
    /// A plain listener that sends every request to `https://` on this port.
    let redirectHTTPS: Int?
    private var started = false

    init(
        settings: RuntimeSettings, services: ServerServices, listenerName: String, metrics: ListenerMetrics, reverse: Bool = false,
        secure: Bool = false, http2Stream: Bool = false, redirectHTTPS: Int? = nil
    ) {
        self.isReverse = reverse
        self.isSecure = secure
        self.isHTTP2Stream = http2Stream
        self.redirectHTTPS = redirectHTTPS
        self.settings = settings
        self.services = services
        self.listenerName = listenerName
        self.metrics = metrics
        self.anonymizer = settings.anonymizers[listenerName]
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // Added after the connection came up (after TLS negotiated HTTP/1.1, or on an HTTP/2
        // stream): no channelActive follows.
        if context.channel.isActive { start(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    private func start(_ context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        if let remote = context.channel.remoteAddress {
            clientText = remote.ipAddress ?? "-"
            clientIP = remote.ipAddress.flatMap { IPAddress($0) }
        }
        headDeadline = .now() + settings.clientHeaderTimeout
        ensureTimer(at: headDeadline)
        // The gauge counts connections; an HTTP/2 stream is not one.
        if !isHTTP2Stream { metrics.connections.increment() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        if phase == .closing { return }
        if inbound == nil || inbound!.readableBytes == 0 {
            inbound = buffer
        } else {
            inbound!.writeBuffer(&buffer)
        }
        if phase == .head, waitingIdle {
            waitingIdle = false
            headDeadline = .now() + settings.clientHeaderTimeout
        }
        processInbound()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushUpstream()
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed {
            inputClosed = true
            clientInputClosed()
            return
        }
        if event is ChannelShouldQuiesceEvent {
            quiescing = true
            if phase == .head, current == nil, (inbound?.readableBytes ?? 0) == 0 {
                context.close(promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        if started, !isHTTP2Stream { metrics.connections.decrement() }
        started = false
        if let cur = current {
            if let up = cur.upstream {
                cur.upstream = nil
                up.close()
            }
            if phase != .closing {
                if cur.record.result != .tunnel { cur.record.result = .missAborted }
                if cur.record.detail == nil { cur.record.detail = "client closed the connection" }
                log(cur)
            }
            current = nil
        }
        phase = .closing
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // Connection resets and the like: nothing to tell the client, it is gone.
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { current?.upstream?.handler.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if shouldPauseReading {
            pendingRead = true
        } else {
            context.read()
        }
    }

    private var shouldPauseReading: Bool {
        if let up = current?.upstream, !up.channel.isWritable { return true }
        return (inbound?.readableBytes ?? 0) > settings.maxBufferedInbound
    }

    private func resumeReadingIfNeeded() {
        guard pendingRead, !shouldPauseReading, let context else { return }
        pendingRead = false
        context.read()
    }

    // MARK: - Requests

    /// Set while `processInbound` runs: a request answered locally finishes inside the loop,
    /// and the loop (not a nested call) then takes the next pipelined request, so a long
    /// pipeline cannot grow the stack.
    private var processing = false

    private func processInbound() {
        if processing { return }
        processing = true
        defer { processing = false }
        while true {
            switch phase {
            case .head:
                guard let buf = inbound, buf.readableBytes > 0 else { return resumeReadingIfNeeded() }
                let parsed: ParseResult<RequestHead>
                do {
                    parsed = try HeadParser.parseRequest(buf, limits: settings.headLimits)
                } catch {
                    return rejectMalformed(error)
                }
                guard case .complete(let head, let consumed) = parsed else { return resumeReadingIfNeeded() }
                inbound!.moveReaderIndex(forwardBy: consumed)
                startExchange(head, headBytes: consumed)
            case .connecting, .closing:
                return
            case .forwarding:
                forwardRequestBody()
                return resumeReadingIfNeeded()
            case .tunnel:
                if let up = current?.upstream, var buf = inbound, buf.readableBytes > 0 {
                    current!.record.bytesIn += buf.readableBytes
                    inbound = nil
                    up.channel.write(buf.readSlice(length: buf.readableBytes)!, promise: nil)
                    upstreamNeedsFlush = true
                    current!.lastUpstreamActivity = .now()
                }
                return resumeReadingIfNeeded()
            }
        }
    }

    private func startExchange(_ head: RequestHead, headBytes: Int) {
        let (sec, nsec) = wallClock()
        // The record is filled in place: built aside and passed in, it would be copied.
        let cur = Current(
            record: Exchange(startSeconds: sec, startNanoseconds: nsec, client: clientText, listener: listenerName),
            head: head, now: .now())
        cur.record.method = head.method
        cur.record.url = head.target
        cur.record.version = isHTTP2Stream ? "HTTP/2.0" : head.version.text
        cur.record.bytesIn = headBytes
        if settings.logsAgentAndReferer {
            cur.record.userAgent = head.firstValue("user-agent")
            cur.record.referer = head.firstValue("referer")
        }
        if quiescing { cur.clientKeepAlive = false }
        cur.maxBody = settings.maxRequestBody
        cur.responseTimeout = settings.responseTimeout
        // WebSocket and other upgrades, in both roles: `Upgrade` is passed on and a `101` turns
        // the connection into a tunnel. An HTTP/2 stream cannot switch protocols.
        cur.upgradeRequested = !head.connection.others.isEmpty && !isHTTP2Stream && head.version == .http11
            && head.connection.others.contains { $0.lowercased() == "upgrade" } && head.firstValue("upgrade") != nil
        current = cur
        phase = .connecting

        if head.isConnect {
            let target: RequestTarget
            do {
                target = try RequestTarget.parseAuthorityForm(head.target)
            } catch {
                return respondLocally(400, "The CONNECT target must be host:port.", result: .none)
            }
            cur.target = target
            guard settings.connectPorts.contains(target.port) else {
                let ports = settings.connectPorts.sorted().map(String.init).joined(separator: ", ")
                cur.record.detail = "CONNECT port \(target.port) not in connect.allowed_ports"
                metrics.denied(by: "connect.allowed_ports")
                return respondLocally(403, "CONNECT to port \(target.port) is not allowed (connect.allowed_ports: \(ports)).", result: .denied)
            }
            return admit(cur, target)
        }

        if isReverse { return startReverse(cur, head) }
        if bodyTooLarge(cur) { return }

        if head.target.hasPrefix("/") || head.target == "*" {
            return respondLocally(
                400,
                "This is Proxima, a forward proxy. Requests must use an absolute URL (http://host/path): configure your client to use this address as its HTTP proxy.",
                result: .none)
        }
        let target: RequestTarget
        do {
            target = try RequestTarget.parseAbsolute(head.target)
        } catch .unsupportedScheme(let scheme) {
            return respondLocally(501, "The URL scheme '\(scheme)' is not supported; only http:// URLs are forwarded (https goes through CONNECT).", result: .none)
        } catch .invalid(let why) {
            return respondLocally(400, "Invalid URL: \(why).", result: .none)
        } catch {
            return respondLocally(400, "Invalid URL.", result: .none)
        }
        guard target.scheme == "http" else {
            return respondLocally(501, "https:// URLs are not fetched by the proxy in plain form; clients reach them through CONNECT.", result: .none)
        }
        cur.target = target
        if HeadWriter.viaContains(head, pseudonym: settings.viaName) {
            cur.record.detail = "forwarding loop (Via names \(settings.viaName))"
            metrics.denied(by: "forwarding loop")
            return respondLocally(508, "Forwarding loop detected: this request already passed through this proxy (\(settings.viaName)).", result: .denied)
        }
        admit(cur, target)
    }

    /// Finds out who the user is when a rule needs to know (Basic credentials, verified off the
    /// event loop and then cached), then applies the access rules and connects.
    private func admit(_ cur: Current, _ target: RequestTarget) {
        guard settings.policy.usesDestinations, let context else { return identify(cur, target, destinations: []) }
        // Rules on destination addresses need the name resolved first (the same cached answer
        // is then used to connect).
        if let literal = IPAddress(target.host) { return identify(cur, target, destinations: [literal]) }
        services.resolver.resolve(host: target.host, port: target.port, on: context.eventLoop).assumeIsolated().whenComplete { [self] result in
            guard self.current === cur, self.phase == .connecting else { return }
            let addresses = (try? result.get())?.compactMap { $0.ipAddress.flatMap { IPAddress($0) } } ?? []
            identify(cur, target, destinations: addresses)
        }
    }

    private func identify(_ cur: Current, _ target: RequestTarget, destinations: [IPAddress]) {
        identifyUser(cur, field: "proxy-authorization") { [self] user, failed in
            decide(cur, target, user: user, destinations: destinations, failedLogin: failed)
        }
    }

    /// The user of Basic credentials in `field` (`Proxy-Authorization` to a forward proxy,
    /// `Authorization` to a reverse one), verified off the event loop and then cached; `then`
    /// gets nil when there are none or they are wrong (and whether they were wrong).
    func identifyUser(_ cur: Current, field: String, then: @escaping (String?, Bool) -> Void) {
        guard settings.policy.usesIdentity, let auth = settings.auth, let context,
            let token = cur.head.firstValue(field), let (user, password) = basicCredentials(token)
        else { return then(nil, false) }
        let now = cur.record.startSeconds
        if let known = settings.authCache.user(for: token, now: now) { return then(known, false) }
        let client = clientText
        services.threadPool.runIfActive(eventLoop: context.eventLoop) { auth.users.verify(user: user, password: password) }
            .assumeIsolated().whenComplete { [self] result in
                guard self.current === cur, self.phase == .connecting else { return }
                if case .success(true) = result {
                    settings.authCache.remember(token, user: user, now: now)
                    services.authFailures.succeeded(client)
                    then(user, false)
                } else {
                    // The user name is not secret and helps the administrator; the password
                    // never appears anywhere.
                    cur.record.detail = "authentication failed for user '\(user)'"
                    then(nil, true)
                }
            }
    }

    private func decide(_ cur: Current, _ target: RequestTarget, user: String?, destinations: [IPAddress], failedLogin: Bool = false) {
        guard let ip = clientIP else {
            metrics.denied(by: "unknown client")
            return respondLocally(403, "The client address is unknown.", result: .denied)
        }
        var request = AccessRequest(
            client: ip, method: cur.head.method, host: target.host, port: target.port, url: cur.head.target,
            scheme: cur.head.isConnect ? nil : target.scheme, time: cur.record.startSeconds)
        request.destinations = destinations
        if let user {
            cur.record.user = user
            request.user = user
            request.groups = settings.auth?.groups?.groupsByUser[user] ?? []
        }
        let decision = settings.policy.evaluate(request, headers: RequestHeaders(current: cur))
        if decision.allowed {
            if !settings.blocklists.isEmpty {
                if cur.head.isConnect {
                    if let (list, rule) = settings.blocklists.match(host: target.host, port: target.port) {
                        return respondBlocked(cur, list: list, rule: rule, type: [.document, .other])
                    }
                } else {
                    let filterRequest = filterRequest(cur, target)
                    if let (list, rule) = settings.blocklists.match(filterRequest) {
                        return respondBlocked(cur, list: list, rule: rule, type: filterRequest.type)
                    }
                    if settings.elementHiding, filterRequest.type == .document || filterRequest.type == .subdocument {
                        let page = settings.blocklists.cosmetics.page(host: target.host)
                        if page.hasWork { cur.cosmetics = page }
                    }
                }
            }
            cur.anonymizer = decision.anonymize.map { $0 ? settings.ruleAnonymizer : nil } ?? anonymizer
            cur.record.result = cur.head.isConnect ? .tunnel : .miss
            // Pages that get element hiding are neither served from nor put in the cache.
            if settings.cache != nil, !cur.head.isConnect, cur.cosmetics == nil,
                answerFromCache(cur, key: "http://" + target.hostPort + target.pathAndQuery, next: .forward(target))
            {
                return
            }
            return connectUpstream(cur, target, reuse: !cur.head.isConnect)
        }
        if decision.challenge {
            return challenge(cur, decision, failedLogin: failedLogin)
        }
        cur.record.detail = decision.rule.map { "rule \($0)" } ?? "default deny"
        cur.pageFields = [("rule", decision.rule ?? "(default deny)")]
        metrics.denied(by: decision.rule.map { "access rule \($0)" } ?? "access default deny")
        respondLocally(403, "Access denied: \(decision.explanation).", result: .denied)
    }

    /// What the block lists see of a request: its URL, its type and the page it comes from, as
    /// far as the headers tell.
    private func filterRequest(_ cur: Current, _ target: RequestTarget) -> FilterRequest {
        let head = cur.head
        let type = ResourceType.infer(
            secFetchDest: head.firstValue("sec-fetch-dest"), accept: head.firstValue("accept"), path: target.pathAndQuery,
            requestedWith: head.firstValue("x-requested-with"), upgrade: head.firstValue("upgrade"))
        let source = (head.firstValue("referer") ?? head.firstValue("origin")).flatMap(FilterRequest.host(ofURL:))
        return FilterRequest(
            url: head.target, host: target.host, type: type, sourceHost: type == .document ? nil : source,
            thirdParty: type == .document
                ? false
                : FilterRequest.thirdParty(host: target.host, sourceHost: source, secFetchSite: head.firstValue("sec-fetch-site"), suffixes: settings.suffixes))
    }

    /// A blocked request gets an answer that does not break the page around it: a transparent
    /// pixel for images, a short page for documents (and CONNECT), an empty 204 for the rest.
    private func respondBlocked(_ cur: Current, list: String, rule: String, type: ResourceType) {
        metrics.blocked(list: list)
        cur.record.detail = "blocklist \(list): \(rule)"
        cur.pageFields = [("list", list), ("rule", rule)]
        let message = "Blocked by the block list '\(list)' (rule \(rule))."
        if cur.head.isConnect { return respondLocally(403, message, result: .denied) }
        if type == .image {
            return respondLocally(200, message, result: .denied, body: (LocalResponse.transparentGIF, "image/gif"))
        }
        if type == .document || type == .subdocument { return respondLocally(403, message, result: .denied) }
        respondLocally(204, message, result: .denied, body: ([], nil))
    }

    /// 407 asking for credentials. After failed logins from this client the answer waits
    /// longer each time, so passwords cannot be guessed quickly.
    func challenge(_ cur: Current, _ decision: AccessDecision, failedLogin: Bool, reverse: Bool = false) {
        let realm = settings.auth?.realm ?? "Proxima"
        let now = cur.record.startSeconds
        let delay = failedLogin ? services.authFailures.delay(for: clientText, now: now) : .zero
        if failedLogin { services.authFailures.failed(clientText, now: now) }
        if cur.record.detail == nil { cur.record.detail = "authentication required by rule \(decision.rule ?? "?")" }
        let send = { [self] in
            guard current === cur, phase == .connecting else { return }
            respondLocally(
                reverse ? 401 : 407, "\(reverse ? "Authentication" : "Proxy authentication") required: \(decision.explanation).", result: .denied,
                headers: [(reverse ? "WWW-Authenticate" : "Proxy-Authenticate", "Basic realm=\"\(realm)\", charset=\"UTF-8\"")])
            context?.flush()
        }
        guard delay > .zero, let context else { return send() }
        context.eventLoop.assumeIsolated().scheduleTask(in: delay) { send() }
    }

    // MARK: - Upstream connection

    func connectUpstream(_ cur: Current, _ target: RequestTarget, reuse: Bool) {
        guard let context else { return }
        let loop = context.eventLoop
        let tls = cur.reverse?.group.tls
        let key = cur.reverse.map { $0.group.poolKeys[$0.server] } ?? target.hostPort
        let pool = services.pools.pool(for: loop)
        cur.attempts += 1
        // An upgrade gets a connection of its own: it becomes a tunnel, and some servers switch
        // protocols only on a connection's first request.
        if reuse, !cur.upgradeRequested, let conn = pool?.checkout(key) {
            cur.reusedConnection = true
            return attach(conn, cur)
        }
        cur.reusedConnection = false
        let connectTimeout = settings.connectTimeout
        let resolved = services.resolver.resolve(host: target.host, port: target.port, on: loop)
        let protected = settings.protectedEndpoints
        resolved.flatMap { addresses -> EventLoopFuture<Channel> in
            // The admin API is for its own listener only: a request through the proxy that would
            // reach it is refused, whatever name it used.
            if !protected.isEmpty, addresses.contains(where: { protected.covers($0) }) {
                return loop.makeFailedFuture(ProtectedEndpointError())
            }
            let connected = Self.connect(to: Array(addresses.prefix(4)), index: 0, on: loop, timeout: connectTimeout, lastError: nil)
            guard let tls else { return connected }
            return connected.flatMap { Self.startTLS($0, tls, host: target.host, timeout: connectTimeout) }
        }.assumeIsolated().whenComplete { [self] result in
            guard self.current === cur, self.phase == .connecting else {
                if case .success(let channel) = result { channel.close(promise: nil) }
                return
            }
            switch result {
            case .success(let channel):
                guard let handler = try? channel.pipeline.syncOperations.handler(type: UpstreamHandler.self) else {
                    channel.close(promise: nil)
                    return self.respondLocally(502, "Internal error setting up the upstream connection.", result: .none)
                }
                self.attach(UpstreamConnection(channel: channel, handler: handler, key: key), cur)
            case .failure(let error):
                self.connectFailed(cur, target, error)
            }
        }
    }

    private static func connect(
        to addresses: [SocketAddress], index: Int, on loop: EventLoop, timeout: TimeAmount, lastError: Error?
    ) -> EventLoopFuture<Channel> {
        guard index < addresses.count else {
            return loop.makeFailedFuture(lastError ?? ResolveError(host: "?", message: "no address"))
        }
        return ClientBootstrap(group: loop)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(UpstreamHandler())
                }
            }
            .connect(to: addresses[index])
            .flatMapError { error in
                connect(to: addresses, index: index + 1, on: loop, timeout: timeout, lastError: error)
            }
    }

    /// Adds TLS to a new upstream connection and waits for the handshake (bounded by the
    /// connect timeout), so that a certificate the server cannot prove is a clear 502 before
    /// anything is sent.
    private static func startTLS(_ channel: Channel, _ tls: UpstreamTLS, host: String, timeout: TimeAmount) -> EventLoopFuture<Channel> {
        let done = channel.eventLoop.makePromise(of: Void.self)
        do {
            let sync = channel.pipeline.syncOperations
            let upstream = try sync.handler(type: UpstreamHandler.self)
            try sync.addHandler(NIOSSLClientHandler(context: tls.context, serverHostname: tls.sniName(host: host)), position: .before(upstream))
            try sync.addHandler(HandshakeWatcher(done), position: .before(upstream))
        } catch {
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(error)
        }
        let timer = channel.eventLoop.scheduleTask(in: timeout) { done.fail(ChannelError.connectTimeout(timeout)) }
        return done.futureResult.map { _ in
            timer.cancel()
            return channel
        }.flatMapErrorThrowing { error in
            timer.cancel()
            channel.close(promise: nil)
            throw UpstreamTLSError(underlying: error)
        }
    }

    private func connectFailed(_ cur: Current, _ target: RequestTarget, _ error: Error) {
        let what = target.hostPort
        if cur.reverse != nil, !(error is ProtectedEndpointError), retryReverse(cur) { return }
        if !(error is ProtectedEndpointError), serveStaleOnError(cur, because: "cannot connect to \(what)") { return }
        if error is ProtectedEndpointError {
            cur.record.detail = "\(what) is the admin API"
            metrics.denied(by: "admin API")
            return respondLocally(403, "\(what) is this proxy's admin API, which is not reachable through the proxy.", result: .denied)
        }
        if let e = error as? ResolveError {
            cur.record.detail = e.description
            return respondLocally(502, "Cannot resolve \(target.host): \(e.message).", result: cur.record.result)
        }
        if let e = error as? UpstreamTLSError {
            cur.record.detail = "TLS with \(what) failed: \(e.reason)"
            return respondLocally(502, "TLS with \(what) failed: \(e.reason).", result: cur.record.result)
        }
        if case ChannelError.connectTimeout? = error as? ChannelError {
            cur.record.detail = "connect timeout to \(what)"
            return respondLocally(504, "Timed out connecting to \(what).", result: cur.record.result)
        }
        cur.record.detail = "cannot connect to \(what): \(error)"
        respondLocally(502, "Cannot connect to \(what): \(Self.describe(error)).", result: cur.record.result)
    }

    static func describe(_ error: Error) -> String {
        if let io = error as? IOError { return io.description }
        if let c = error as? NIOConnectionError, let first = c.connectionErrors.first { return "\(first.error)" }
        return "\(error)"
    }

    private func attach(_ conn: UpstreamConnection, _ cur: Current) {
        guard let context else {
            conn.close()
            return
        }
        conn.handler.owner = self
        cur.upstream = conn
        cur.record.upstream = conn.remote
        cur.lastUpstreamActivity = .now()
        if cur.head.isConnect {
            phase = .tunnel
            var ok = context.channel.allocator.buffer(capacity: 64)
            ok.writeStaticString("HTTP/1.1 200 Connection established\r\n\r\n")
            cur.record.status = 200
            cur.record.bytesOut += ok.readableBytes
            cur.tunnelCounted = true
            metrics.tunnels.increment()
            metrics.openTunnels.wrappingIncrement(ordering: .relaxed)
            context.writeAndFlush(wrapOutboundOut(ok), promise: nil)
            ensureTimer(at: .now() + settings.tunnelIdleTimeout)
            processInbound()
            flushUpstream()
            // The client may have sent everything and half-closed while we were connecting.
            if inputClosed { clientInputClosed() }
            return
        }
        var out = conn.channel.allocator.buffer(capacity: cur.head.bytes.readableBytes + 128)
        // Element hiding must read the page: ask for it uncompressed (Privoxy's
        // prevent-compression).
        var rules = settings.requestHeaderRules
        if !settings.routeRequestRules.isEmpty, let r = cur.reverse, let own = settings.routeRequestRules[r.route.name] { rules += own }
        var edit = rules.isEmpty && cur.cosmetics == nil
            ? HeaderEdit()
            : HeaderEdit(
                rules: rules, bytes: cur.head.bytes, fields: cur.head.fields,
                extraRemovals: cur.cosmetics == nil ? [] : ["accept-encoding"])
        if let stale = cur.revalidating {
            // The stored answer's validators: a 304 lets it answer again (RFC 9111 section 4.3.1).
            if let etag = stale.facts.etag { edit.append(name: "If-None-Match", value: etag) }
            if let modified = stale.facts.lastModified { edit.append(name: "If-Modified-Since", value: HTTPDate.format(modified)) }
        }
        var crossSite: Bool?
        if cur.anonymizer != nil, !settings.suffixes.isEmpty, let referer = cur.head.firstValue("referer"),
            let refererHost = FilterRequest.host(ofURL: referer)
        {
            crossSite = settings.suffixes.registrableDomain(refererHost) != settings.suffixes.registrableDomain(cur.target!.host)
        }
        HeadWriter.writeUpstreamRequest(
            cur.head, target: cur.target!, via: settings.via, forwardedFor: settings.forwardedFor,
            clientIP: clientText, anonymizer: cur.anonymizer, crossSite: crossSite, edit: edit, host: cur.reverse?.hostHeader,
            forwardedHost: cur.reverse.map { _ in cur.head.firstValue("host") ?? "" },
            // The back-end gets the id the log shows: the client's when acceptable, else a new one.
            requestID: cur.reverse.map { _ in cur.requestID }, upgrade: cur.upgradeRequested,
            trustsClientForwarding: cur.reverse == nil || clientIsTrustedProxy,
            forwardedField: cur.reverse != nil && settings.addsForwarded ? forwardedElement(cur) : nil, secure: isSecure, into: &out)
        conn.channel.write(out, promise: nil)
        upstreamNeedsFlush = true
        cur.requestSentAt = .now()
        phase = .forwarding
        forwardRequestBody()
        flushUpstream()
        ensureTimer(at: .now() + cur.responseTimeout)
        resumeReadingIfNeeded()
    }

    private func flushUpstream() {
        guard upstreamNeedsFlush else { return }
        upstreamNeedsFlush = false
        current?.upstream?.channel.flush()
    }

    /// Moves request body bytes from `inbound` to the upstream, as framed by the request head.
    private func forwardRequestBody() {
        guard let cur = current, let up = cur.upstream, var buf = inbound, buf.readableBytes > 0 else { return }
        switch cur.requestBody {
        case .done:
            return
        case .length(let remaining):
            let take = min(remaining, buf.readableBytes)
            up.channel.write(buf.readSlice(length: take)!, promise: nil)
            cur.requestBody = remaining - take == 0 ? .done : .length(remaining - take)
            cur.record.bytesIn += take
        case .chunked(var scanner):
            let consumed: Int
            do {
                consumed = try buf.withUnsafeReadableBytes { raw in try scanner.scan(raw) { _, _ in } }
            } catch {
                cur.upstreamReusable = false
                inbound = nil
                cur.record.detail = "bad chunked request body: \(error)"
                if !cur.responseStarted {
                    return respondLocally(400, "The chunked request body is malformed.", result: .none)
                }
                return abortExchange()
            }
            cur.bodyReceived += consumed
            if let limit = cur.maxBody, cur.bodyReceived > limit + 4096 {
                // Chunk framing counts too, hence the allowance; the body is cut off here.
                cur.upstreamReusable = false
                inbound = nil
                cur.record.detail = "chunked request body over the limit of \(limit) bytes"
                if !cur.responseStarted {
                    detachUpstream(cur, reusable: false)
                    return respondLocally(413, "The request body is larger than this server accepts (\(limit) bytes).", result: .none)
                }
                return abortExchange()
            }
            up.channel.write(buf.readSlice(length: consumed)!, promise: nil)
            cur.requestBody = scanner.isDone ? .done : .chunked(scanner)
            cur.record.bytesIn += consumed
        }
        inbound = buf.readableBytes > 0 ? buf : nil
        upstreamNeedsFlush = true
        cur.lastUpstreamActivity = .now()
    }

    // MARK: - UpstreamOwner

    var clientWritable: Bool { context?.channel.isWritable ?? false }

    func upstreamWritabilityChanged(writable: Bool) {
        if writable { resumeReadingIfNeeded() }
    }

    func upstreamReadComplete() {
        context?.flush()
    }

    func upstreamRead(_ data: ByteBuffer) {
        guard let cur = current, let context else { return }
        cur.lastUpstreamActivity = .now()
        if phase == .tunnel {
            cur.record.bytesOut += data.readableBytes
            context.write(wrapOutboundOut(data), promise: nil)
            return
        }
        guard phase == .forwarding else { return }
        var buf = data
        while buf.readableBytes > 0 {
            switch cur.response {
            case .head:
                var headBuf: ByteBuffer
                if var pending = cur.responseHeadBuffer {
                    pending.writeBuffer(&buf)
                    headBuf = pending
                } else {
                    headBuf = buf
                }
                buf.moveReaderIndex(to: buf.writerIndex)
                let parsed: ParseResult<ResponseHead>
                do {
                    parsed = try HeadParser.parseResponse(headBuf, requestMethod: cur.head.method, limits: settings.responseHeadLimits)
                } catch {
                    cur.responseHeadBuffer = nil
                    return upstreamFailed(cur, status: 502, "The upstream server sent an invalid response head (\(error.reason)).")
                }
                guard case .complete(let head, let consumed) = parsed else {
                    cur.responseHeadBuffer = headBuf
                    return
                }
                cur.responseHeadBuffer = nil
                headBuf.moveReaderIndex(forwardBy: consumed)
                buf = headBuf
                if head.isInterim {
                    if head.status == 101, cur.upgradeRequested {
                        return switchProtocols(cur, head, context, rest: buf)
                    }
                    if head.status == 101 {
                        return upstreamFailed(cur, status: 502, "The upstream server switched protocols without being asked to.")
                    }
                    if cur.head.version == .http11 {
                        var out = context.channel.allocator.buffer(capacity: head.bytes.readableBytes)
                        HeadWriter.writeClientResponse(head, framing: .none, via: nil, connection: .none, into: &out)
                        cur.record.bytesOut += out.readableBytes
                        context.write(wrapOutboundOut(out), promise: nil)
                    }
                    continue
                }
                if head.status == 502 || head.status == 503, mayRetryElsewhere(cur) {
                    let name = cur.reverse.map { $0.group.config.servers[$0.server].name } ?? "?"
                    if nextReverseServer(cur) {
                        return resendElsewhere(cur, because: "\(name) answered \(head.status); tried another server")
                    }
                }
                if let stale = cur.revalidating {
                    if head.status == 304 { return refreshed(cur, stale, head) }
                    if head.status >= 500, cur.staleIfError {
                        cur.upstreamReusable = false
                        detachUpstream(cur, reusable: false)
                        if serveStaleOnError(cur, because: "the origin answered \(head.status)") { return }
                    }
                }
                beginResponse(cur, head, context, body: &buf)
            case .length(let remaining):
                let take = min(remaining, buf.readableBytes)
                writeBody(cur, buf.readSlice(length: take)!, context)
                cur.response = remaining - take == 0 ? .done : .length(remaining - take)
            case .chunked(var scanner, let decode):
                let consumed: Int
                do {
                    if decode {
                        // Only the chunk data goes on, as slices of what was read.
                        let base = buf
                        consumed = try base.withUnsafeReadableBytes { raw in
                            try scanner.scan(raw) { start, count in
                                writeBody(cur, base.getSlice(at: base.readerIndex + start, length: count)!, context)
                            }
                        }
                        buf.moveReaderIndex(forwardBy: consumed)
                    } else {
                        if let capture = cur.capture {
                            let base = buf
                            consumed = try base.withUnsafeReadableBytes { raw in
                                try scanner.scan(raw) { start, count in capture.append(base.getSlice(at: base.readerIndex + start, length: count)!) }
                            }
                        } else {
                            consumed = try buf.withUnsafeReadableBytes { raw in try scanner.scan(raw) { _, _ in } }
                        }
                        cur.record.bytesOut += consumed
                        context.write(wrapOutboundOut(buf.readSlice(length: consumed)!), promise: nil)
                    }
                } catch {
                    cur.record.detail = "bad chunked response body from upstream: \(error)"
                    return abortExchange()
                }
                cur.response = scanner.isDone ? .done : .chunked(scanner, decode: decode)
            case .untilClose(let rechunk):
                if rechunk {
                    var size = context.channel.allocator.buffer(capacity: 12)
                    size.writeString(String(buf.readableBytes, radix: 16))
                    size.writeStaticString("\r\n")
                    cur.record.bytesOut += size.readableBytes + 2
                    context.write(wrapOutboundOut(size), promise: nil)
                }
                writeBody(cur, buf, context)
                if rechunk { context.write(wrapOutboundOut(ByteBuffer(staticString: "\r\n")), promise: nil) }
                buf.moveReaderIndex(to: buf.writerIndex)
            case .done:
                // More bytes than the response framing announced: never reuse this connection.
                cur.upstreamReusable = false
                buf.moveReaderIndex(to: buf.writerIndex)
            }
            if case .done = cur.response { return responseComplete(cur) }
        }
    }

    /// `101 Switching Protocols` to an upgrade the client asked for: the answer goes to the client
    /// and from then on bytes are relayed both ways as in a CONNECT tunnel (with its idle timeout).
    private func switchProtocols(_ cur: Current, _ head: ResponseHead, _ context: ChannelHandlerContext, rest: ByteBuffer) {
        var out = context.channel.allocator.buffer(capacity: head.bytes.readableBytes + 64)
        HeadWriter.writeClientResponse(head, framing: .none, via: settings.via, connection: .none, upgrade: true, into: &out)
        cur.record.status = 101
        cur.record.bytesOut += out.readableBytes + rest.readableBytes
        cur.responseStarted = true
        cur.upstreamReusable = false
        context.write(wrapOutboundOut(out), promise: nil)
        if rest.readableBytes > 0 { context.write(wrapOutboundOut(rest), promise: nil) }
        context.flush()
        phase = .tunnel
        cur.tunnelCounted = true
        metrics.tunnels.increment()
        metrics.openTunnels.wrappingIncrement(ordering: .relaxed)
        ensureTimer(at: .now() + settings.tunnelIdleTimeout)
        processInbound()
        flushUpstream()
        if inputClosed { clientInputClosed() }
    }

    /// Response body bytes to the client: as they are, or through element hiding (which inserts
    /// its style sheet and frames everything as chunks of its own).
    private func writeBody(_ cur: Current, _ data: ByteBuffer, _ context: ChannelHandlerContext) {
        cur.capture?.append(data)
        if let compressor = cur.compressor {
            return writeReframedChunk(cur, compressor.compress(data, allocator: context.channel.allocator), context)
        }
        guard var hiding = cur.hiding else {
            cur.record.bytesOut += data.readableBytes
            context.write(wrapOutboundOut(data), promise: nil)
            return
        }
        let insertion = data.withUnsafeReadableBytes { hiding.scan($0) }
        cur.hiding = hiding
        guard let at = insertion else { return writeReframedChunk(cur, data, context) }
        var rest = data
        writeReframedChunk(cur, rest.readSlice(length: at)!, context)
        writeReframedChunk(cur, ByteBuffer(bytes: hiding.page.upFrontStyle), context)
        writeReframedChunk(cur, rest, context)
    }

    private func writeReframedChunk(_ cur: Current, _ data: ByteBuffer, _ context: ChannelHandlerContext) {
        guard data.readableBytes > 0 else { return }
        if cur.reframedChunked {
            var size = context.channel.allocator.buffer(capacity: 12)
            size.writeString(String(data.readableBytes, radix: 16))
            size.writeStaticString("\r\n")
            cur.record.bytesOut += size.readableBytes + 2
            context.write(wrapOutboundOut(size), promise: nil)
        }
        cur.record.bytesOut += data.readableBytes
        context.write(wrapOutboundOut(data), promise: nil)
        if cur.reframedChunked { context.write(wrapOutboundOut(ByteBuffer(staticString: "\r\n")), promise: nil) }
    }

    /// The end of an element-hiding body: the generic rules the page turned out to need, then
    /// the last chunk.
    private func finishHiding(_ cur: Current) {
        guard var hiding = cur.hiding, let context else { return }
        cur.hiding = nil
        writeReframedChunk(cur, ByteBuffer(bytes: hiding.finish()), context)
        if cur.reframedChunked {
            context.write(wrapOutboundOut(ByteBuffer(staticString: "0\r\n\r\n")), promise: nil)
            cur.record.bytesOut += 5
        }
    }

    /// Whether element hiding can work on this response: a full HTML page, not compressed.
    private static func canHide(_ head: ResponseHead, request: RequestHead) -> Bool {
        guard head.status == 200, !request.isHead, head.framing != .none else { return false }
        guard let type = head.firstValue("content-type")?.lowercased(), type.hasPrefix("text/html") else { return false }
        if let encoding = head.firstValue("content-encoding")?.lowercased(), !encoding.isEmpty, encoding != "identity" { return false }
        return head.firstValue("content-range") == nil
    }

    /// Largest body that is copied behind the response head so that both go out as one buffer;
    /// a copy this small costs less than a second write through the pipeline.
    static let coalescedBodyLimit = 16 * 1024

    /// The body is rewritten on its way (element hiding, compression), so its length is no
    /// longer known: chunks of our own to HTTP/1.1 clients, the connection's end to HTTP/1.0
    /// ones; a chunked upstream body is decoded first.
    private func reframe(_ cur: Current, _ head: ResponseHead) -> HeadWriter.ClientFraming {
        cur.reframedChunked = cur.head.version == .http11
        if !cur.reframedChunked { cur.clientKeepAlive = false }
        switch head.framing {
        case .chunked: cur.response = .chunked(ChunkedScanner(), decode: true)
        case .untilClose: cur.response = .untilClose(rechunk: false)
        default: break
        }
        return cur.reframedChunked ? .chunked : .untilClose
    }

    private func beginResponse(_ cur: Current, _ head: ResponseHead, _ context: ChannelHandlerContext, body: inout ByteBuffer) {
        if let sent = cur.requestSentAt { cur.upstreamHeadNanoseconds = (NIODeadline.now() - sent).nanoseconds }
        cur.record.status = head.status
        cur.record.contentType = head.firstValue("content-type")
        if !head.serverKeepAlive { cur.upstreamReusable = false }
        var framing: HeadWriter.ClientFraming
        switch head.framing {
        case .none:
            framing = .none
            cur.response = .done
        case .length(let n):
            framing = .length(n)
            cur.response = n == 0 ? .done : .length(n)
        case .chunked:
            if cur.head.version == .http11 {
                framing = .chunked
                cur.response = .chunked(ChunkedScanner(), decode: false)
            } else {
                framing = .untilClose
                cur.clientKeepAlive = false
                cur.response = .chunked(ChunkedScanner(), decode: true)
            }
        case .untilClose:
            if cur.head.version == .http11 {
                framing = .chunked
                cur.response = .untilClose(rechunk: true)
            } else {
                framing = .untilClose
                cur.clientKeepAlive = false
                cur.response = .untilClose(rechunk: false)
            }
        }
        if let page = cur.cosmetics, Self.canHide(head, request: cur.head) {
            // The page grows by the style sheets: its length is no longer known up front.
            cur.hiding = ElementHidingStream(page: page)
            framing = reframe(cur, head)
        }
        var compressedAs: ContentCoding?
        if settings.compression != nil, cur.hiding == nil, let coding = compressionFor(cur, head), let compressor = BodyCompressor(
            coding, level: coding == .gzip ? settings.compression!.gzipLevel : settings.compression!.brotliLevel)
        {
            compressedAs = coding
            cur.compressor = compressor
            framing = reframe(cur, head)
        }
        if !cur.requestBodyDone {
            // The server answered before the whole body arrived: the rest of the body cannot be
            // told apart from a next request without reading it all, so the connection ends.
            cur.clientKeepAlive = false
        }
        let connection: HeadWriter.ConnectionHeader =
            !cur.clientKeepAlive ? .close : (cur.head.version == .http10 ? .keepAlive : .none)
        var coalesced = 0
        if case .length(let remaining) = cur.response, body.readableBytes > 0, cur.hiding == nil, cur.compressor == nil {
            let take = min(remaining, body.readableBytes)
            if take <= Self.coalescedBodyLimit { coalesced = take }
        }
        var out = context.channel.allocator.buffer(capacity: head.bytes.readableBytes + (settings.via?.utf8.count ?? 0) + 128 + coalesced)
        var rules = settings.responseHeaderRules
        if !settings.routeResponseRules.isEmpty, let r = cur.reverse, let own = settings.routeResponseRules[r.route.name] { rules += own }
        var edit = rules.isEmpty ? HeaderEdit() : HeaderEdit(rules: rules, bytes: head.bytes, fields: head.fields)
        if let coding = compressedAs { Self.describeCompressed(head, coding, in: &edit) }
        if settings.cache != nil, cur.cacheKey != nil {
            considerStoring(cur, head)
            if let status = cur.cacheStatus {
                edit.drop(["cache-status"], bytes: head.bytes, fields: head.fields)
                edit.append(name: "Cache-Status", value: status)
            }
        }
        HeadWriter.writeClientResponse(head, framing: framing, via: settings.via, connection: connection, edit: edit, into: &out)
        if coalesced > 0, case .length(let remaining) = cur.response {
            var slice = body.readSlice(length: coalesced)!
            cur.capture?.append(slice)
            out.writeBuffer(&slice)
            cur.response = remaining == coalesced ? .done : .length(remaining - coalesced)
        }
        cur.record.bytesOut += out.readableBytes
        cur.responseStarted = true
        context.write(wrapOutboundOut(out), promise: nil)
    }

    func upstreamInputClosed() {
        guard let cur = current else { return }
        if phase == .tunnel {
            cur.tunnelUpstreamClosed = true
            if cur.tunnelClientClosed { return finishTunnel(cur) }
            // Pass the half-close on once everything before it has been written.
            if let context { afterPendingWrites(context.channel) { context.close(mode: .output, promise: nil) } }
            return
        }
        upstreamEnded(cur, error: nil)
    }

    func upstreamClosed(_ error: Error?) {
        guard let cur = current else { return }
        cur.upstream = nil
        if phase == .tunnel { return finishTunnel(cur) }
        upstreamEnded(cur, error: error)
    }

    private func upstreamEnded(_ cur: Current, error: Error?) {
        guard phase == .forwarding else { return }
        cur.upstreamReusable = false
        switch cur.response {
        case .untilClose(let rechunk):
            if rechunk, let context {
                context.write(wrapOutboundOut(ByteBuffer(staticString: "0\r\n\r\n")), promise: nil)
                cur.record.bytesOut += 5
            }
            // A reset, not a close, may have cut the body short: it is not stored.
            if error != nil { cur.capture = nil }
            cur.response = .done
            responseComplete(cur)
        case .head where cur.responseHeadBuffer == nil && !cur.responseStarted:
            // A pooled connection the server had already closed: retry once on a new one if
            // the request is idempotent and has no body to replay.
            if cur.reusedConnection, cur.isIdempotent, case .done = cur.requestBody, cur.head.framing == .none || cur.head.framing == .length(0), cur.attempts < 3 {
                detachUpstream(cur, reusable: false)
                phase = .connecting
                return connectUpstream(cur, cur.target!, reuse: false)
            }
            if mayRetryElsewhere(cur), nextReverseServer(cur) {
                return resendElsewhere(cur, because: "\(cur.target!.hostPort) closed the connection without responding; tried another server")
            }
            let cause = error.map { ": \(Self.describe($0))" } ?? ""
            upstreamFailed(cur, status: 502, "The upstream server \(cur.target!.authority) closed the connection without responding\(cause).")
        case .head:
            upstreamFailed(cur, status: 502, "The upstream server \(cur.target!.authority) closed the connection in the middle of the response head.")
        case .done:
            break
        default:
            cur.record.detail = "upstream closed the connection before the response body was complete"
            abortExchange()
        }
    }

    private func upstreamFailed(_ cur: Current, status: Int, _ message: String) {
        cur.upstreamReusable = false
        cur.record.detail = message
        if cur.responseStarted { return abortExchange() }
        detachUpstream(cur, reusable: false)
        if serveStaleOnError(cur, because: message) { return }
        respondLocally(status, message, result: cur.record.result)
    }

    func detachUpstream(_ cur: Current, reusable: Bool) {
        guard let up = cur.upstream else { return }
        cur.upstream = nil
        up.handler.owner = nil
        if reusable, let context, let pool = services.pools.pool(for: context.eventLoop) {
            pool.checkin(up, maxIdlePerHost: settings.maxIdlePerHost, idleTimeout: settings.poolIdleTimeout)
        } else {
            up.close()
        }
    }

    private func responseComplete(_ cur: Current) {
        finishHiding(cur)
        if let compressor = cur.compressor, let context {
            cur.compressor = nil
            writeReframedChunk(cur, compressor.finish(allocator: context.channel.allocator), context)
            if cur.reframedChunked {
                context.write(wrapOutboundOut(ByteBuffer(staticString: "0\r\n\r\n")), promise: nil)
                cur.record.bytesOut += 5
            }
        }
        if cur.capture != nil { storeCapture(cur) }
        let reusable = cur.upstreamReusable && cur.requestBodyDone
        detachUpstream(cur, reusable: reusable)
        if !cur.requestBodyDone { cur.clientKeepAlive = false }
        finishExchange(cur)
    }

    // MARK: - Finishing

    private func log(_ cur: Current) {
        // Every exchange ends here: a reverse request's server is told how it went, once.
        if cur.reverse != nil { reportReverse(cur, ok: cur.record.status > 0 && cur.record.status < 500) }
        // A fetch others waited for that stored nothing: they go on their own.
        if cur.collapseLeader, let key = cur.cacheKey {
            cur.collapseLeader = false
            settings.cache?.fetched(key, stored: false, now: wallClock().0)
        }
        cur.collapseTimer?.cancel()
        cur.record.durationNanoseconds = UInt64(max(0, (NIODeadline.now() - cur.started).nanoseconds))
        if cur.tunnelCounted {
            cur.tunnelCounted = false
            metrics.tunnels.decrement()
            metrics.openTunnels.wrappingDecrement(ordering: .relaxed)
        }
        metrics.observe(cur.record, host: cur.target?.host, upstreamHeadNanoseconds: cur.upstreamHeadNanoseconds)
        if settings.logsRequestID { _ = cur.requestID }
        settings.accessLog.record(cur.takeRecord())
    }

    func finishExchange(_ cur: Current) {
        guard let context else { return }
        log(cur)
        current = nil
        let keepAlive = cur.clientKeepAlive && !quiescing && !inputClosed
        if keepAlive {
            phase = .head
            context.flush()
            waitingIdle = (inbound?.readableBytes ?? 0) == 0
            headDeadline = .now() + (waitingIdle ? settings.idleTimeout : settings.clientHeaderTimeout)
            ensureTimer(at: headDeadline)
            processInbound()
        } else {
            closeAfterWrites()
        }
    }

    /// The response was cut short after its head went out: the only honest signal left is to
    /// close the client connection.
    private func abortExchange() {
        guard let cur = current, let context else { return }
        reportReverse(cur, ok: false)
        detachUpstream(cur, reusable: false)
        if cur.record.result == .miss { cur.record.result = .missAborted }
        log(cur)
        current = nil
        phase = .closing
        context.flush()
        context.close(promise: nil)
    }

    private func finishTunnel(_ cur: Current) {
        guard current === cur, let context else { return }
        detachUpstream(cur, reusable: false)
        log(cur)
        current = nil
        phase = .closing
        afterPendingWrites(context.channel) { context.close(promise: nil) }
    }

    private func clientInputClosed() {
        switch phase {
        case .tunnel:
            guard let cur = current else { return }
            cur.tunnelClientClosed = true
            if cur.tunnelUpstreamClosed { return finishTunnel(cur) }
            if let up = cur.upstream {
                flushUpstream()
                afterPendingWrites(up.channel) { up.channel.close(mode: .output, promise: nil) }
            }
        case .head:
            if current == nil { context?.close(promise: nil) }
        case .closing:
            context?.close(promise: nil)
        case .connecting, .forwarding:
            // A client that closes while its request is in flight has gone away (browsers do not
            // half-close); as nginx does, stop the exchange rather than hold an upstream
            // connection for a response nobody will read.
            // A CONNECT client may send its data and half-close before the tunnel is up: the
            // half-close is passed on once it is (see attach).
            guard let cur = current, !cur.head.isConnect else { return }
            cur.record.detail = cur.requestBodyDone
                ? "client closed the connection before the response was complete"
                : "client closed before sending the whole request body"
            abortExchange()
        }
    }

    /// Sends what is queued, then shuts our side and waits (briefly) for the client to close, so
    /// that unread request bytes do not turn the close into a reset that destroys the response.
    private func closeAfterWrites() {
        guard let context else { return }
        phase = .closing
        inbound = nil
        if let up = current?.upstream { up.close() }
        afterPendingWrites(context.channel) {
            guard let context = self.context else { return }
            if self.inputClosed {
                context.close(promise: nil)
            } else {
                context.close(mode: .output, promise: nil)
                self.ensureTimer(at: .now() + .seconds(2))
            }
        }
        resumeReadingIfNeeded()
    }

    /// Runs `action` once everything written to `channel` so far has gone out (writes complete
    /// in order, so an empty write's completion marks the point). Closing the output earlier
    /// would fail the writes still queued.
    private func afterPendingWrites(_ channel: Channel, _ action: @escaping () -> Void) {
        channel.writeAndFlush(ByteBuffer()).assumeIsolated().whenComplete { _ in action() }
    }

    // MARK: - Local answers

    /// `body`: a fixed body and content type instead of the explanatory page (blocked images, 204).
    func respondLocally(
        _ status: Int, _ message: String, result: ResultCode, headers: [(String, String)] = [], body: ([UInt8], String?)? = nil
    ) {
        guard let context, let cur = current else { return }
        cur.record.status = status
        cur.record.result = result
        if cur.record.detail == nil, status >= 400 { cur.record.detail = message }
        // A refused CONNECT closes too: the client may already have sent its TLS hello, which
        // must not be read as the next request.
        let mustClose = !cur.clientKeepAlive || !cur.requestBodyDone || status == 400 || quiescing || cur.head.isConnect
        if !cur.requestBodyDone { inbound = nil }
        let page: ByteBuffer
        if let (bytes, type) = body {
            page = LocalResponse.fixed(
                status: status, body: bytes, contentType: type, close: mustClose, headRequest: cur.head.isHead, via: settings.via,
                allocator: context.channel.allocator)
        } else {
            page = LocalResponse.make(
                status: status, message: message, request: "\(cur.head.method) \(cur.head.target)", style: cur.pageStyle,
                close: mustClose, headRequest: cur.head.isHead, via: settings.via, requestID: cur.requestID, detail: cur.record.detail,
                headers: headers, fields: cur.pageFields, templates: settings.pages, client: clientText, user: cur.record.user,
                allocator: context.channel.allocator)
        }
        cur.record.bytesOut += page.readableBytes
        cur.responseStarted = true
        context.write(wrapOutboundOut(page), promise: nil)
        if mustClose { cur.clientKeepAlive = false }
        finishExchange(cur)
    }

    /// A head that could not be parsed: answer with its status and close, since the stream can
    /// no longer be trusted to be framed correctly.
    private func rejectMalformed(_ error: HeadError) {
        guard let context else { return }
        let (sec, nsec) = wallClock()
        var record = Exchange(startSeconds: sec, startNanoseconds: nsec, client: clientText, listener: listenerName)
        record.status = error.status
        record.result = .none
        record.detail = error.reason
        record.bytesIn = inbound?.readableBytes ?? 0
        record.requestID = RequestIDs.next()
        // The head could not be read, so neither could its Accept: plain text.
        let page = LocalResponse.make(
            status: error.status, message: "Proxima could not accept this request: \(error.reason).", request: nil,
            style: .text, close: true, via: settings.via, requestID: record.requestID, allocator: context.channel.allocator)
        record.bytesOut = page.readableBytes
        metrics.observe(record, host: nil, upstreamHeadNanoseconds: nil)
        settings.accessLog.record(record)
        inbound = nil
        context.write(wrapOutboundOut(page), promise: nil)
        closeAfterWrites()
    }

    // MARK: - Timers

    /// One scheduled check at a time; when it fires it re-evaluates what is due, so moving a
    /// deadline later never needs a reschedule.
    private func ensureTimer(at deadline: NIODeadline) {
        guard let context else { return }
        if let at = timerAt, at <= deadline { return }
        timer?.cancel()
        timerAt = deadline
        // Strong capture: a weak reference would give this handler a side table and make every
        // retain and release of it take the slow path. The timer is cancelled on close.
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.timerFired()
        }
    }

    private func timerFired() {
        timer = nil
        timerAt = nil
        guard let context else { return }
        let now = NIODeadline.now()
        switch phase {
        case .head:
            if now >= headDeadline {
                if waitingIdle || (inbound?.readableBytes ?? 0) == 0 {
                    context.close(promise: nil)
                } else {
                    rejectTimeout()
                }
            } else {
                ensureTimer(at: headDeadline)
            }
        case .connecting:
            // Connect attempts carry their own timeout.
            ensureTimer(at: now + settings.connectTimeout)
        case .forwarding:
            guard let cur = current else { return }
            let due = cur.lastUpstreamActivity + cur.responseTimeout
            if now >= due {
                let secs = Double(cur.responseTimeout.nanoseconds) / 1e9
                let shown = secs == secs.rounded() ? String(Int(secs)) : String(secs)
                upstreamFailed(cur, status: 504, "The upstream server \(cur.target!.authority) did not respond within \(shown)s.")
            } else {
                ensureTimer(at: due)
            }
        case .tunnel:
            guard let cur = current else { return }
            let due = cur.lastUpstreamActivity + settings.tunnelIdleTimeout
            if now >= due {
                cur.record.detail = "tunnel idle timeout"
                finishTunnel(cur)
            } else {
                ensureTimer(at: due)
            }
        case .closing:
            context.close(promise: nil)
        }
    }

    private func rejectTimeout() {
        guard let context else { return }
        let page = LocalResponse.make(
            status: 408, message: "The request head did not arrive in time.", request: nil, style: .text, close: true,
            via: settings.via, allocator: context.channel.allocator)
        context.write(wrapOutboundOut(page), promise: nil)
        closeAfterWrites()
    }
}

/// The request's header fields for header conditions in access rules (holding the exchange,
/// not a copy of its head, which would retain every part of it).
struct RequestHeaders: HeaderLookup {
    let current: ClientHandler.Current
    func firstValue(_ lowercasedName: String) -> String? { current.head.firstValue(lowercasedName) }
}
