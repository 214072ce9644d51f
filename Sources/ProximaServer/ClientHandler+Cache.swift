import NIOCore
import ProximaBalance
import ProximaCache
import ProximaHTTP1
import ProximaPolicy
import ProximaTelemetry

/// The cache and compression steps of a request: answering from the store, validating,
/// collapsing misses, storing answers as they pass, purging, and choosing a content coding.
extension ClientHandler {

    /// Answers a GET or HEAD from the cache when a stored response may serve it (RFC 9111
    /// section 4), and otherwise notes what the miss needs: the key (to store the answer, or
    /// to invalidate it after an unsafe method) and the Cache-Status to send. True when the
    /// request was answered.
    func answerFromCache(_ cur: Current, key: String, next: CacheMissNext) -> Bool {
        guard let cache = settings.cache else { return false }
        let head = cur.head
        cur.requestWallTime = cur.record.startSeconds
        if head.method == "PURGE" {
            purge(cur, key: key, cache: cache)
            return true
        }
        guard head.method == "GET" || head.method == "HEAD" else {
            // Unsafe methods invalidate what is stored for the URL (section 4.4).
            if head.method != "OPTIONS", head.method != "TRACE" { cur.cacheKey = key }
            return false
        }
        // A body on a GET makes it no ordinary GET.
        guard cur.requestBodyDone else { return false }
        let range = head.method == "GET" ? head.firstValue("range") : nil
        let request = CacheControl(head.values("cache-control"))
        if !request.noStore { cur.cacheKey = key }
        let pragmaNoCache = head.values("pragma").contains { $0.lowercased().contains("no-cache") }
        let stored = cache.lookup(key, header: { head.values($0) }) ?? cur.diskEntry
        if stored == nil, !cur.diskChecked, let disk = cache.disk, let item = disk.lookup(key, header: { head.values($0) }) {
            readFromDisk(cur, key: key, item: item, disk: disk, next: next)
            return true
        }
        if let entry = stored {
            let age = entry.timing.currentAge(now: cur.requestWallTime)
            let use = CachePolicy.use(request: request, pragmaNoCache: pragmaNoCache, response: entry.facts.cacheControl, lifetime: entry.lifetime, age: age)
            switch use {
            case .fresh, .staleAllowed:
                serveFromCache(cur, entry, age: age, range: range.flatMap { Self.rangeToServe($0, head, entry) })
                return true
            case .validate where range != nil, .staleWhileRevalidate where range != nil:
                // A range of a stale answer: passed to the origin as it is, nothing stored.
                cur.cacheKey = nil
                return false
            case .staleWhileRevalidate where refreshInBackground(cur, key: key, entry: entry, next: next):
                serveFromCache(
                    cur, entry, age: age, result: .staleHit, cacheStatus: "proxima; hit; fwd=stale; detail=stale-while-revalidate",
                    detail: "stale answer served, refreshed in the background")
                return true
            case .validate, .staleWhileRevalidate:
                cur.cacheStatus = "proxima; fwd=stale"
                // Validated with the origin when the stored answer has validators and the client
                // sent none of its own (its conditionals then go to the origin untouched).
                let clientConditional = head.firstValue("if-none-match") != nil || head.firstValue("if-modified-since") != nil
                if !clientConditional, entry.facts.etag != nil || entry.facts.lastModified != nil {
                    cur.revalidating = entry
                    if case .validate(true) = use { cur.staleIfError = true }
                }
            }
        } else if range != nil {
            cur.cacheKey = nil
            return false
        } else {
            cur.cacheStatus = "proxima; fwd=uri-miss"
            if !request.onlyIfCached, head.method == "GET", cur.cacheKey != nil, !cur.collapseDone, collapse(cur, key: key, cache: cache, next: next) {
                return true
            }
        }
        if request.onlyIfCached {
            cur.cacheKey = nil
            cur.record.detail = "not in the cache (only-if-cached)"
            respondLocally(504, "Not in the cache, and the request asked for a cached answer only (only-if-cached).", result: .cacheMissOnly)
            return true
        }
        return false
    }

