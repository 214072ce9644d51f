import Atomics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// An origin that answers each request head with fixed bytes: for misbehaving servers
/// (bad framing, early close, close-delimited bodies) that a correct HTTP library cannot play.
public final class RawOrigin: Sendable {
    public let channel: Channel
    public let port: Int
    let seen: ManagedAtomic<Int>

    /// Request heads received so far.
    public var requestsSeen: Int { seen.load(ordering: .relaxed) }

    init(channel: Channel, seen: ManagedAtomic<Int>) {
        self.channel = channel
        self.port = channel.localAddress!.port!
        self.seen = seen
    }

    /// `respond` gets the request head text and returns the bytes to send; the connection is
    /// closed afterwards when `closeAfter` is true.
    public static func start(
        closeAfter: Bool = true, delay: TimeAmount = .zero, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        respond: @escaping @Sendable (String) -> String
    ) async throws -> RawOrigin {
        let seen = ManagedAtomic(0)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RawOriginHandler(closeAfter: closeAfter, delay: delay, seen: seen, respond: respond))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return RawOrigin(channel: channel, seen: seen)
    }

    public var url: String { "http://127.0.0.1:\(port)" }

    public func stop() async { try? await channel.close() }
}

final class RawOriginHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let closeAfter: Bool
    let delay: TimeAmount
    let seen: ManagedAtomic<Int>
    let respond: @Sendable (String) -> String
    var buffer = ""

    init(closeAfter: Bool, delay: TimeAmount, seen: ManagedAtomic<Int>, respond: @escaping @Sendable (String) -> String) {
        self.closeAfter = closeAfter
        self.delay = delay
        self.seen = seen
        self.respond = respond
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var b = unwrapInboundIn(data)
        buffer += b.readString(length: b.readableBytes) ?? ""
        while let end = buffer.range(of: "\r\n\r\n") {
            let head = String(buffer[..<end.upperBound])
            buffer = String(buffer[end.upperBound...])
            seen.wrappingIncrement(ordering: .relaxed)
            let out = respond(head)
            let close = closeAfter
            context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
                context.writeAndFlush(NIOAny(ByteBuffer(string: out))).assumeIsolated().whenComplete { _ in
                    if close { context.close(promise: nil) }
                }
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed { context.close(promise: nil) }
    }
}

/// A TCP echo server (for CONNECT tunnel tests): echoes bytes; on the client's half-close it
/// sends `farewell` and half-closes too.
public final class EchoServer: Sendable {
    public let channel: Channel
    public let port: Int

    init(channel: Channel) {
        self.channel = channel
        self.port = channel.localAddress!.port!
    }

    public static func start(farewell: String = "", group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> EchoServer {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(EchoHandler(farewell: farewell))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return EchoServer(channel: channel)
    }

    public func stop() async { try? await channel.close() }
}

final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let farewell: String
    init(farewell: String) { self.farewell = farewell }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: farewell))).assumeIsolated().whenComplete { _ in
                context.close(mode: .output, promise: nil)
            }
        }
    }
}

/// A raw TCP client for tests: sends bytes, collects everything received until the server
/// closes, `until` says the response is complete, or the timeout passes.
public enum RawClient {
    public struct Reply: Sendable {
        public var text: String
        /// Whether the server closed the connection (rather than the test stopping to read).
        public var closedByServer: Bool
    }

    /// `writeOnConnect`: the parts are written by the event loop as soon as the connection is up,
    /// not by the awaiting task; for tests whose timing starts at connect (a test task may wait
    /// seconds for a thread when other tests block the concurrency pool).
    public static func exchange(
        port: Int, host: String = "127.0.0.1", send: [String], halfClose: Bool = false, timeout: TimeAmount = .seconds(10),
        writeOnConnect: Bool = false,
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton, until: (@Sendable (String) -> Bool)? = nil
    ) async throws -> Reply {
        let promise = group.next().makePromise(of: Reply.self)
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            CollectHandler(promise: promise, until: until, onConnect: writeOnConnect ? send.joined() : nil))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            promise.fail(error)
            throw error
        }
        if !writeOnConnect {
            for part in send {
                try await channel.writeAndFlush(ByteBuffer(string: part))
            }
        }
        if halfClose { try await channel.close(mode: .output) }
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            // Report what arrived so far as not closed by the server, then stop.
            (try? channel.pipeline.syncOperations.handler(type: CollectHandler.self))?.finish(closed: false)
            channel.close(promise: nil)
        }
        let reply = try await promise.futureResult.get()
        timer.cancel()
        try? await channel.close()
        return reply
    }
}

