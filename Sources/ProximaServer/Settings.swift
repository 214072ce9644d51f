import NIOCore
import ProximaConfig
import ProximaHTTP1
import ProximaPolicy
import ProximaTelemetry

public let proximaVersion = "0.1.0"

/// An immutable snapshot of what a connection needs from the configuration, computed once per
/// (re)load. A connection keeps the snapshot it was accepted with; a reload only affects new
/// connections.
final class RuntimeSettings: Sendable {
    let headLimits: HeadLimits
    /// Upstream response heads: the same size limit, no request-line limit.
    let responseHeadLimits: HeadLimits
    let maxConnections: Int
    /// The `Via` received-by text (`host (proxima/0.1.0)`), or nil when Via is off.
    let via: String?
    let viaName: String
    let policy: AccessPolicy
    let connectPorts: Set<Int>
    let forwardedFor: ForwardedForMode
    let clientHeaderTimeout: TimeAmount
    let idleTimeout: TimeAmount
    let connectTimeout: TimeAmount
    let responseTimeout: TimeAmount
    let tunnelIdleTimeout: TimeAmount
    let maxIdlePerHost: Int
    let poolIdleTimeout: TimeAmount
    /// Unprocessed client bytes held before reading pauses: a whole head plus some body.
    let maxBufferedInbound: Int
    let accessLog: AccessLogWriter
    /// Only the combined and JSON formats show User-Agent and Referer; Squid's does not, so
    /// those fields are not copied out of each request unless a sink needs them.
    let logsAgentAndReferer: Bool

    init(config: ProximaConfiguration, accessLog: AccessLogWriter) {
        self.headLimits = HeadLimits(maxRequestLine: config.limits.requestLine.bytes, maxHeadBytes: config.limits.headers.bytes)
        self.responseHeadLimits = HeadLimits(maxHeadBytes: config.limits.headers.bytes)
        self.maxConnections = config.limits.maxConnections
        self.viaName = config.proxy.viaName
        self.via = config.proxy.via ? "\(config.proxy.viaName) (proxima/\(proximaVersion))" : nil
        self.policy = config.access
        self.connectPorts = config.connect.allowedPorts
        self.forwardedFor = config.proxy.forwardedFor
        self.clientHeaderTimeout = .nanoseconds(config.timeouts.clientHeader.nanoseconds)
        self.idleTimeout = .nanoseconds(config.timeouts.idle.nanoseconds)
        self.connectTimeout = .nanoseconds(config.timeouts.upstreamConnect.nanoseconds)
        self.responseTimeout = .nanoseconds(config.timeouts.upstreamResponse.nanoseconds)
        self.tunnelIdleTimeout = .nanoseconds(config.timeouts.tunnelIdle.nanoseconds)
        self.maxIdlePerHost = config.upstreamPool.maxIdlePerHost
        self.poolIdleTimeout = .nanoseconds(config.upstreamPool.idleTimeout.nanoseconds)
        self.maxBufferedInbound = config.limits.headers.bytes + 64 * 1024
        self.accessLog = accessLog
        self.logsAgentAndReferer = config.logging.access.contains { $0.format != .squid }
    }
}