    /// A miss in memory that the disk store holds: the file is read on the store's threads, the
    /// answer goes into memory too, and the request is looked at again with it in hand.
    func readFromDisk(_ cur: Current, key: String, item: DiskStore.Item, disk: DiskStore, next: CacheMissNext) {
        guard let context, let cache = settings.cache else { return }
        cur.diskChecked = true
        let me = NIOLoopBound(self, eventLoop: context.eventLoop)
        let waiting = NIOLoopBound(cur, eventLoop: context.eventLoop)
        disk.load(key, item, on: context.eventLoop).whenSuccess { entry in
            let cur = waiting.value
            guard me.value.current === cur else { return }
            if let entry {
                cache.promote(key, entry)
                cur.diskEntry = entry
            }
            me.value.resumeMiss(cur, key: key, next: next)
        }
    }

    /// Looks at the cache again after a wait (a disk read, another request's fetch), and goes
    /// upstream when it still cannot answer.
    func resumeMiss(_ cur: Current, key: String, next: CacheMissNext, stored: Bool = true) {
        if stored, answerFromCache(cur, key: key, next: next) { return }
        switch next {
        case .forward(let target): connectUpstream(cur, target, reuse: true)
        case .reverse(let route, let group, let hostValue): proxy(cur, route, group, hostValue: hostValue)
        }
    }

    /// Starts the background fetch of a stale-while-revalidate answer; false when it cannot
    /// (no usable server), and the request is then validated in the foreground.
    func refreshInBackground(_ cur: Current, key: String, entry: CacheEntry, next: CacheMissNext) -> Bool {
        guard let cache = settings.cache, let context else { return false }
        let head = cur.head
        let vary = entry.facts.vary.compactMap { name -> (String, String)? in
            let values = head.values(name)
            return values.isEmpty ? nil : (name, values.joined(separator: ", "))
        }
        let job: CacheRefresh.Job
        switch next {
        case .forward(let target):
            job = CacheRefresh.Job(
                key: key, entry: entry, host: target.host, port: target.port, hostHeader: target.authority, pathAndQuery: target.pathAndQuery,
                varyFields: vary, tls: nil, via: settings.via, done: { _ in })
        case .reverse(let route, let group, let hostValue):
            guard let server = group.pick(key: nil, tried: ServerSet()) else { return false }
            let target = group.targets[server]
            job = CacheRefresh.Job(
                key: key, entry: entry, host: target.host, port: target.port,
                hostHeader: route.hostHeader == .keep && !hostValue.isEmpty ? hostValue : target.authority,
                pathAndQuery: route.rewrite(head.target), varyFields: vary, tls: group.tls, via: settings.via,
                done: { ok in group.finished(server, seconds: nil, ok: ok) })
        }
        CacheRefresh.start(job, cache: cache, services: services, on: context.eventLoop, timeout: settings.responseTimeout)
        return true
    }

    /// Request collapsing: concurrent misses for one URL send one request upstream; the others
    /// wait for it (at most `collapseTimeout`) and are answered from what it stored, or fetch
    /// on their own when it stored nothing. True when this request now waits.
    func collapse(_ cur: Current, key: String, cache: HTTPCache, next: CacheMissNext) -> Bool {
        guard let context else { return false }
        let loop = context.eventLoop
        let me = NIOLoopBound(self, eventLoop: loop)
        let waiting = NIOLoopBound(cur, eventLoop: loop)
        let role = cache.miss(key, now: cur.requestWallTime) { stored in
            loop.execute { me.value.collapseEnded(waiting.value, stored: stored) }
        }
        switch role {
        case .alone:
            return false
        case .leader:
            cur.collapseLeader = true
            return false
        case .follower:
            cur.collapseWait = next
            cur.collapseTimer = loop.scheduleTask(in: Self.collapseTimeout) {
                me.value.collapseEnded(waiting.value, stored: false)
            }
            return true
        }
    }

    static let collapseTimeout = TimeAmount.seconds(5)

    /// The fetch this request waited for ended (or the wait timed out): answer from the cache
    /// if it can, else go upstream on its own.
    func collapseEnded(_ cur: Current, stored: Bool) {
        guard current === cur, let next = cur.collapseWait else { return }
        cur.collapseWait = nil
        cur.collapseTimer?.cancel()
        cur.collapseTimer = nil
        cur.collapseDone = true
        resumeMiss(cur, key: cur.cacheKey ?? "", next: next, stored: stored)
    }

