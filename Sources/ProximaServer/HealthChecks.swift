import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ProximaBalance
import ProximaHTTP1

/// Active health checks (HAProxy's `option httpchk` with `inter`, `rise`, `fall`): each server of
/// a group with a `health_check` gets `GET path` every interval on its own connection; the
/// answer's status decides, a timeout or a refused connection is a failure.
enum HealthChecker {
    /// Starts the checks of every group that has them; cancel the tasks to stop them.
    static func start(_ groups: UpstreamGroups, services: ServerServices, logger: Logger) -> [RepeatedTask] {
        var tasks: [RepeatedTask] = []
        for group in groups.byName.values {
            guard let policy = group.config.activeCheck else { continue }
            let loop = services.group.next()
            let interval = TimeAmount.nanoseconds(Int64(policy.interval * 1e9))
            tasks.append(loop.scheduleRepeatedTask(initialDelay: .zero, delay: interval) { _ in
                for i in group.targets.indices {
                    check(group.targets[i], policy: policy, tls: group.tls, resolver: services.resolver, on: loop).whenComplete { result in
                        let ok = (try? result.get()) ?? false
                        switch group.checked(i, ok: ok) {
                        case .wentDown?:
                            logger.warning("upstream '\(group.config.name)': server \(group.config.servers[i].name) is DOWN (\(policy.fall) failed checks of \(policy.path))")
                        case .cameUp?:
                            logger.notice("upstream '\(group.config.name)': server \(group.config.servers[i].name) is UP again (\(policy.rise) passed checks)")
                        case nil: break
                        }
                    }
                }
            })
        }
        return tasks
    }

    /// One check: true when the server answered with an expected status in time.
    /// Over TLS for `https://` groups, verified as requests are: a server whose certificate
    /// fails is down.
    static func check(
        _ target: RequestTarget, policy: ActiveCheckPolicy, tls: UpstreamTLS?, resolver: DNSResolver, on loop: EventLoop
    ) -> EventLoopFuture<Bool> {
        let promise = loop.makePromise(of: Bool.self)
        let timeout = TimeAmount.nanoseconds(Int64(policy.timeout * 1e9))
        let request = ByteBuffer(string: "GET \(policy.path) HTTP/1.1\r\nHost: \(target.authority)\r\nUser-Agent: proxima-health-check\r\nConnection: close\r\n\r\n")
        let expected = policy.expectedStatuses
        let timer = loop.scheduleTask(in: timeout) { promise.succeed(false) }
        SideConnection.open(host: target.host, port: target.port, tls: tls, resolver: resolver, on: loop, timeout: timeout) {
            StatusLineReader(request: request, expected: expected, promise: promise)
        }.whenComplete { result in
            switch result {
            case .success(let channel): promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
            case .failure: promise.succeed(false)
            }
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        return promise.futureResult
    }
}

/// Sends the check request and reads only the status line of the answer.
final class StatusLineReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let request: ByteBuffer
    let expected: ClosedRange<Int>
    let promise: EventLoopPromise<Bool>
    var received = ByteBuffer()

    init(request: ByteBuffer, expected: ClosedRange<Int>, promise: EventLoopPromise<Bool>) {
        self.request = request
        self.expected = expected
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(NIOAny(request), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        received.writeBuffer(&bytes)
        let view = received.readableBytesView
        guard let end = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if received.readableBytes > 1024 { promise.succeed(false) }
            return
        }
        // "HTTP/1.1 200 OK": the three digits after the first space.
        let line = String(decoding: view[view.startIndex..<end], as: UTF8.self)
        let parts = line.split(separator: " ")
        let status = parts.count >= 2 && line.hasPrefix("HTTP/1.") ? Int(parts[1]) : nil
        promise.succeed(status.map { expected.contains($0) } ?? false)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.succeed(false)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        promise.succeed(false)
        context.close(promise: nil)
    }
}

/// A connection of its own for one request beside the client traffic (health checks,
/// background refreshes): the name resolved, the first address connected within `timeout`,
/// TLS as the group's, then `handler` (made on the connection's loop) on the pipeline.
enum SideConnection {
    static func open(
        host: String, port: Int, tls: UpstreamTLS?, resolver: DNSResolver, on loop: EventLoop, timeout: TimeAmount,
        handler: @escaping @Sendable () -> any ChannelHandler
    ) -> EventLoopFuture<Channel> {
        resolver.resolve(host: host, port: port, on: loop).flatMap { addresses -> EventLoopFuture<Channel> in
            guard let address = addresses.first else { return loop.makeFailedFuture(ChannelError.connectTimeout(timeout)) }
            return ClientBootstrap(group: loop)
                .connectTimeout(timeout)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls.context, serverHostname: tls.sniName(host: host)))
                        }
                        try channel.pipeline.syncOperations.addHandler(handler())
                    }
                }
                .connect(to: address)
        }
    }
}
