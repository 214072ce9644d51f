import Atomics
import Prometheus
import ProximaTelemetry
import Synchronization

/// The metrics of one server, in a registry of its own (tests run many servers in one process,
/// and a global registry would mix them). Served in Prometheus' text format by the admin API.
///
/// Per-request cost matters: connections resolve their listener's handles once, and a request
/// then costs one uncontended lock to find its counter, a few atomic additions and one
/// histogram update.
public final class ProxyMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let live = LiveStats()
    private let listeners = Mutex<[String: ListenerMetrics]>([:])
    let reloads: Counter
    let reloadFailures: Counter
    private let logDropped: Counter
    private let dnsLookups: Counter
    private let upstreamIdle: Gauge
    /// What the scrape-time counters had reached at the previous scrape.
    private let seen = Mutex<(dropped: Int, lookups: Int)>((0, 0))

    static let durationBuckets: [Duration] = [
        .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
    ]

    public init(startTime: Int) {
        let r = PrometheusCollectorRegistry()
        registry = r
        r.makeGauge(descriptor: descriptor("build", "info", "Always 1; the version is in the label."), labels: [("version", proximaVersion)]).set(to: 1.0)
        r.makeGauge(descriptor: descriptor("start_time", "seconds", "When the server started, in seconds since 1970.")).set(Double(startTime))
        reloads = r.makeCounter(descriptor: descriptor("config_reloads", "total", "Configuration reloads by outcome."), labels: [("result", "ok")])
        reloadFailures = r.makeCounter(descriptor: descriptor("config_reloads", "total", "Configuration reloads by outcome."), labels: [("result", "error")])
        logDropped = r.makeCounter(
            descriptor: descriptor("access_log_dropped", "total", "Access-log records dropped because the writer's queue was full."))
        dnsLookups = r.makeCounter(descriptor: descriptor("dns_lookups", "total", "Name lookups that missed the DNS cache."))
        upstreamIdle = r.makeGauge(descriptor: descriptor("upstream_idle_connections", "", "Idle keep-alive upstream connections in the pools."))
    }

    /// The handles of one listener, made on first use.
    func listener(_ name: String) -> ListenerMetrics {
        listeners.withLock { all in
            if let m = all[name] { return m }
            let m = ListenerMetrics(listener: name, registry: registry, live: live)
            all[name] = m
            return m
        }
    }

    /// Brings the values that are read rather than counted up to date, then renders everything.
    func exposition(droppedRecords: Int, dnsLookups lookups: Int, idleUpstreamConnections: Int) -> [UInt8] {
        let (newDropped, newLookups) = seen.withLock { s -> (Int, Int) in
            // A reload replaces the log writer, whose count restarts: never count backwards.
            let d = max(0, droppedRecords - s.dropped)
            let l = max(0, lookups - s.lookups)
            s = (max(s.dropped, droppedRecords), max(s.lookups, lookups))
            return (d, l)
        }
        if newDropped > 0 { logDropped.increment(by: Int64(newDropped)) }
        if newLookups > 0 { dnsLookups.increment(by: Int64(newLookups)) }
        upstreamIdle.set(Double(idleUpstreamConnections))
        return registry.emitToBuffer()
    }
}

/// Metric handles of one listener.
final class ListenerMetrics: Sendable {
    let listener: String
    private let registry: PrometheusCollectorRegistry
    let connections: Gauge
    let tunnels: Gauge
    let requestDuration: DurationHistogram
    let upstreamHeadDuration: DurationHistogram
    let receivedBytes: Counter
    let sentBytes: Counter
    /// proxima_requests_total by method, status class and result, made on first use.
    private let requests: Mutex<[Counter?]>
    /// The same totals by status class and the open tunnels, readable for /status (Prometheus
    /// handles cannot be read back).
    let requestsByClass: [ManagedAtomic<Int>] = (0..<6).map { _ in ManagedAtomic(0) }
    let openTunnels = ManagedAtomic(0)