    /// Writes a stored response (or `304` to a client whose validators match it) with `Age`
    /// and `Cache-Status`, and ends the exchange as any other.
    /// The byte range to answer with, when `If-Range` (if any) still names this answer; nil:
    /// the whole answer.
    static func rangeToServe(_ value: String, _ head: RequestHead, _ entry: CacheEntry) -> ByteRange? {
        if let ifRange = head.firstValue("if-range") {
            let matches: Bool
            if ifRange.hasPrefix("\"") {
                matches = entry.facts.etag == ifRange  // strong comparison only
            } else {
                matches = entry.facts.lastModified != nil && HTTPDate.parse(ifRange) == entry.facts.lastModified
            }
            if !matches { return nil }
        }
        let r = ByteRange.parse(value, length: entry.body.readableBytes)
        return r == .ignore ? nil : r
    }

    func serveFromCache(
        _ cur: Current, _ entry: CacheEntry, age: Int, result: ResultCode = .memHit, cacheStatus: String = "proxima; hit", detail: String? = nil,
        range: ByteRange? = nil
    ) {
        guard let context else { return }
        let head = cur.head
        let result = result == .memHit && cur.diskEntry === entry ? .hit : result
        if let range, !(head.firstValue("if-none-match") != nil || head.firstValue("if-modified-since") != nil) {
            return servePart(cur, entry, age: age, range: range, cacheStatus: cacheStatus, context: context)
        }
        let notModified = CachePolicy.notModified(
            ifNoneMatch: head.values("if-none-match"), ifModifiedSince: head.firstValue("if-modified-since"),
            etag: entry.facts.etag, lastModified: entry.facts.lastModified, date: entry.facts.date, now: cur.requestWallTime)
        let mustClose = !cur.clientKeepAlive || quiescing
        let connection: HeadWriter.ConnectionHeader = mustClose ? .close : (head.version == .http10 ? .keepAlive : .none)
        let compressed = notModified ? nil : compressedCopy(cur, entry)
        let body = compressed?.body ?? entry.body
        // Small bodies go in the head's buffer (one write); larger ones as a slice of the stored
        // body (no copy).
        let inline = !notModified && !head.isHead && body.readableBytes <= Self.coalescedBodyLimit
        var out = context.channel.allocator.buffer(capacity: entry.head.bytes.readableBytes + 256 + (inline ? body.readableBytes : 0))
        var edit = entry.servedEdit
        if !settings.responseHeaderRules.isEmpty {
            edit = HeaderEdit(rules: settings.responseHeaderRules, bytes: entry.head.bytes, fields: entry.head.fields)
            edit.drop(CacheEntry.neverServed, bytes: entry.head.bytes, fields: entry.head.fields)
        }
        if let coding = compressed?.coding { Self.describeCompressed(entry.head, coding, in: &edit) }
        edit.append(name: "Age", value: String(age))
        edit.append(name: "Cache-Status", value: cacheStatus)
        if notModified {
            // RFC 9110 section 15.4.5: the fields a 200 would have carried that describe it.
            out.writeStaticString("HTTP/1.1 304 Not Modified\r\n")
            // The representation this client would get: a compressed copy has a weak ETag and
            // varies on Accept-Encoding too.
            let coding = hitCoding(cur, entry)
            for f in entry.head.fields {
                let name = entry.head.name(f).lowercased()
                guard ["etag", "cache-control", "expires", "date", "vary", "content-location", "last-modified"].contains(name) else { continue }
                if coding != nil, name == "etag" || name == "vary" { continue }
                out.writeString("\(entry.head.name(f)): \(entry.head.value(f))\r\n")
            }
            if coding != nil {
                let (vary, etag) = Self.compressedVaryAndETag(entry.head)
                out.writeString("Vary: \(vary)\r\n")
                if let etag { out.writeString("ETag: \(etag)\r\n") }
            }
            out.writeString("Age: \(age)\r\nCache-Status: \(cacheStatus)\r\n")
            if let via = settings.via { out.writeString("Via: 1.1 \(via)\r\n") }
            if mustClose { out.writeStaticString("Connection: close\r\n") } else if head.version == .http10 { out.writeStaticString("Connection: keep-alive\r\n") }
            out.writeStaticString("\r\n")
            cur.record.status = 304
            cur.record.result = .inmHit
        } else {
            HeadWriter.writeClientResponse(entry.head, framing: .length(body.readableBytes), via: settings.via, connection: connection, edit: edit, into: &out)
            if inline { out.writeImmutableBuffer(body) }
            cur.record.status = entry.head.status
            cur.record.result = result
        }
        cur.record.contentType = entry.head.firstValue("content-type")
        cur.record.detail = detail ?? "cache hit, age \(age)s"
        cur.record.bytesOut += out.readableBytes
        cur.responseStarted = true
        if mustClose { cur.clientKeepAlive = false }
        context.write(wrapOutboundOut(out), promise: nil)
        if !inline, !notModified, !head.isHead {
            cur.record.bytesOut += body.readableBytes
            context.write(wrapOutboundOut(body), promise: nil)
        }
        finishExchange(cur)
    }

