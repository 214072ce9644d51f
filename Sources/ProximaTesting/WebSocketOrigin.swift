import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// A WebSocket echo server for tests, on NIOWebSocket (an implementation independent of the
/// proxy's): `/ws/echo` upgrades and echoes every text and binary message; `/ws/page.html` is
/// a page whose script opens a WebSocket to `/ws/echo` on the host it was loaded from, sends a
/// message and posts what came back to `/ws/result` (a browser test waits for that report
/// instead of guessing how long the page needs).
public final class WebSocketOrigin: Sendable {
    public let channel: Channel
    public let port: Int
    public var url: String { "http://127.0.0.1:\(port)" }
    let reported: NIOLockedValueBox<[String]>
    /// What pages posted to `/ws/result`.
    public var results: [String] { reported.withLockedValue { $0 } }

    static let page = """
        <!doctype html><html><head><title>ws</title></head><body data-result="pending"><script>
        const ws = new WebSocket("ws://" + location.host + "/ws/echo");
        ws.onopen = () => ws.send("hello through proxima");
        const report = (text) => fetch("/ws/result", {method: "POST", body: text});
        ws.onmessage = (e) => { report("echo:" + e.data); ws.close(); };
        ws.onerror = () => report("error");
        </script></body></html>
        """

    init(channel: Channel, port: Int, reported: NIOLockedValueBox<[String]>) {
        self.channel = channel
        self.port = port
        self.reported = reported
    }

    public static func start(group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> WebSocketOrigin {
        let reported = NIOLockedValueBox<[String]>([])
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let upgrader = NIOWebSocketServerUpgrader(
                    shouldUpgrade: { channel, head in
                        channel.eventLoop.makeSucceededFuture(head.uri == "/ws/echo" ? HTTPHeaders() : nil)
                    },
                    upgradePipelineHandler: { channel, _ in
                        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(WebSocketEcho()) }
                    })
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withServerUpgrade: (upgraders: [upgrader], completionHandler: { context in
                            context.pipeline.removeHandler(name: "page", promise: nil)
                        }))
                    try channel.pipeline.syncOperations.addHandler(PageHandler(reported: reported), name: "page")
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return WebSocketOrigin(channel: channel, port: channel.localAddress?.port ?? 0, reported: reported)
    }

    public func stop() async {
        try? await channel.close()
    }

    /// Serves the page (any path that is not an upgrade) and takes the page's report.
    final class PageHandler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let reported: NIOLockedValueBox<[String]>
        var uri = ""
        var received = ""

        init(reported: NIOLockedValueBox<[String]>) { self.reported = reported }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h):
                uri = h.uri
                received = ""
                return
            case .body(let b):
                received += String(buffer: b)
                return
            case .end:
                break
            }
            if uri == "/ws/result" {
                let text = received
                reported.withLockedValue { $0.append(text) }
                var headers = HTTPHeaders()
                headers.add(name: "Content-Length", value: "0")
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .noContent, headers: headers))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                return
            }
            let body = ByteBuffer(string: WebSocketOrigin.page)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "text/html; charset=utf-8")
            headers.add(name: "Content-Length", value: String(body.readableBytes))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    /// Echoes data frames, answers pings, closes when asked.
    final class WebSocketEcho: ChannelInboundHandler {
        typealias InboundIn = WebSocketFrame
        typealias OutboundOut = WebSocketFrame

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let frame = unwrapInboundIn(data)
            switch frame.opcode {
            case .text, .binary, .continuation:
                let reply = WebSocketFrame(fin: frame.fin, opcode: frame.opcode, data: frame.unmaskedData)
                context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
            case .ping:
                context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
            case .connectionClose:
                let close = WebSocketFrame(fin: true, opcode: .connectionClose, data: frame.unmaskedData)
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(close)).whenComplete { _ in channel.close(promise: nil) }
            default:
                break
            }
        }
    }
}
