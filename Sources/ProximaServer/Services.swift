import NIOCore
import NIOPosix

/// What every connection of a running server shares: DNS and the upstream pools.
final class ServerServices: Sendable {
    let group: EventLoopGroup
    let resolver: DNSResolver
    let pools: UpstreamPools

    init(group: EventLoopGroup, resolver: DNSResolver, pools: UpstreamPools) {
        self.group = group
        self.resolver = resolver
        self.pools = pools
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
