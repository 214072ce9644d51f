import Logging
import NIOCore
import NIOPosix

/// What every connection of a running server shares: DNS, upstream pools, the diagnostic log.
final class ServerServices: Sendable {
    let group: EventLoopGroup
    let resolver: DNSResolver
    let pools: UpstreamPools
    let logger: Logger

    init(group: EventLoopGroup, resolver: DNSResolver, pools: UpstreamPools, logger: Logger) {
        self.group = group
        self.resolver = resolver
        self.pools = pools
        self.logger = logger
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
