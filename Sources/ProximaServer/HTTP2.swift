import NIOCore
import NIOHTTP1
import NIOHTTP2
import ProximaHTTP1

/// Puts one HTTP/2 stream in front of the HTTP/1.1 request flow: NIOHTTP2's codec turns the
/// stream's frames into request parts, this bridge writes them as an HTTP/1.1 message for
/// `ClientHandler` (which keeps every rule: limits, access, routes, retries, logging), and
/// parses the HTTP/1.1 response it writes back into response parts for the stream.
///
/// The cost is one serialisation and one parse per message, with the same strict parser the
/// proxy uses for upstream answers; the gain is a single request path for both protocols.
final class HTTP2StreamBridge: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = HTTPServerResponsePart

    private var pendingHead: HTTPRequestHead?
    private var requestMethod = "GET"
    private var chunkedRequest = false
    private var response = ResponseTranslator()

    // MARK: Request: parts to HTTP/1.1 bytes

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            // The framing is known only from what follows: an end (no body) or data (chunked,
            // unless the client sent a Content-Length).
            pendingHead = head
            requestMethod = head.method.rawValue
        case .body(let body):
            if let head = pendingHead {
                pendingHead = nil
                chunkedRequest = !head.headers.contains(name: "content-length")
                context.fireChannelRead(wrapInboundOut(Self.serialize(head, chunked: chunkedRequest, allocator: context.channel.allocator)))
            }
            guard body.readableBytes > 0 else { return }
            if chunkedRequest {
                var out = context.channel.allocator.buffer(capacity: body.readableBytes + 16)
                out.writeString(String(body.readableBytes, radix: 16))
                out.writeStaticString("\r\n")
                out.writeImmutableBuffer(body)
                out.writeStaticString("\r\n")
                context.fireChannelRead(wrapInboundOut(out))
            } else {
                context.fireChannelRead(wrapInboundOut(body))
            }
        case .end:
            if let head = pendingHead {
                pendingHead = nil
                context.fireChannelRead(wrapInboundOut(Self.serialize(head, chunked: false, allocator: context.channel.allocator)))
            } else if chunkedRequest {
                var out = context.channel.allocator.buffer(capacity: 5)
                out.writeStaticString("0\r\n\r\n")
                context.fireChannelRead(wrapInboundOut(out))
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The end of the request is its END_STREAM, already passed on as the message's end; a
        // half-close event would make the handler treat the client as gone.
        if let e = event as? ChannelEvent, e == .inputClosed { return }
        context.fireUserInboundEventTriggered(event)
    }

    /// The request as HTTP/1.1. NIOHTTP2's codec has already turned `:authority` into `Host`
    /// and refused connection-specific fields; cookies split into several fields (RFC 9113
    /// section 8.2.3) are joined again.
    static func serialize(_ head: HTTPRequestHead, chunked: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: 256)
        out.writeString(head.method.rawValue)
        out.writeStaticString(" ")
        out.writeString(head.uri)
        out.writeStaticString(" HTTP/1.1\r\n")
        var cookies: [String] = []
        for (name, value) in head.headers {
            if name.utf8.count == 6, name.lowercased() == "cookie" {
                cookies.append(value)
                continue
            }
            out.writeString(name)
            out.writeStaticString(": ")
            out.writeString(value)
            out.writeStaticString("\r\n")
        }
        if !cookies.isEmpty {
            out.writeStaticString("cookie: ")
            out.writeString(cookies.joined(separator: "; "))
            out.writeStaticString("\r\n")
        }
        if chunked { out.writeStaticString("transfer-encoding: chunked\r\n") }
        out.writeStaticString("\r\n")
        return out
    }

    // MARK: Response: HTTP/1.1 bytes to parts

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let bytes = unwrapOutboundIn(data)
        let parts: [HTTPServerResponsePart]
        do {
            parts = try response.feed(bytes, requestMethod: requestMethod)
        } catch {
            promise?.fail(error)
            context.close(promise: nil)
            return
        }
        guard !parts.isEmpty else {
            promise?.succeed()
            return
        }
        for (i, part) in parts.enumerated() {
            context.write(wrapOutboundOut(part), promise: i == parts.count - 1 ? promise : nil)
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // A body that runs until the connection closes ends here; any other unfinished answer
        // is cut off (the stream is reset).
        if response.endsAtClose {
            response.finish()
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
        context.close(mode: mode, promise: promise)
    }
}