    /// `206 Partial Content` (or `416`) from a stored answer: its fields as stored (without
    /// framing and connection fields), `Content-Range`, and the slice of the body.
    func servePart(_ cur: Current, _ entry: CacheEntry, age: Int, range: ByteRange, cacheStatus: String, context: ChannelHandlerContext) {
        let total = entry.body.readableBytes
        let mustClose = !cur.clientKeepAlive || quiescing
        var out = context.channel.allocator.buffer(capacity: total + 512)
        let slice: ByteBuffer?
        switch range {
        case .satisfiable(let r):
            out.writeStaticString("HTTP/1.1 206 Partial Content\r\n")
            slice = entry.body.getSlice(at: entry.body.readerIndex + r.lowerBound, length: r.count)
            cur.record.status = 206
            Self.writeStoredFields(entry.head, into: &out)
            out.writeString("Content-Range: bytes \(r.lowerBound)-\(r.upperBound)/\(total)\r\nContent-Length: \(r.count)\r\n")
        default:
            out.writeStaticString("HTTP/1.1 416 Range Not Satisfiable\r\n")
            slice = nil
            cur.record.status = 416
            out.writeString("Content-Range: bytes */\(total)\r\nContent-Length: 0\r\n")
        }
        out.writeString("Age: \(age)\r\nCache-Status: \(cacheStatus)\r\n")
        if let via = settings.via { out.writeString("Via: 1.1 \(via)\r\n") }
        if mustClose { out.writeStaticString("Connection: close\r\n") } else if cur.head.version == .http10 { out.writeStaticString("Connection: keep-alive\r\n") }
        out.writeStaticString("\r\n")
        if let slice { out.writeImmutableBuffer(slice) }
        cur.record.result = cur.diskEntry === entry ? .hit : .memHit
        cur.record.detail = "cache hit, part of the stored answer"
        cur.record.bytesOut += out.readableBytes
        cur.responseStarted = true
        if mustClose { cur.clientKeepAlive = false }
        context.write(wrapOutboundOut(out), promise: nil)
        finishExchange(cur)
    }

    /// Fields of a stored head that neither describe the stored answer nor may be served from
    /// it: framing and connection fields, and what `CacheEntry.neverServed` names.
    static let storedFieldsLeftOut = CacheEntry.neverServed.union(HeadWriter.hopByHopNames).union(["content-length", "content-range"])

    /// The stored fields that describe the answer (not its framing or the connection).
    static func writeStoredFields(_ head: ResponseHead, into out: inout ByteBuffer) {
        let listed = Set(head.connection.others.map { $0.lowercased() })
        for f in head.fields {
            let name = head.name(f).lowercased()
            if storedFieldsLeftOut.contains(name) || listed.contains(name) { continue }
            out.writeString("\(head.name(f)): \(head.value(f))\r\n")
        }
    }

    /// `PURGE` (Squid's and Varnish's): removes the URL's stored answers, for the clients in
    /// `cache.purge_clients` only.
    func purge(_ cur: Current, key: String, cache: HTTPCache) {
        guard let ip = clientIP, settings.purgeClients.contains(where: { $0.contains(ip) }) else {
            cur.record.detail = "PURGE from a client not in cache.purge_clients"
            return respondLocally(403, "PURGE is not allowed from this address (cache.purge_clients).", result: .denied)
        }
        let found = cache.contains(key)
        cache.remove(key)
        cur.record.detail = found ? "purged from the cache" : "PURGE: not in the cache"
        respondLocally(found ? 200 : 404, found ? "Purged." : "Not in the cache.", result: .none, body: (Array((found ? "purged\n" : "not cached\n").utf8), "text/plain"))
    }

