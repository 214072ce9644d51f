import NIOCore
import NIOPosix

/// What an upstream connection reports to whoever is using it (a client connection's handler).
/// Both sides live on the same event loop, so these are plain calls.
protocol UpstreamOwner: AnyObject {
    func upstreamRead(_ buffer: ByteBuffer)
    func upstreamReadComplete()
    func upstreamInputClosed()
    func upstreamClosed(_ error: Error?)
    func upstreamWritabilityChanged(writable: Bool)
    /// Whether the client side can take more bytes; when not, the upstream stops reading.
    var clientWritable: Bool { get }
}

/// The only handler of an upstream channel: passes bytes to its owner and withholds reads while
/// the owner's client cannot take more (back-pressure from the client to the server).
final class UpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Strong on purpose (a weak reference makes every retain of the owner slow); whoever
    /// detaches or closes the connection sets it to nil, which breaks the cycle.
    var owner: (any UpstreamOwner)?
    /// Set while the connection sits idle in a pool: any event then means it is unusable.
    /// Two references rather than a closure, which would be allocated on every check-in.
    var idleIn: (pool: UpstreamPool, connection: UpstreamConnection)?
    var context: ChannelHandlerContext?
    var pendingRead = false
    private(set) var error: Error?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if let owner {
            owner.upstreamRead(buffer)
        } else {
            idleEvent()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        owner?.upstreamReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed {
            if let owner { owner.upstreamInputClosed() } else { idleEvent() }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let owner = self.owner
        self.owner = nil
        if let owner { owner.upstreamClosed(error) } else { idleEvent() }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        self.error = error
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        owner?.upstreamWritabilityChanged(writable: context.channel.isWritable)
    }

    func read(context: ChannelHandlerContext) {
        if let owner, !owner.clientWritable {
            pendingRead = true
        } else {
            context.read()
        }
    }

    private func idleEvent() {
        // The server closed or sent unsolicited bytes: the connection cannot be reused.
        guard let (pool, connection) = idleIn else { return }
        idleIn = nil
        pool.remove(connection)
        connection.close()
    }

    /// Called when the client side can take bytes again.
    func resumeReading() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }
}

/// One upstream TCP connection and what the pool needs to know about it.
final class UpstreamConnection {
    let channel: Channel
    let handler: UpstreamHandler
    let key: String
    let remote: String
    var idleSince: NIODeadline = .now()

    init(channel: Channel, handler: UpstreamHandler, key: String) {
        self.channel = channel
        self.handler = handler
        self.key = key
        self.remote = channel.remoteAddress?.logText ?? "-"
    }

    func close() {
        handler.owner = nil
        handler.idleIn = nil
        channel.close(promise: nil)
    }
}

/// Idle keep-alive upstream connections of one event loop, by `host:port`. Used only on its
/// loop, so it takes no lock (hence `@unchecked Sendable`: every entry point asserts the loop).
final class UpstreamPool: @unchecked Sendable {
    let eventLoop: EventLoop
    private var idle: [String: [UpstreamConnection]] = [:]
    private var sweeper: RepeatedTask?

    init(eventLoop: EventLoop) {
        self.eventLoop = eventLoop
    }

    /// The most recently used idle connection for `key` that is still open.
    func checkout(_ key: String) -> UpstreamConnection? {
        eventLoop.preconditionInEventLoop()
        // One hash of the key; the list is changed in place through the index.
        guard let index = idle.index(forKey: key) else { return nil }
        var found: UpstreamConnection?
        while found == nil, let conn = idle.values[index].popLast() {
            conn.handler.idleIn = nil
            if conn.channel.isActive { found = conn } else { conn.close() }
        }
        if idle.values[index].isEmpty { idle.remove(at: index) }
        return found
    }

    /// Returns a connection whose last exchange completed cleanly.
    func checkin(_ conn: UpstreamConnection, maxIdlePerHost: Int, idleTimeout: TimeAmount) {
        eventLoop.preconditionInEventLoop()
        guard maxIdlePerHost > 0, conn.channel.isActive else {
            conn.close()
            return
        }
        conn.handler.owner = nil
        conn.idleSince = .now()
        // Strong references (see UpstreamHandler.owner); close() and checkout clear them.
        conn.handler.idleIn = (self, conn)
        if let index = idle.index(forKey: conn.key) {
            if idle.values[index].count >= maxIdlePerHost { idle.values[index].removeFirst().close() }
            idle.values[index].append(conn)
        } else {
            idle[conn.key] = [conn]
        }
        // Idle connections must always be readable, or their close would go unnoticed.
        conn.handler.resumeReading()
        if sweeper == nil { startSweeper(idleTimeout: idleTimeout) }
    }

    fileprivate func remove(_ conn: UpstreamConnection) {
        guard let index = idle.index(forKey: conn.key),
            let i = idle.values[index].firstIndex(where: { $0 === conn })
        else { return }
        idle.values[index].remove(at: i)
        if idle.values[index].isEmpty { idle.remove(at: index) }
    }

    private func startSweeper(idleTimeout: TimeAmount) {
        let interval = TimeAmount.nanoseconds(max(idleTimeout.nanoseconds / 4, 100_000_000))
        // Strong capture (see UpstreamHandler.owner): the pool lives as long as the server, and
        // closeAll cancels the task.
        sweeper = eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { task in
            let cutoff = NIODeadline.now() - idleTimeout
            for (key, list) in self.idle {
                for c in list where c.idleSince < cutoff { c.close() }
                let fresh = list.filter { $0.idleSince >= cutoff }
                self.idle[key] = fresh.isEmpty ? nil : fresh
            }
            if self.idle.isEmpty {
                task.cancel()
                self.sweeper = nil
            }
        }
    }

    var idleCount: Int { idle.values.reduce(0) { $0 + $1.count } }

    func closeAll() {
        sweeper?.cancel()
        sweeper = nil
        for (_, list) in idle { for c in list { c.close() } }
        idle = [:]
    }
}

/// One pool per event loop, so the request path never takes a lock.
final class UpstreamPools: @unchecked Sendable {
    // Written once at init, then read-only; each pool is only touched on its own loop.
    private let pools: [ObjectIdentifier: UpstreamPool]

    init(group: EventLoopGroup) {
        var p: [ObjectIdentifier: UpstreamPool] = [:]
        for loop in group.makeIterator() { p[ObjectIdentifier(loop)] = UpstreamPool(eventLoop: loop) }
        self.pools = p
    }

    func pool(for loop: EventLoop) -> UpstreamPool? { pools[ObjectIdentifier(loop)] }

    /// Idle connections over all pools, each counted on its own loop.
    func idleCount(on loop: EventLoop) -> EventLoopFuture<Int> {
        let counts = pools.values.map { pool in pool.eventLoop.submit { pool.idleCount } }
        return EventLoopFuture.reduce(0, counts, on: loop, +)
    }

    func closeAll() -> EventLoopFuture<Void>? {
        var futures: [EventLoopFuture<Void>] = []
        for pool in pools.values {
            futures.append(pool.eventLoop.submit { pool.closeAll() })
        }
        guard let first = futures.first else { return nil }
        return EventLoopFuture.andAllComplete(futures, on: first.eventLoop)
    }
}
