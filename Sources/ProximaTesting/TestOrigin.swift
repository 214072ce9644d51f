import Atomics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// An HTTP/1.1 origin server for tests, built on NIOHTTP1 (an implementation independent of
/// Proxima's own framing), on an ephemeral loopback port.
///
/// Routes: `/bytes/N` (N bytes, Content-Length), `/chunked/N` (N bytes, chunked),
/// `/stream/N` (N bytes, chunked, written with back-pressure), `/headers` (the request head as
/// text), `/echo` (the request body back), `/count` (the number of body bytes received,
/// streaming), `/status/N`, `/trailers` (chunked with a trailer), `/slow` (never answers).
/// A request with `Expect: 100-continue` first gets `100 Continue`.
public final class TestOrigin: Sendable {
    public let channel: Channel
    public let port: Int
    public let host: String
    let accepted: ManagedAtomic<Int>
    let open: ManagedAtomic<Int>
    let children: NIOLockedValueBox<[ObjectIdentifier: Channel]>
    /// Held after `kill()`, so that no other test takes the port while this server is "dead".
    let deadPort = NIOLockedValueBox<ClosedPort?>(nil)

    /// TCP connections accepted so far.
    public var connectionsAccepted: Int { accepted.load(ordering: .relaxed) }
    /// TCP connections open now.
    public var connectionsOpen: Int { open.load(ordering: .relaxed) }

    init(channel: Channel, host: String, accepted: ManagedAtomic<Int>, open: ManagedAtomic<Int>, children: NIOLockedValueBox<[ObjectIdentifier: Channel]>) {
        self.children = children
        self.channel = channel
        self.port = channel.localAddress!.port!
        self.host = host
        self.accepted = accepted
        self.open = open
    }

    /// `http://127.0.0.1:PORT` (or `http://[::1]:PORT`).
    public var url: String { host.contains(":") ? "http://[\(host)]:\(port)" : "http://\(host):\(port)" }