final class CollectHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<RawClient.Reply>
    let until: (@Sendable (String) -> Bool)?
    var text = ""
    var done = false

    let onConnect: String?

    init(promise: EventLoopPromise<RawClient.Reply>, until: (@Sendable (String) -> Bool)?, onConnect: String? = nil) {
        self.promise = promise
        self.until = until
        self.onConnect = onConnect
    }

    func channelActive(context: ChannelHandlerContext) {
        if let onConnect { context.writeAndFlush(NIOAny(ByteBuffer(string: onConnect)), promise: nil) }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var b = unwrapInboundIn(data)
        text += b.readString(length: b.readableBytes) ?? ""
        if !done, let until, until(text) {
            done = true
            promise.succeed(RawClient.Reply(text: text, closedByServer: false))
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed { finish(closed: true) }
    }

    func channelInactive(context: ChannelHandlerContext) { finish(closed: true) }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    func finish(closed: Bool) {
        guard !done else { return }
        done = true
        promise.succeed(RawClient.Reply(text: text, closedByServer: closed))
    }
}

/// A client connection that stays open across several requests (keep-alive tests).
public final class PersistentClient: Sendable {
    let port: Int
    let host: String
    let state = NIOLockedValueBox<(channel: Channel?, handler: AccumulateHandler?)>((nil, nil))

    public init(port: Int, host: String = "127.0.0.1") {
        self.port = port
        self.host = host
    }

    public func open(group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AccumulateHandler())
                }
            }
            .connect(host: host, port: port).get()
        let handler = try await channel.pipeline.handler(type: AccumulateHandler.self).get()
        state.withLockedValue { $0 = (channel, handler) }
    }

    /// Sends `text` and returns what arrived once `until` holds (by default: one complete
    /// response with Content-Length), or throws after the timeout.
    public func request(
        _ text: String, timeout: TimeAmount = .seconds(10), until: @escaping @Sendable (String) -> Bool = PersistentClient.oneResponse
    ) async throws -> String {
        let (channel, handler) = state.withLockedValue { $0 }
        guard let channel, let handler else { throw ChannelError.ioOnClosedChannel }
        let promise = channel.eventLoop.makePromise(of: String.self)
        try await channel.eventLoop.submit {
            handler.expect(promise, until: until)
        }.get()
        try await channel.writeAndFlush(ByteBuffer(string: text))
        let timer = channel.eventLoop.scheduleTask(in: timeout) { promise.fail(ChannelError.connectTimeout(timeout)) }
        defer { timer.cancel() }
        return try await promise.futureResult.get()
    }

    public var isOpen: Bool { state.withLockedValue { $0.channel?.isActive ?? false } }

    public func close() async {
        let channel = state.withLockedValue { $0.channel }
        try? await channel?.close()
    }

    /// True when the text holds a response head and the whole Content-Length body.
    @Sendable public static func oneResponse(_ text: String) -> Bool {
        guard let end = text.range(of: "\r\n\r\n") else { return false }
        let head = text[..<end.lowerBound].lowercased()
        guard let line = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
            let n = Int(line.dropFirst(15).filter { $0 != " " })
        else { return true }
        return text[end.upperBound...].utf8.count >= n
    }
}

final class AccumulateHandler: ChannelInboundHandler, @unchecked Sendable {
    // Only touched on the channel's event loop.
    typealias InboundIn = ByteBuffer
    var text = ""
    var waiting: (EventLoopPromise<String>, @Sendable (String) -> Bool)?

    func expect(_ promise: EventLoopPromise<String>, until: @escaping @Sendable (String) -> Bool) {
        waiting = (promise, until)
        check()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var b = unwrapInboundIn(data)
        text += b.readString(length: b.readableBytes) ?? ""
        check()
    }

    func check() {
        guard let (promise, until) = waiting, until(text) else { return }
        waiting = nil
        let t = text
        text = ""
        promise.succeed(t)
    }

    func channelInactive(context: ChannelHandlerContext) {
        waiting?.0.fail(ChannelError.eof)
        waiting = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The server closed its side: for this client that is the end of the connection.
        if let e = event as? ChannelEvent, e == .inputClosed { context.close(promise: nil) }
    }
}
