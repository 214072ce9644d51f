/// Squid's result codes: what the proxy did with a request.
public enum ResultCode: String, Sendable, Equatable, CaseIterable {
    /// Fetched from the origin.
    case miss = "TCP_MISS"
    /// A CONNECT tunnel.
    case tunnel = "TCP_TUNNEL"
    /// Refused by policy.
    case denied = "TCP_DENIED"
    /// Answered by the proxy itself without a fetch (bad requests, local pages).
    case none = "TAG_NONE"
    /// The client went away before the response was complete.
    case missAborted = "TCP_MISS_ABORTED"
    /// Answered from the memory cache.
    case memHit = "TCP_MEM_HIT"
    /// Answered from the disk cache (read from its file).
    case hit = "TCP_HIT"
    /// The client's conditional request answered `304` from the cache.
    case inmHit = "TCP_INM_HIT"
    /// A stale stored answer the origin confirmed (304).
    case refreshUnmodified = "TCP_REFRESH_UNMODIFIED"
    /// A stale stored answer the origin replaced with a new one.
    case refreshModified = "TCP_REFRESH_MODIFIED"
    /// A stale stored answer served at once while it is fetched again in the background
    /// (stale-while-revalidate).
    case staleHit = "TCP_STALE_HIT"
    /// A stale stored answer served because the origin failed (stale-if-error).
    case staleOnError = "TCP_REFRESH_FAIL_OLD"
    /// Not in the cache, and the request said only-if-cached.
    case cacheMissOnly = "TCP_MISS_ONLY_IF_CACHED"
}

/// The record of one request (or one tunnel) as it passes through the proxy. Every phase adds
/// to it; the access log writes it out at the end.
public struct Exchange: Sendable {
    /// Wall-clock start, seconds and nanoseconds since 1970.
    public var startSeconds: Int
    public var startNanoseconds: Int
    public var durationNanoseconds: UInt64 = 0
    public var client: String
    public var listener: String
    public var method: String = "-"
    /// The URL, or host:port for CONNECT.
    public var url: String = "-"
    public var version: String = "HTTP/1.1"
    public var status: Int = 0
    /// Bytes received from the client (head and body) and sent to it.
    public var bytesIn: Int = 0
    public var bytesOut: Int = 0
    /// The upstream address actually connected to (IP:port).
    public var upstream: String?
    public var result: ResultCode = .none
    public var contentType: String?
    public var userAgent: String?
    public var referer: String?
    public var user: String?
    /// For denials: the rule that decided; for errors: what went wrong.
    public var detail: String?
    /// The request's id: the client's `X-Request-ID` when it sent a usable one, else generated.
    public var requestID: String?

    public init(startSeconds: Int, startNanoseconds: Int, client: String, listener: String) {
        self.startSeconds = startSeconds
        self.startNanoseconds = startNanoseconds
        self.client = client
        self.listener = listener
    }
}
