import Atomics
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct ResolveError: Error, CustomStringConvertible {
    public var host: String
    public var message: String
    public var description: String { "cannot resolve \(host): \(message)" }
}

/// Host name lookups off the event loops (getaddrinfo on a thread pool), with answers cached
/// for a bounded time and a bounded number of names.
final class DNSResolver: Sendable {
    struct Entry {
        var result: Result<[SocketAddress], ResolveError>
        var expires: NIODeadline
    }

    private let cache = Mutex<[String: Entry]>([:])
    /// Lookups under way, so that a burst of requests for one cold name makes one lookup.
    private let inFlight = Mutex<[String: EventLoopFuture<[SocketAddress]>]>([:])
    /// getaddrinfo calls made (tests read it).
    let lookups = ManagedAtomic(0)
    private let threadPool: NIOThreadPool
    let ttl: TimeAmount
    let negativeTTL: TimeAmount
    let maxEntries: Int

    init(threadPool: NIOThreadPool, ttl: TimeAmount, negativeTTL: TimeAmount, maxEntries: Int) {
        self.threadPool = threadPool
        self.ttl = ttl
        self.negativeTTL = negativeTTL
        self.maxEntries = maxEntries
    }

    /// Addresses for `host` (name or IP literal) and `port`, IPv6 and IPv4 in getaddrinfo's order.
    func resolve(host: String, port: Int, on eventLoop: EventLoop) -> EventLoopFuture<[SocketAddress]> {
        // Only a host that can be an IP literal is tried as one: a failed try costs a thrown
        // error for every request to a named host.
        let mayBeLiteral = host.utf8.first.map { $0 >= 0x30 && $0 <= 0x39 } == true || host.utf8.contains(UInt8(ascii: ":"))
        if mayBeLiteral, let literal = try? SocketAddress(ipAddress: host, port: port) {
            return eventLoop.makeSucceededFuture([literal])
        }
        let now = NIODeadline.now()
        let cached: Entry? = cache.withLock { c in
            guard let e = c[host] else { return nil }
            if e.expires < now {
                c[host] = nil
                return nil
            }
            return e
        }
        if let cached {
            return eventLoop.makeCompletedFuture(cached.result.map { $0.map { $0.withPort(port) } }.mapError { $0 as Error })
        }
        let (future, started) = inFlight.withLock { flights -> (EventLoopFuture<[SocketAddress]>, Bool) in
            if let f = flights[host] { return (f, false) }
            let f = lookup(host: host, on: eventLoop)
            flights[host] = f
            return (f, true)
        }
        if started {
            future.whenComplete { _ in self.inFlight.withLock { _ = $0.removeValue(forKey: host) } }
        }
        return future.hop(to: eventLoop).map { $0.map { $0.withPort(port) } }
    }

    /// One getaddrinfo on the thread pool; the answer (addresses with port 0) is cached.
    private func lookup(host: String, on eventLoop: EventLoop) -> EventLoopFuture<[SocketAddress]> {
        let ttl = self.ttl
        let negativeTTL = self.negativeTTL
        return threadPool.runIfActive(eventLoop: eventLoop) { [self] () -> [SocketAddress] in
            lookups.wrappingIncrement(ordering: .relaxed)
            let result = DNSResolver.getaddrinfoBlocking(host: host)
            let expires = NIODeadline.now() + ((try? result.get()) == nil ? negativeTTL : ttl)
            self.cache.withLock { c in
                if c.count >= self.maxEntries {
                    // Drop expired entries first; if none, drop an arbitrary one.
                    let now = NIODeadline.now()
                    c = c.filter { $0.value.expires >= now }
                    if c.count >= self.maxEntries, let k = c.keys.first { c[k] = nil }
                }
                if self.maxEntries > 0 { c[host] = Entry(result: result, expires: expires) }
            }
            return try result.get()
        }
    }

    static func getaddrinfoBlocking(host: String) -> Result<[SocketAddress], ResolveError> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        hints.ai_flags = AI_ADDRCONFIG
        var info: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, nil, &hints, &info)
        guard rc == 0, let first = info else {
            return .failure(ResolveError(host: host, message: String(cString: gai_strerror(rc))))
        }
        defer { freeaddrinfo(first) }
        var out: [SocketAddress] = []
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let ai = p {
            if let sa = ai.pointee.ai_addr {
                switch ai.pointee.ai_family {
                case AF_INET:
                    let a = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
                    out.append(SocketAddress(a, host: host))
                case AF_INET6:
                    let a = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee }
                    out.append(SocketAddress(a, host: host))
                default: break
                }
            }
            p = ai.pointee.ai_next
        }
        var seen = Set<SocketAddress>()
        out = out.filter { seen.insert($0).inserted }
        if out.isEmpty { return .failure(ResolveError(host: host, message: "no IPv4 or IPv6 address")) }
        return .success(out)
    }
}

extension SocketAddress {
    func withPort(_ port: Int) -> SocketAddress {
        var copy = self
        copy.port = port
        return copy
    }

    /// `1.2.3.4:80` or `[::1]:80` for logs.
    var logText: String {
        guard let ip = ipAddress, let port else { return description }
        if case .v6 = self { return "[\(ip)]:\(port)" }
        return "\(ip):\(port)"
    }
}
