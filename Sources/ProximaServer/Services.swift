import NIOCore
import NIOPosix
import Synchronization

/// What every connection of a running server shares: DNS and the upstream pools.
final class ServerServices: Sendable {
    let group: EventLoopGroup
    let resolver: DNSResolver
    let pools: UpstreamPools
    /// Blocking work: DNS lookups and password hashing.
    let threadPool: NIOThreadPool
    let authFailures = AuthFailures()

    init(group: EventLoopGroup, resolver: DNSResolver, pools: UpstreamPools, threadPool: NIOThreadPool) {
        self.group = group
        self.resolver = resolver
        self.pools = pools
        self.threadPool = threadPool
    }
}

/// Recent failed logins per client address: each further failure waits longer for its 407
/// (0.25 s doubling to 8 s), so guessing passwords is slow; a success or ten quiet minutes
/// clear the count.
final class AuthFailures: Sendable {
    private let state = Mutex<[String: (count: Int, last: Int)]>([:])
    static let maxEntries = 10_000

    func delay(for client: String, now: Int) -> TimeAmount {
        state.withLock { s in
            guard let e = s[client], now - e.last < 600, e.count > 0 else { return .zero }
            return .milliseconds(min(8000, 250 << min(5, e.count - 1)))
        }
    }

    func failed(_ client: String, now: Int) {
        state.withLock { s in
            if s.count >= Self.maxEntries { s = s.filter { now - $0.value.last < 600 } }
            let count = (s[client].map { now - $0.last < 600 ? $0.count : 0 } ?? 0) + 1
            s[client] = (count, now)
        }
    }

    func succeeded(_ client: String) { _ = state.withLock { $0.removeValue(forKey: client) } }
}

/// Verified credentials (the Basic token as sent) and the user they belong to, for
/// `auth.cache_ttl`: bcrypt costs milliseconds on purpose, and browsers send the token with
/// every request. Made anew with each configuration, so a reloaded password file takes effect.
final class AuthCache: Sendable {
    private let state = Mutex<[String: (user: String, until: Int)]>([:])
    let ttlSeconds: Int
    static let maxEntries = 10_000

    init(ttlSeconds: Int) { self.ttlSeconds = ttlSeconds }

    func user(for token: String, now: Int) -> String? {
        state.withLock { s in
            guard let e = s[token], e.until > now else { return nil }
            return e.user
        }
    }

    func remember(_ token: String, user: String, now: Int) {
        state.withLock { s in
            if s.count >= Self.maxEntries { s = s.filter { $0.value.until > now } }
            if s.count < Self.maxEntries { s[token] = (user, now + ttlSeconds) }
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Wall-clock time for log records (seconds, nanoseconds), without Foundation.
@inline(__always)
func wallClock() -> (Int, Int) {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return (Int(ts.tv_sec), Int(ts.tv_nsec))
}

/// CPUs this process may run on (its affinity mask), so `taskset -c 0 proxima` gets one event
/// loop rather than one per CPU of the machine contending for a single core.
public func availableCPUCount() -> Int {
    #if os(Linux)
    // sched_getaffinity is not visible to Swift without _GNU_SOURCE; /proc has the same mask.
    if let f = fopen("/proc/self/status", "r") {
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 4096)
        while fgets(&line, Int32(line.count), f) != nil {
            let text = String(decoding: line.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard text.hasPrefix("Cpus_allowed:") else { continue }
            let hex = text.dropFirst("Cpus_allowed:".count).filter { $0.isHexDigit }
            let count = hex.reduce(0) { $0 + (Int(String($1), radix: 16) ?? 0).nonzeroBitCount }
            if count > 0 { return count }
        }
    }
    #endif
    return System.coreCount
}