    /// The cache key of a `Location` value when it is on the same origin as `key` (relative, or
    /// absolute with the same scheme and authority).
    static func sameOriginKey(_ location: String, of key: String) -> String? {
        guard let schemeEnd = key.range(of: "://") else { return nil }
        let afterScheme = key[schemeEnd.upperBound...]
        let origin = String(key[..<(afterScheme.firstIndex(of: "/") ?? key.endIndex)])
        if location.hasPrefix("/"), !location.hasPrefix("//") { return origin + removingDotSegments(location) }
        if location.lowercased().hasPrefix(origin.lowercased() + "/") { return origin + location.dropFirst(origin.count) }
        // A relative path (RFC 3986 section 5.2): against the directory of the request's path.
        guard !location.isEmpty, !location.hasPrefix("//"), !location.hasPrefix("?"), !location.hasPrefix("#"), !location.contains(":") else { return nil }
        let path = key[origin.endIndex...].prefix { $0 != "?" }
        let directory = path.lastIndex(of: "/").map { String(path[...$0]) } ?? "/"
        return origin + removingDotSegments(directory + location)
    }

    /// RFC 3986 section 5.2.4, for an absolute path (the query, if any, left as it is).
    static func removingDotSegments(_ target: String) -> String {
        let query = target.firstIndex(of: "?").map { String(target[$0...]) } ?? ""
        let path = target.prefix { $0 != "?" }
        var out: [Substring] = []
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        for (i, segment) in segments.enumerated() {
            let last = i == segments.count - 1
            switch segment {
            case ".": if last { out.append("") }
            case "..":
                if !out.isEmpty { out.removeLast() }
                if last { out.append("") }
            default: out.append(segment)
            }
        }
        return "/" + out.joined(separator: "/") + query
    }

    /// The origin confirmed a stale stored answer (304): its fields update the stored ones
    /// (RFC 9111 section 4.3.4), the answer is fresh again, and the client gets it from the store.
    func refreshed(_ cur: Current, _ stale: CacheEntry, _ notModified: ResponseHead) {
        if !notModified.serverKeepAlive { cur.upstreamReusable = false }
        cur.response = .done
        detachUpstream(cur, reusable: cur.upstreamReusable && cur.requestBodyDone)
        var entry = stale
        if let key = cur.cacheKey, let cache = settings.cache, let renewed = Self.updated(stale, with: notModified, requestTime: cur.requestWallTime, heuristic: cache.heuristic) {
            cache.insert(key, renewed)
            entry = renewed
        }
        serveFromCache(
            cur, entry, age: entry.timing.currentAge(now: wallClock().0), result: .refreshUnmodified,
            cacheStatus: "proxima; fwd=stale; fwd-status=304", detail: "validated with the origin (304)")
    }

    /// The stored head with the 304's fields in place of those of the same names (framing
    /// fields excepted), and new times.
    static func updated(_ stale: CacheEntry, with notModified: ResponseHead, requestTime: Int, heuristic: CachePolicy.Heuristic) -> CacheEntry? {
        var fresh: [(String, String)] = []
        for f in notModified.fields { fresh.append((notModified.name(f), notModified.value(f))) }
        // Every field of the 304 replaces the stored ones of its name (section 3.2), except what
        // is never stored (hop-by-hop and connection-listed fields, the proxy's own) and
        // Content-Length, which describes the stored body, not the 304.
        let listed = Set(notModified.connection.others.map { $0.lowercased() })
        let skip = Self.storedFieldsLeftOut.union(listed)
        let replaced = Set(fresh.map { $0.0.lowercased() }).subtracting(skip)
        var text = "HTTP/1.1 \(stale.head.status) \(stale.head.reason)\r\n"
        for f in stale.head.fields where !replaced.contains(stale.head.name(f).lowercased()) {
            text += "\(stale.head.name(f)): \(stale.head.value(f))\r\n"
        }
        for (name, value) in fresh where !skip.contains(name.lowercased()) { text += "\(name): \(value)\r\n" }
        text += "\r\n"
        guard case .complete(let head, _)? = try? HeadParser.parseResponse(ByteBuffer(string: text), requestMethod: "GET", limits: HeadLimits(maxHeadBytes: 1 << 20)) else {
            return nil
        }
        var fields: [(String, String)] = []
        for f in head.fields { fields.append((head.name(f), head.value(f))) }
        let now = wallClock().0
        let facts = ResponseFacts(status: head.status, fields: fields, now: now)
        let timing = ResponseTiming(requestTime: requestTime, responseTime: now, date: facts.date, age: facts.age)
        let lifetime = CachePolicy.freshnessLifetime(facts, responseTime: now, heuristic: heuristic)
        return CacheEntry(head: head, body: stale.body, facts: facts, timing: timing, lifetime: lifetime, varyKey: stale.varyKey)
    }