    static let methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "PATCH", "TRACE", "other"]
    static let statusClasses = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"]
    static let results: [ResultCode] = ResultCode.allCases

    let live: LiveStats

    init(listener: String, registry: PrometheusCollectorRegistry, live: LiveStats) {
        self.live = live
        self.listener = listener
        self.registry = registry
        let l = [("listener", listener)]
        connections = registry.makeGauge(descriptor: descriptor("client_connections", "", "Open client connections."), labels: l)
        tunnels = registry.makeGauge(descriptor: descriptor("tunnels", "", "Open CONNECT tunnels."), labels: l)
        requestDuration = registry.makeDurationHistogram(descriptor: descriptor("request_duration", "seconds", "Time from a complete request head to the end of the response (CONNECT tunnels excluded)."), labels: l, buckets: ProxyMetrics.durationBuckets)
        upstreamHeadDuration = registry.makeDurationHistogram(descriptor: descriptor("upstream_response_duration", "seconds", "Time from sending a request upstream to receiving the response head."), labels: l, buckets: ProxyMetrics.durationBuckets)
        receivedBytes = registry.makeCounter(descriptor: descriptor("received_bytes", "total", "Bytes received from clients."), labels: l)
        sentBytes = registry.makeCounter(descriptor: descriptor("sent_bytes", "total", "Bytes sent to clients."), labels: l)
        requests = Mutex(Array(repeating: nil, count: Self.methods.count * Self.statusClasses.count * Self.results.count))
        denials = LabelledCounters(
            registry, name: "denied", help: "Requests refused, by the rule that refused them.", listener: listener, label: "rule")
        blocks = LabelledCounters(
            registry, name: "blocked", help: "Requests answered by a block list instead of being fetched, by list.", listener: listener,
            label: "list")
    }

    /// Refusals by rule and blocks by list: counters made on first use of a label (these are not
    /// the hot path).
    private let denials: LabelledCounters
    private let blocks: LabelledCounters

    func denied(by rule: String) { denials.increment(rule) }
    func blocked(list: String) { blocks.increment(list) }

    static func methodIndex(_ method: String) -> Int {
        switch method {
        case "GET": return 0
        case "HEAD": return 1
        case "POST": return 2
        case "PUT": return 3
        case "DELETE": return 4
        case "CONNECT": return 5
        case "OPTIONS": return 6
        case "PATCH": return 7
        case "TRACE": return 8
        default: return 9
        }
    }

    /// Counts one finished exchange (request or tunnel).
    func observe(_ e: borrowing Exchange, host: String?, upstreamHeadNanoseconds: Int64?) {
        let m = Self.methodIndex(e.method)
        let s = (100...599).contains(e.status) ? e.status / 100 : 0
        let r = Self.results.firstIndex(of: e.result) ?? 0
        let index = (m * Self.statusClasses.count + s) * Self.results.count + r
        let counter = requests.withLock { all -> Counter in
            if let c = all[index] { return c }
            let c = registry.makeCounter(
                descriptor: descriptor("requests", "total", "Requests and tunnels by listener, method, status class and result code."),
                labels: [("listener", listener), ("method", Self.methods[m]), ("code", Self.statusClasses[s]), ("result", e.result.rawValue)])
            all[index] = c
            return c
        }
        counter.increment()
        requestsByClass[s].wrappingIncrement(ordering: .relaxed)
        receivedBytes.increment(by: Int64(e.bytesIn))
        sentBytes.increment(by: Int64(e.bytesOut))
        if e.result != .tunnel {
            requestDuration.record(.nanoseconds(Int64(clamping: e.durationNanoseconds)))
            live.recordLatency(nanoseconds: e.durationNanoseconds)
        }
        if let host {
            if e.result == .denied { live.denied.add(host) } else { live.hosts.add(host) }
        }
        if let upstreamHeadNanoseconds { upstreamHeadDuration.record(.nanoseconds(upstreamHeadNanoseconds)) }
    }
}

func descriptor(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
    MetricNameDescriptor(namespace: "proxima", metricName: name, unitName: unit, helpText: help)
}

/// A counter family with a listener and one free label, each counter made when first needed.
final class LabelledCounters: Sendable {
    private let registry: PrometheusCollectorRegistry
    /// Kept as text (the descriptor type is not Sendable) and turned into one on first use.
    private let name: String
    private let help: String
    private let listener: String
    private let label: String
    private let counters = Mutex<[String: Counter]>([:])

    init(_ registry: PrometheusCollectorRegistry, name: String, help: String, listener: String, label: String) {
        self.registry = registry
        self.name = name
        self.help = help
        self.listener = listener
        self.label = label
    }

    func increment(_ value: String) {
        counters.withLock { all -> Counter in
            if let c = all[value] { return c }
            let c = registry.makeCounter(descriptor: descriptor(name, "total", help), labels: [("listener", listener), (label, value)])
            all[value] = c
            return c
        }.increment()
    }
}
