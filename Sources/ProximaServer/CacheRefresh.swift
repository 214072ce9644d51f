import NIOCore
import ProximaCache
import ProximaHTTP1

/// `stale-while-revalidate` (RFC 5861): the client got the stale answer at once; this fetches
/// the URL again in the background, on a connection of its own, with the stored validators,
/// and puts the outcome in the cache (a 304 refreshes the stored answer, a storable 200
/// replaces it). Nothing waits for it; failures leave the stale answer to expire.
enum CacheRefresh {
    struct Job: Sendable {
        let key: String
        let entry: CacheEntry
        let host: String
        let port: Int
        let hostHeader: String
        let pathAndQuery: String
        /// The request fields the answer varies on, as the client that triggered this sent them.
        let varyFields: [(String, String)]
        let tls: UpstreamTLS?
        let via: String?
        /// Told how the fetch went (a reverse group's server accounting).
        let done: @Sendable (Bool) -> Void
    }

    static func start(_ job: Job, cache: HTTPCache, services: ServerServices, on loop: EventLoop, timeout: TimeAmount) {
        guard cache.beginRefresh(job.key) else { return job.done(true) }
        var request = "GET \(job.pathAndQuery) HTTP/1.1\r\nHost: \(job.hostHeader)\r\n"
        for (name, value) in job.varyFields { request += "\(name): \(value)\r\n" }
        if let etag = job.entry.facts.etag { request += "If-None-Match: \(etag)\r\n" }
        if let modified = job.entry.facts.lastModified { request += "If-Modified-Since: \(HTTPDate.format(modified))\r\n" }
        if let via = job.via { request += "Via: 1.1 \(via)\r\n" }
        request += "Connection: close\r\n\r\n"
        let requestTime = wallClock().0
        let promise = loop.makePromise(of: ByteBuffer.self)
        let bytes = ByteBuffer(string: request)
        let limit = cache.maxObjectSize + 64 * 1024
        SideConnection.open(host: job.host, port: job.port, tls: job.tls, resolver: services.resolver, on: loop, timeout: timeout) {
            ResponseCollector(request: bytes, promise: promise, limit: limit)
        }.whenComplete { result in
            switch result {
            case .success(let channel):
                let timer = loop.scheduleTask(in: timeout) { channel.close(promise: nil) }
                promise.futureResult.whenComplete { _ in timer.cancel() }
            case .failure(let error): promise.fail(error)
            }
        }
        promise.futureResult.whenComplete { result in
            var ok = false
            if case .success(let response) = result {
                ok = store(response, job: job, cache: cache, requestTime: requestTime)
            }
            cache.endRefresh(job.key)
            job.done(ok)
        }
    }

    /// The answer read to the end of the connection: a 304 refreshes, a storable 200 replaces.
    static func store(_ response: ByteBuffer, job: Job, cache: HTTPCache, requestTime: Int) -> Bool {
        guard case .complete(let head, let consumed)? = try? HeadParser.parseResponse(response, requestMethod: "GET", limits: HeadLimits(maxHeadBytes: 1 << 20))
        else { return false }
        if head.status == 304 {
            guard let renewed = ClientHandler.updated(job.entry, with: head, requestTime: requestTime, heuristic: cache.heuristic) else { return false }
            cache.insert(job.key, renewed)
            return true
        }
        guard head.status < 500 else { return false }
        var fields: [(String, String)] = []
        for f in head.fields { fields.append((head.name(f), head.value(f))) }
        let now = wallClock().0
        let facts = ResponseFacts(status: head.status, fields: fields, now: now)
        guard CachePolicy.mayStore(method: "GET", request: CacheControl(), hasAuthorization: false, response: facts),
            facts.cacheControl.isPublic || !fields.contains(where: { $0.0.lowercased() == "set-cookie" }),
            facts.vary == job.entry.facts.vary
        else { return true }
        var rest = response
        rest.moveReaderIndex(forwardBy: consumed)
        var body = ByteBuffer()
        switch head.framing {
        case .none: break
        case .length(let n):
            guard rest.readableBytes >= n else { return false }
            body = rest.getSlice(at: rest.readerIndex, length: n)!
        case .chunked:
            var scanner = ChunkedScanner()
            let source = rest
            guard (try? source.withUnsafeReadableBytes({ raw in
                try scanner.scan(raw) { start, count in
                    var piece = source.getSlice(at: source.readerIndex + start, length: count)!
                    body.writeBuffer(&piece)
                }
            })) != nil, scanner.isDone else { return false }
        case .untilClose: body = rest
        }
        guard body.readableBytes <= cache.maxObjectSize else { return true }
        let timing = ResponseTiming(requestTime: requestTime, responseTime: now, date: facts.date, age: facts.age)
        let lifetime = CachePolicy.freshnessLifetime(facts, responseTime: now, heuristic: cache.heuristic)
        cache.insert(job.key, CacheEntry(head: head, body: body, facts: facts, timing: timing, lifetime: lifetime, varyKey: job.entry.varyKey))
        return true
    }
}

/// Sends one request and keeps every byte of the answer until the server closes (bounded).
final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let request: ByteBuffer
    private let promise: EventLoopPromise<ByteBuffer>
    private let limit: Int
    private var received = ByteBuffer()

    init(request: ByteBuffer, promise: EventLoopPromise<ByteBuffer>, limit: Int) {
        self.request = request
        self.promise = promise
        self.limit = limit
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard received.readableBytes + bytes.readableBytes <= limit else {
            promise.fail(ChannelError.outputClosed)
            context.close(promise: nil)
            return
        }
        received.writeBuffer(&bytes)
        // Servers may keep the connection open despite `Connection: close`: the answer ends
        // where its framing says.
        if isComplete() {
            promise.succeed(received)
            context.close(promise: nil)
        }
    }

    /// Where the body starts and how it ends, once the head is in; chunked bodies are scanned
    /// from where the last read stopped, so a large answer is not re-read on every read.
    private var body: (start: Int, framing: BodyFraming)?
    private var scanner = ChunkedScanner()
    private var scanned = 0

    private func isComplete() -> Bool {
        if body == nil {
            guard case .complete(let head, let consumed)? = try? HeadParser.parseResponse(received, requestMethod: "GET", limits: HeadLimits(maxHeadBytes: 1 << 20))
            else { return false }
            body = (consumed, head.framing)
            scanned = consumed
        }
        guard let (start, framing) = body else { return false }
        switch framing {
        case .none: return true
        case .length(let n): return received.readableBytes - start >= n
        case .untilClose: return false
        case .chunked:
            let fresh = received.getSlice(at: received.readerIndex + scanned, length: received.readableBytes - scanned)!
            guard let used = try? fresh.withUnsafeReadableBytes({ raw in try scanner.scan(raw) { _, _ in } }) else { return true }
            scanned += used
            return scanner.isDone
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.succeed(received)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}