    /// `port`: 0 for any free one, or a given one (a test restarting a server where it was).
    public static func start(host: String = "127.0.0.1", port: Int = 0, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> TestOrigin {
        let accepted = ManagedAtomic(0)
        let open = ManagedAtomic(0)
        let children = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // So that `kill()` can take the port over before the listener goes (see there).
            .serverChannelOption(.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
            .childChannelInitializer { channel in
                accepted.wrappingIncrement(ordering: .relaxed)
                open.wrappingIncrement(ordering: .relaxed)
                let id = ObjectIdentifier(channel)
                children.withLockedValue { $0[id] = channel }
                channel.closeFuture.whenComplete { _ in
                    open.wrappingDecrement(ordering: .relaxed)
                    children.withLockedValue { $0[id] = nil }
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(OriginHandler())
                }
            }
            .bind(host: host, port: port).get()
        return TestOrigin(channel: channel, host: host, accepted: accepted, open: open, children: children)
    }

    public func stop() async {
        try? await channel.close()
    }

    /// As if the server died: the listener and every open connection are closed.
    /// The port is taken over by a `ClosedPort` before the listener closes (both sockets have
    /// `SO_REUSEPORT`), so there is no moment at which another test's listener could be given
    /// it: connections are refused from then on, as by a dead server, until the test starts a
    /// server there again (CI saw a killed back-end's port answer again, for another test).
    public func kill() async {
        let reserved = try? ClosedPort(port: port)
        deadPort.withLockedValue { $0 = reserved }
        try? await channel.close()
        for child in children.withLockedValue({ Array($0.values) }) { try? await child.close() }
    }
}

/// A deterministic byte pattern, so a client can check what arrived.
public func patternBytes(_ count: Int, offset: Int = 0) -> [UInt8] {
    (0..<count).map { UInt8(ascii: "a") + UInt8((offset + $0) % 26) }
}

final class OriginHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    var head: HTTPRequestHead?
    var body: ByteBuffer?
    var bodyCount = 0
    var streamRemaining = 0
    var streaming = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = nil
            bodyCount = 0
            if h.headers["expect"].first?.lowercased() == "100-continue" {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: .continue))), promise: nil)
            }
        case .body(var b):
            bodyCount += b.readableBytes
            if head?.uri == "/echo" {
                if body == nil { body = b } else { body!.writeBuffer(&b) }
            }
        case .end:
            respond(context: context)
        }
    }

    func respond(context: ChannelHandlerContext) {
        guard let head else { return }
        let parts = head.uri.split(separator: "/").map(String.init)
        let route = parts.first ?? ""
        let arg = parts.count > 1 ? Int(parts[1].split(separator: "?").first ?? "") ?? 0 : 0
        switch route {
        case "bytes":
            send(context, status: .ok, body: ByteBuffer(bytes: patternBytes(arg)))
        case "chunked":
            var h = HTTPHeaders()
            h.add(name: "Transfer-Encoding", value: "chunked")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: h))), promise: nil)
            var sent = 0
            while sent < arg {
                let n = min(1000, arg - sent)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: patternBytes(n, offset: sent))))), promise: nil)
                sent += n
            }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        case "stream":
            var h = HTTPHeaders()
            h.add(name: "Transfer-Encoding", value: "chunked")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: h))), promise: nil)
            streamRemaining = arg
            streaming = true
            pump(context)
        case "headers":
            var text = "\(head.method.rawValue) \(head.uri) HTTP/\(head.version.major).\(head.version.minor)\n"
            for (name, value) in head.headers { text += "\(name): \(value)\n" }
            send(context, status: .ok, body: ByteBuffer(string: text))
        case "echo":
            send(context, status: .ok, body: body ?? ByteBuffer())
        case "count":
            send(context, status: .ok, body: ByteBuffer(string: String(bodyCount)))
        case "status":
            let status = HTTPResponseStatus(statusCode: arg)
            if arg == 204 || arg == 304 {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            } else {
                send(context, status: status, body: ByteBuffer(string: "status \(arg)\n"))
            }
        case "trailers":
            var h = HTTPHeaders()
            h.add(name: "Transfer-Encoding", value: "chunked")
            h.add(name: "Trailer", value: "X-Checksum")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: h))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "hello trailers")))), promise: nil)
            var t = HTTPHeaders()
            t.add(name: "X-Checksum", value: "42")
            context.writeAndFlush(wrapOutboundOut(.end(t)), promise: nil)
        case "slow":
            break
        case "html", "htmlchunked":
            // A page for element hiding: with Content-Length, or chunked in pieces of `arg` bytes
            // so that tags straddle chunk boundaries.
            var h = HTTPHeaders()
            h.add(name: "Content-Type", value: "text/html; charset=utf-8")
            h.add(name: "Server", value: "test-origin/1.0")
            h.add(name: "X-Powered-By", value: "Swift")
            h.add(name: "X-Accept-Encoding", value: head.headers["accept-encoding"].first ?? "none")
            let page = Array(OriginPages.html.utf8)
            if route == "html" {
                h.add(name: "Content-Length", value: String(page.count))
            } else {
                h.add(name: "Transfer-Encoding", value: "chunked")
            }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: h))), promise: nil)
            var at = 0
            let piece = route == "html" ? page.count : max(1, arg)
            while at < page.count {
                let n = min(piece, page.count - at)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: page[at..<at + n])))), promise: nil)
                at += n
            }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        case "site", "js", "__utm.gif":
            let port = context.channel.localAddress?.port ?? 0
            let (type, body) = Self.siteFile(head.uri, port: port)
            var h = HTTPHeaders()
            h.add(name: "Content-Type", value: type)
            h.add(name: "Content-Length", value: String(body.count))
            h.add(name: "Cache-Control", value: "no-store")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: type == "text/plain" ? .notFound : .ok, headers: h))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        default:
            send(context, status: .notFound, body: ByteBuffer(string: "no route \(head.uri)\n"))
        }
    }

    /// A 3×3 GIF: the proxy's blocked-image answer is 1×1, so a page can tell them apart.
    static let gif3x3: [UInt8] = [
        0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x03, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0xFF, 0x00, 0x00,
        0x00, 0x00, 0xFF, 0x2C, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x03, 0x00, 0x00, 0x02, 0x03, 0x84,
        0x7F, 0x05, 0x00, 0x3B,
    ]

    /// A small news site for a browser: a page (from 127.0.0.1) with its own script and logo,
    /// and an ad script and a tracking pixel from another site (localhost), which EasyList
    /// (`/js/flyad.js`) and EasyPrivacy (`/__utm.gif`) block; an `.ad-slot` box EasyList hides.
    static func siteFile(_ uri: String, port: Int) -> (String, [UInt8]) {
        let path = String(uri.split(separator: "?").first ?? "")
        switch path {
        case "/site/page.html":
            let other = "http://localhost:\(port)"
            let page = """
                <!DOCTYPE html>
                <html><head><meta charset="utf-8"><title>Daily News</title><script src="/site/app.js"></script></head>
                <body><h1>Daily News</h1>
                <div class="ad-slot" id="slot">ADVERTISEMENT</div>
                <p id="article">The article text.</p>
                <img id="logo" src="/site/logo.gif"><img id="tracker" src="\(other)/__utm.gif?page=1">
                <script src="\(other)/js/flyad.js"></script>
                <script>
                window.addEventListener('load', function () {
                  var r = {app: window.appRan === true, ad: window.adRan === true,
                    logo: document.getElementById('logo').naturalWidth, tracker: document.getElementById('tracker').naturalWidth,
                    slot: getComputedStyle(document.getElementById('slot')).display,
                    article: getComputedStyle(document.getElementById('article')).display};
                  document.body.setAttribute('data-result', JSON.stringify(r));
                });
                </script>
                </body></html>

                """
            return ("text/html; charset=utf-8", Array(page.utf8))
        case "/site/app.js": return ("application/javascript", Array("window.appRan = true;\n".utf8))
        case "/js/flyad.js": return ("application/javascript", Array("window.adRan = true;\n".utf8))
        case "/site/logo.gif", "/__utm.gif": return ("image/gif", gif3x3)
        default: return ("text/plain", Array("no file \(path)\n".utf8))
        }
    }

    func send(_ context: ChannelHandlerContext, status: HTTPResponseStatus, body: ByteBuffer) {
        var h = HTTPHeaders()
        h.add(name: "Content-Length", value: String(body.readableBytes))
        h.add(name: "Content-Type", value: "text/plain")
        // Which origin answered, for tests that balance over several.
        h.add(name: "X-Served-By", value: String(context.channel.localAddress?.port ?? 0))
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head!.version, status: status, headers: h))), promise: nil)
        if head!.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    /// Writes the streamed body while the channel is writable: the origin's memory stays flat
    /// however large the body, so tests can check the proxy's memory instead.
    static let streamChunk = ByteBuffer(bytes: patternBytes(65536))

    func pump(_ context: ChannelHandlerContext) {
        let chunk = Self.streamChunk
        while streaming, streamRemaining > 0, context.channel.isWritable {
            let n = min(65536, streamRemaining)
            context.write(wrapOutboundOut(.body(.byteBuffer(chunk.getSlice(at: 0, length: n)!))), promise: nil)
            streamRemaining -= n
        }
        if streaming, streamRemaining == 0 {
            streaming = false
            context.write(wrapOutboundOut(.end(nil)), promise: nil)
        }
        context.flush()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if streaming, context.channel.isWritable { pump(context) }
        context.fireChannelWritabilityChanged()
    }
}

public enum OriginPages {
    /// The element-hiding page: a class and an id that lists hide, and ones they do not.
    public static let html = """
        <!DOCTYPE html>
        <html lang="en"><HEAD data-x='a>b'><title>Test page</title></HEAD>
        <body class="home page"><header>not the head tag</header>
        <div class="ad-banner wide" id="top">AD</div>
        <div id="sponsor-box">SPONSOR</div>
        <p class="story">Article text.</p>
        </body></html>

        """

}