/// Parses the HTTP/1.1 response `ClientHandler` writes into HTTP/2-ready parts: the head
/// without connection-specific fields, the body without its chunked framing, then the end.
struct ResponseTranslator {
    enum Failure: Error { case malformed }

    private enum State { case head, length(remaining: Int), chunked, untilClose, done }
    private var state = State.head
    private var buffered: ByteBuffer?
    private var scanner = ChunkedScanner()

    var endsAtClose: Bool {
        if case .untilClose = state { return true }
        return false
    }

    mutating func finish() { state = .done }

    /// Fields that mean something only to one HTTP/1.1 connection (RFC 9113 section 8.2.2;
    /// `Trailer`, which announces trailers, is allowed in HTTP/2).
    static let connectionFields = HeadWriter.hopByHopNames.subtracting(["trailer"])

    mutating func feed(_ input: ByteBuffer, requestMethod: String) throws -> [HTTPServerResponsePart] {
        var parts: [HTTPServerResponsePart] = []
        var data = input
        if case .head = state, let held = buffered {
            var joined = held
            var more = input
            joined.writeBuffer(&more)
            data = joined
            buffered = nil
        }
        while data.readableBytes > 0 {
            switch state {
            case .head:
                let parsed: ParseResult<ResponseHead>
                do {
                    parsed = try HeadParser.parseResponse(data, requestMethod: requestMethod, limits: HeadLimits(maxHeadBytes: 1 << 20))
                } catch {
                    throw Failure.malformed
                }
                guard case .complete(let head, let consumed) = parsed else {
                    buffered = data
                    return parts
                }
                data.moveReaderIndex(forwardBy: consumed)
                // Interim answers (100 Continue) are left out: the final one follows.
                if head.isInterim { continue }
                var headers = HTTPHeaders()
                let listed = Set(head.connection.others.map { $0.lowercased() })
                for f in head.fields {
                    let name = head.name(f).lowercased()
                    if Self.connectionFields.contains(name) || listed.contains(name) { continue }
                    headers.add(name: name, value: head.value(f))
                }
                parts.append(.head(HTTPResponseHead(version: .http2, status: HTTPResponseStatus(statusCode: head.status), headers: headers)))
                switch head.framing {
                case .none, .length(0):
                    parts.append(.end(nil))
                    state = .done
                case .length(let n): state = .length(remaining: n)
                case .chunked:
                    scanner = ChunkedScanner()
                    state = .chunked
                case .untilClose: state = .untilClose
                }
            case .length(let remaining):
                let n = min(remaining, data.readableBytes)
                parts.append(.body(.byteBuffer(data.readSlice(length: n)!)))
                if n == remaining {
                    parts.append(.end(nil))
                    state = .done
                } else {
                    state = .length(remaining: remaining - n)
                }
            case .chunked:
                var ranges: [(Int, Int)] = []
                let consumed: Int
                do {
                    consumed = try data.withUnsafeReadableBytes { raw throws(ChunkedScanner.Failure) in
                        try scanner.scan(raw) { ranges.append(($0, $1)) }
                    }
                } catch {
                    throw Failure.malformed
                }
                for (start, count) in ranges {
                    parts.append(.body(.byteBuffer(data.getSlice(at: data.readerIndex + start, length: count)!)))
                }
                data.moveReaderIndex(forwardBy: consumed)
                if scanner.isDone {
                    parts.append(.end(nil))
                    state = .done
                }
            case .untilClose:
                parts.append(.body(.byteBuffer(data)))
                data.moveReaderIndex(forwardBy: data.readableBytes)
            case .done:
                // Nothing may follow the one answer of a stream.
                throw Failure.malformed
            }
        }
        return parts
    }
}