    /// RFC 5861 `stale-if-error`: the origin failed while a stale answer that allows it was
    /// being validated; the stale answer goes out instead of an error.
    func serveStaleOnError(_ cur: Current, because reason: String) -> Bool {
        guard cur.staleIfError, let stale = cur.revalidating, !cur.responseStarted else { return false }
        cur.revalidating = nil
        serveFromCache(
            cur, stale, age: stale.timing.currentAge(now: wallClock().0), result: .staleOnError,
            cacheStatus: "proxima; hit; fwd=stale; detail=stale-if-error", detail: "stale answer served: \(reason)")
        return true
    }

    /// The coding to compress this answer with: an answer the client accepts compressed,
    /// worth compressing (a text type, not known to be short), not compressed already, whole
    /// (no range), and not marked `no-transform`.
    /// `storedLength`: the body's length when it is a stored one (its head's framing is the
    /// origin's).
    func compressionFor(_ cur: Current, _ head: ResponseHead, storedLength: Int? = nil) -> ContentCoding? {
        guard let config = settings.compression, head.status == 200, !cur.head.isHead, cur.head.method != "CONNECT" else { return nil }
        if let encoding = head.firstValue("content-encoding"), encoding.lowercased() != "identity" { return nil }
        if head.firstValue("content-range") != nil { return nil }
        if let n = storedLength {
            if n < config.minLength.bytes { return nil }
        } else {
            if case .length(let n) = head.framing, n < config.minLength.bytes { return nil }
            if case .none = head.framing { return nil }
        }
        guard ContentCoding.compressible(head.firstValue("content-type")) else { return nil }
        if head.values("cache-control").contains(where: { $0.lowercased().contains("no-transform") }) { return nil }
        return ContentCoding.choose(acceptEncoding: cur.head.values("accept-encoding"), allowed: settings.compressionCodings)
    }


    /// The client gets another representation of `head`: its coding, `Vary: Accept-Encoding`
    /// added to the origin's, and a weak `ETag` (the bytes differ, the meaning does not).
    static func describeCompressed(_ head: ResponseHead, _ coding: ContentCoding, in edit: inout HeaderEdit) {
        edit.drop(["vary", "etag"], bytes: head.bytes, fields: head.fields)
        edit.append(name: "Content-Encoding", value: coding.rawValue)
        let (vary, etag) = compressedVaryAndETag(head)
        edit.append(name: "Vary", value: vary)
        if let etag { edit.append(name: "ETag", value: etag) }
    }

    /// `Vary` and `ETag` of a compressed representation of `head`.
    static func compressedVaryAndETag(_ head: ResponseHead) -> (vary: String, etag: String?) {
        let vary = head.values("vary")
        let etag = head.firstValue("etag").map { $0.hasPrefix("W/") ? $0 : "W/" + $0 }
        return (vary.isEmpty ? "Accept-Encoding" : vary.joined(separator: ", ") + ", Accept-Encoding", etag)
    }

    /// Stored answers up to this size are compressed on their first hit by a client that
    /// accepts a coding, on the event loop, and the copy is kept; larger ones are served as
    /// stored (compressing megabytes at once would hold up every connection of the loop).
    static let maxCompressedOnHit = 1 << 20

