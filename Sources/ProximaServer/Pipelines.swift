import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import NIOTLS
import ProximaConfig

/// How a new connection on a listener is served, read when it is accepted (so a reload
/// changes it for new connections only).
struct ConnectionSetup {
    let settings: RuntimeSettings
    let services: ServerServices
    let listener: ListenerConfig
    let metrics: ListenerMetrics

    func clientHandler(secure: Bool, http2Stream: Bool) -> ClientHandler {
        ClientHandler(
            settings: settings, services: services, listenerName: listener.name, metrics: metrics, reverse: listener.role == .reverse,
            secure: secure, http2Stream: http2Stream, redirectHTTPS: listener.redirectHTTPS)
    }

    /// Adds the handlers for a new connection: TLS when the listener has certificates; then
    /// HTTP/1.1 straight away, or a selector that waits for ALPN (TLS) or looks for the
    /// HTTP/2 preface (plain TCP, prior knowledge) when the listener speaks HTTP/2.
    func configure(_ channel: Channel) throws {
        let sync = channel.pipeline.syncOperations
        let tls = settings.listenerTLS[listener.name]
        if let tls { try sync.addHandler(NIOSSLServerHandler(context: tls.context)) }
        if listener.speaksHTTP2 {
            try sync.addHandler(ProtocolSelector(setup: self, secure: tls != nil))
        } else {
            try sync.addHandler(clientHandler(secure: tls != nil, http2Stream: false))
        }
    }

    /// The HTTP/2 connection: NIOHTTP2's handler and connection manager (GOAWAY on drain, the
    /// idle timeout), and per stream the codec, the bridge and the usual request handler.
    func configureHTTP2(_ channel: Channel, secure: Bool) throws {
        let manager = NIOHTTP2ServerConnectionManagementHandler(
            eventLoop: channel.eventLoop,
            configuration: .init(maxIdleTime: settings.idleTimeout, maxAge: nil, maxGraceTime: nil, keepalive: nil))
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: Self.maxConcurrentStreams),
            HTTP2Setting(parameter: .maxHeaderListSize, value: settings.headLimits.maxHeadBytes),
            HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20),
        ]
        var stream = NIOHTTP2Handler.StreamConfiguration()
        stream.targetWindowSize = 1 << 20
        let setup = self
        let http2 = NIOHTTP2Handler(
            mode: .server, eventLoop: channel.eventLoop, connectionConfiguration: connection, streamConfiguration: stream,
            streamDelegate: manager.http2StreamDelegate
        ) { streamChannel in
            streamChannel.eventLoop.makeCompletedFuture {
                let sync = streamChannel.pipeline.syncOperations
                try sync.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                try sync.addHandler(HTTP2StreamBridge())
                try sync.addHandler(setup.clientHandler(secure: secure, http2Stream: true))
            }
        }
        try channel.pipeline.syncOperations.addHandler(FlushCoalescer())
        try channel.pipeline.syncOperations.addHandler(http2)
        try channel.pipeline.syncOperations.addHandler(manager)
    }

    /// Streams one client may have open at once (nginx's `http2_max_concurrent_streams`).
    static let maxConcurrentStreams = 128
}

/// Sits under NIOHTTP2's handler and turns the flushes of one event-loop turn into one: every
/// stream that finishes an answer flushes, and without this each would be a write system call
/// of its own (Netty's `FlushConsolidationHandler`). Writes pass at once; the flush follows
/// when the loop has handled the other ready sockets, so the answers of all streams finished
/// in that turn leave in one `writev`.
final class FlushCoalescer: ChannelOutboundHandler {
    typealias OutboundIn = NIOAny
    private var pending = false

    func flush(context: ChannelHandlerContext) {
        guard !pending else { return }
        pending = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (me, context) = bound.value
            me.pending = false
            context.flush()
        }
    }
}

/// Decides between HTTP/1.1 and HTTP/2 for one connection, then replaces itself: over TLS by
/// the protocol ALPN settled on, over plain TCP by whether the first bytes are the HTTP/2
/// connection preface. A client that neither finishes the handshake nor sends a first request
/// line within the header timeout is closed.
final class ProtocolSelector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    private let setup: ConnectionSetup
    private let secure: Bool
    private var held: ByteBuffer?
    private var deadline: Scheduled<Void>?
    private var decided = false

    init(setup: ConnectionSetup, secure: Bool) {
        self.setup = setup
        self.secure = secure
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: setup.settings.clientHeaderTimeout) {
            channel.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if secure, !decided, let tls = event as? TLSUserEvent, case .handshakeCompleted(let proto) = tls {
            decide(context, http2: proto == "h2")
            return
        }
        // Draining: a connection that has not started a request yet is closed at once.
        if event is ChannelShouldQuiesceEvent, !decided {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if held == nil { held = bytes } else { held!.writeBuffer(&bytes) }
        guard !secure, !decided, let buffer = held else { return }
        let n = min(buffer.readableBytes, Self.preface.count)
        let matches = buffer.withUnsafeReadableBytes { raw in raw.prefix(n).elementsEqual(Self.preface.prefix(n)) }
        if !matches {
            decide(context, http2: false)
        } else if n == Self.preface.count {
            decide(context, http2: true)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A failed handshake or a reset before a protocol was chosen: nothing to answer.
        context.close(promise: nil)
    }

    private func decide(_ context: ChannelHandlerContext, http2: Bool) {
        decided = true
        deadline?.cancel()
        deadline = nil
        do {
            if http2 {
                try setup.configureHTTP2(context.channel, secure: secure)
            } else {
                try context.pipeline.syncOperations.addHandler(setup.clientHandler(secure: secure, http2Stream: false))
            }
        } catch {
            context.close(promise: nil)
            return
        }
        // What arrived while deciding goes to the new handlers, which sit after this one.
        if let held {
            self.held = nil
            context.fireChannelRead(wrapInboundOut(held))
            context.fireChannelReadComplete()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