    /// The coding a hit on `entry` is served in for this client (nil: as stored).
    func hitCoding(_ cur: Current, _ entry: CacheEntry) -> ContentCoding? {
        guard settings.compression != nil, entry.coding == nil, entry.body.readableBytes <= Self.maxCompressedOnHit else { return nil }
        return compressionFor(cur, entry.head, storedLength: entry.body.readableBytes)
    }

    /// The compressed copy of a stored answer for this client, made now if there is none yet.
    func compressedCopy(_ cur: Current, _ entry: CacheEntry) -> CacheEntry? {
        guard let cache = settings.cache, let key = cur.cacheKey, let coding = hitCoding(cur, entry) else { return nil }
        if let copy = cache.encoded(key, of: entry, coding: coding) { return copy }
        guard let context, let compressor = BodyCompressor(coding, level: coding == .gzip ? settings.compression!.gzipLevel : settings.compression!.brotliLevel) else {
            return nil
        }
        var body = compressor.compress(entry.body, allocator: context.channel.allocator)
        var tail = compressor.finish(allocator: context.channel.allocator)
        body.writeBuffer(&tail)
        let copy = CacheEntry(
            head: entry.head, body: body, facts: entry.facts, timing: entry.timing, lifetime: entry.lifetime, varyKey: entry.varyKey, coding: coding,
            derivedFrom: entry.serial)
        cache.insertEncoded(key, copy)
        return copy
    }

    /// When a response head arrives: invalidation after an unsafe method, or whether to store
    /// this answer (a shared cache's rules; responses setting cookies are not stored unless
    /// marked public, as Varnish does).
    func considerStoring(_ cur: Current, _ head: ResponseHead) {
        guard let cache = settings.cache, let key = cur.cacheKey else { return }
        let method = cur.head.method
        if method != "GET" && method != "HEAD" {
            // Section 4.4: the target, and Location / Content-Location on the same origin.
            if head.status < 400 {
                cache.remove(key)
                for name in ["location", "content-location"] {
                    if let value = head.firstValue(name), let other = Self.sameOriginKey(value, of: key) { cache.remove(other) }
                }
            }
            return
        }
        guard method == "GET", cur.hiding == nil else { return }
        if cur.revalidating != nil {
            cur.record.result = .refreshModified
            cur.revalidating = nil
        }
        var fields: [(String, String)] = []
        fields.reserveCapacity(head.fields.count)
        for f in head.fields { fields.append((head.name(f), head.value(f))) }
        let facts = ResponseFacts(status: head.status, fields: fields, now: cur.requestWallTime)
        let request = CacheControl(cur.head.values("cache-control"))
        let hasAuthorization = cur.head.firstValue("authorization") != nil
        guard CachePolicy.mayStore(method: method, request: request, hasAuthorization: hasAuthorization, response: facts) else { return }
        if !facts.cacheControl.isPublic, fields.contains(where: { $0.0.lowercased() == "set-cookie" }) { return }
        let expected: Int?
        if case .length(let n) = head.framing { expected = n } else { expected = nil }
        if let n = expected, n > cache.maxObjectSize { return }
        guard let varyKey = CachePolicy.varyKey(facts.vary, header: { cur.head.values($0) }) else { return }
        let now = wallClock().0
        let timing = ResponseTiming(requestTime: cur.requestWallTime, responseTime: now, date: facts.date, age: facts.age)
        cur.capture = CacheCapture(key: key, head: head, facts: facts, timing: timing, varyKey: varyKey, limit: cache.maxObjectSize, expected: expected)
        cur.cacheStatus = (cur.cacheStatus ?? "proxima; fwd=uri-miss") + "; stored"
    }

    /// The response ended cleanly: the captured copy goes into the cache.
    func storeCapture(_ cur: Current) {
        guard let capture = cur.capture, let cache = settings.cache else { return }
        cur.capture = nil
        guard !capture.abandoned else { return }
        let lifetime = CachePolicy.freshnessLifetime(capture.facts, responseTime: capture.timing.responseTime, heuristic: cache.heuristic)
        cache.insert(capture.key, CacheEntry(
            head: capture.head, body: capture.body, facts: capture.facts, timing: capture.timing, lifetime: lifetime, varyKey: capture.varyKey))
        if cur.collapseLeader {
            cur.collapseLeader = false
            cache.fetched(capture.key, stored: true, now: capture.timing.responseTime)
        }
    }
}
