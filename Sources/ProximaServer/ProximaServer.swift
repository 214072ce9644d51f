import Atomics
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import ProximaCache
import ProximaConfig
import ProximaTelemetry
import Synchronization

public struct ServerStartError: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}

/// A running Proxima: its listeners, shared services and current configuration.
///
/// `start` binds every listener; `reload` applies a new configuration to new connections
/// (binding added listeners, draining removed ones) without dropping any connection;
/// `shutdown` stops accepting and lets what is in flight finish within the drain timeout.
public final class ProximaServer: Sendable {
    final class Listener: Sendable {
        let name: String
        let address: ListenAddress
        let channel: Channel
        let quiesce: ServerQuiescingHelper
        let settings: Mutex<RuntimeSettings>
        let open = ManagedAtomic<Int>(0)
        let metrics: ListenerMetrics

        /// Whether this listener serves `address`: the configured one, or the port it was
        /// actually given when the configuration asked for port 0.
        func matches(_ other: ListenAddress) -> Bool {
            if other == address { return true }
            return other.host == address.host && other.port == channel.localAddress?.port
        }

        init(
            name: String, address: ListenAddress, channel: Channel, quiesce: ServerQuiescingHelper, settings: RuntimeSettings,
            metrics: ListenerMetrics
        ) {
            self.metrics = metrics
            self.name = name
            self.address = address
            self.channel = channel
            self.quiesce = quiesce
            self.settings = Mutex(settings)
        }
    }

    struct State {
        var config: ProximaConfiguration
        var listeners: [Listener] = []
        var accessLog: AccessLogWriter
        /// Writers replaced by a reload, closed at shutdown (connections may still use them).
        var retiredLogs: [AccessLogWriter] = []
        var admin: Channel?
        var draining = false
        var dropWatch: RepeatedTask?
        var sampler: RepeatedTask?
        /// The upstream groups' active health checks (replaced on reload).
        var healthChecks: [RepeatedTask] = []
        var upstreams = try! UpstreamGroups([])
        var cache: HTTPCache?
        var droppedSeen = 0
        var reloadAction: (@Sendable () async -> ReloadOutcome)?
    }

    private let state: Mutex<State>
    let services: ServerServices
    public let metrics: ProxyMetrics
    /// Wall-clock start, seconds since 1970.
    public let startTime: Int
    /// Runs the blocking DNS lookups.
    private let threadPool: NIOThreadPool
    /// Runs the disk cache's file work, apart from DNS lookups (which may block for seconds).
    private let diskPool: NIOThreadPool
    public let logger: Logger

    public init(configuration: ProximaConfiguration, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger = Logger(label: "proxima")) throws {
        let log = try Self.makeAccessLog(configuration)
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        self.threadPool = pool
        self.diskPool = NIOThreadPool(numberOfThreads: 2)
        diskPool.start()
        let resolver = DNSResolver(
            threadPool: pool, ttl: .nanoseconds(configuration.dns.cacheTTL.nanoseconds),
            negativeTTL: .nanoseconds(configuration.dns.negativeTTL.nanoseconds), maxEntries: configuration.dns.maxEntries)
        self.services = ServerServices(group: group, resolver: resolver, pools: UpstreamPools(group: group), threadPool: pool)
        self.state = Mutex(State(config: configuration, accessLog: log))
        self.logger = logger
        self.startTime = wallClock().0
        self.metrics = ProxyMetrics(startTime: startTime)
    }

    static func makeAccessLog(_ config: ProximaConfiguration) throws -> AccessLogWriter {
        try AccessLogWriter(outputs: config.logging.access.map(\.output))
    }

    public var configuration: ProximaConfiguration { state.withLock { $0.config } }

    /// Bound addresses by listener name (useful when the configuration asked for port 0).
    public var boundAddresses: [(name: String, address: SocketAddress)] {
        state.withLock { s in s.listeners.compactMap { l in l.channel.localAddress.map { (l.name, $0) } } }
    }

    public func start() async throws {
        let (config, log) = state.withLock { ($0.config, $0.accessLog) }
        // The admin socket first: the proxy listeners must know its address to keep it out of reach.
        var admin: Channel?
        if let a = config.admin { admin = try await bindAdmin(a) }
        let settings: RuntimeSettings
        do {
            settings = try RuntimeSettings(
                config: config, accessLog: log, protectedEndpoints: ProtectedEndpoints(bound: admin?.localAddress), cache: makeCache(config, previous: nil))
        } catch {
            try? await admin?.close()
            throw error
        }
        startHealthChecks(settings.upstreams)
        state.withLock { $0.cache = settings.cache }
        var bound: [Listener] = []
        do {
            for l in config.listeners {
                bound.append(try await bind(l, settings: settings))
            }
        } catch {
            for l in bound { try? await l.channel.close() }
            try? await admin?.close()
            throw error
        }
        // A log server that is down must not go unnoticed: say how many records were lost.
        let watch = services.group.next().scheduleRepeatedTask(initialDelay: .seconds(30), delay: .seconds(30)) { [self] _ in
            let dropped = currentAccessLog.droppedCount
            let new = state.withLock { s -> Int in
                let n = max(0, dropped - s.droppedSeen)
                s.droppedSeen = dropped
                return n
            }
            if new > 0 {
                logger.warning("access log: \(new) record(s) dropped in the last 30s (queue full, or a syslog server slow or unreachable)")
            }
        }
        // The dashboard's per-second history.
        let sampler = services.group.next().scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [self] _ in
            var totals = Array(repeating: 0, count: ListenerMetrics.statusClasses.count)
            for l in currentListeners {
                for (i, c) in l.metrics.requestsByClass.enumerated() { totals[i] += c.load(ordering: .relaxed) }
            }
            metrics.live.sample(time: wallClock().0, totals: totals)
        }
        state.withLock {
            $0.listeners = bound
            $0.admin = admin
            $0.dropWatch = watch
            $0.sampler = sampler
        }
    }

    private func bind(_ lc: ListenerConfig, settings: RuntimeSettings) async throws -> Listener {
        let quiesce = ServerQuiescingHelper(group: services.group)
        let services = self.services
        let box = Mutex<Listener?>(nil)
        let listenerName = lc.name
        let listenerMetrics = metrics.listener(lc.name)
        let bootstrap = ServerBootstrap(group: services.group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                guard let listener = box.withLock({ $0 }) else {
                    return channel.close()
                }
                let settings = listener.settings.withLock { $0 }
                let open = listener.open.wrappingIncrementThenLoad(ordering: .relaxed)
                channel.closeFuture.whenComplete { _ in listener.open.wrappingDecrement(ordering: .relaxed) }
                if open > settings.maxConnections {
                    // Over the limit: refuse this one, leave every established connection alone.
                    return channel.close()
                }
                // A listener kept by address across a reload may have changed its role or TLS.
                let setup = ConnectionSetup(
                    settings: settings, services: services, listener: settings.listeners[listener.name] ?? lc, metrics: listener.metrics)
                return channel.eventLoop.makeCompletedFuture { try setup.configure(channel) }
            }
        let channel: Channel
        do {
            channel = try await bootstrap.bind(host: lc.address.host, port: lc.address.port).get()
        } catch {
            throw ServerStartError(description: "cannot listen on \(lc.address) (listener '\(listenerName)'): \(error)")
        }
        let listener = Listener(
            name: lc.name, address: lc.address, channel: channel, quiesce: quiesce, settings: settings, metrics: listenerMetrics)
        box.withLock { $0 = listener }
        logger.debug("listening", metadata: ["listener": "\(lc.name)", "address": "\(channel.localAddress?.description ?? "?")"])
        return listener
    }

    /// Applies a new, already validated configuration. Listeners whose address is unchanged keep
    /// their socket; new connections on them use the new settings. Removed listeners stop
    /// accepting and drain.
    public func reload(_ config: ProximaConfiguration) async throws {
        do {
            try await apply(config)
            metrics.reloads.increment()
        } catch {
            metrics.reloadFailures.increment()
            throw error
        }
    }

    /// Counts a reload refused before it reached the server (a file with errors).
    public func recordRefusedReload() { metrics.reloadFailures.increment() }

    private func apply(_ config: ProximaConfiguration) async throws {
        let (oldConfig, oldListeners, oldLog) = state.withLock { ($0.config, $0.listeners, $0.accessLog) }
        let log = config.logging.access == oldConfig.logging.access ? oldLog : try Self.makeAccessLog(config)
        let (admin, previousUpstreams, previousCache) = state.withLock { ($0.admin, $0.upstreams, $0.cache) }
        let settings: RuntimeSettings
        do {
            settings = try RuntimeSettings(
                config: config, accessLog: log, protectedEndpoints: ProtectedEndpoints(bound: admin?.localAddress), previousUpstreams: previousUpstreams,
                cache: makeCache(config, previous: previousCache))
        } catch {
            if log !== oldLog { log.shutdown() }
            throw error
        }
        var kept: [Listener] = []
        var added: [Listener] = []
        do {
            for lc in config.listeners {
                if lc.address.port != 0, let existing = oldListeners.first(where: { $0.matches(lc.address) }) {
                    existing.settings.withLock { $0 = settings }
                    kept.append(existing)
                } else {
                    added.append(try await bind(lc, settings: settings))
                }
            }
        } catch {
            for l in added { try? await l.channel.close() }
            if log !== oldLog { log.shutdown() }
            throw error
        }
        startHealthChecks(settings.upstreams)
        state.withLock { $0.cache = settings.cache }
        let removed = oldListeners.filter { old in !kept.contains { $0 === old } }
        for l in removed { l.quiesce.initiateShutdown(promise: nil) }
        state.withLock { s in
            s.config = config
            s.listeners = kept + added
            if log !== oldLog {
                s.retiredLogs.append(oldLog)
                s.accessLog = log
            }
        }
    }

    /// Stops accepting, tells idle connections to close and busy ones to close after their
    /// response, and waits up to `drainTimeout` for them.
    public func shutdown(drainTimeout: TimeAmount? = nil) async {
        let (listeners, config) = state.withLock { s in
            s.draining = true
            s.dropWatch?.cancel()
            s.dropWatch = nil
            s.sampler?.cancel()
            s.sampler = nil
            for t in s.healthChecks { t.cancel() }
            s.healthChecks = []
            return (s.listeners, s.config)
        }
        let timeout = drainTimeout ?? .nanoseconds(config.timeouts.drain.nanoseconds)
        var futures: [EventLoopFuture<Void>] = []
        for l in listeners {
            let p = l.channel.eventLoop.makePromise(of: Void.self)
            l.quiesce.initiateShutdown(promise: p)
            futures.append(p.futureResult)
        }
        // Drained or timed out, whichever comes first (a promise completed twice keeps the first).
        let loop = services.group.next()
        let drained = loop.makePromise(of: Void.self)
        EventLoopFuture.andAllComplete(futures, on: loop).cascade(to: drained)
        let timer = loop.scheduleTask(in: timeout) { drained.succeed() }
        try? await drained.futureResult.get()
        timer.cancel()
        try? await services.pools.closeAll()?.get()
        let logs = state.withLock { s -> [AccessLogWriter] in
            s.listeners = []
            return [s.accessLog] + s.retiredLogs
        }
        for l in logs { l.shutdown() }
        if let admin = state.withLock({ $0.admin }) { try? await admin.close() }
        try? await threadPool.shutdownGracefully()
        try? await diskPool.shutdownGracefully()
        state.withLock { $0.cache }?.disk?.close()
    }

    /// The cache a configuration asks for. A reload with the same cache settings keeps the
    /// running one and what it holds; with other settings, a new memory tier, but the disk
    /// store of the same directory is kept (one store per directory; a new `size` for it takes
    /// effect at the next start).
    func makeCache(_ config: ProximaConfiguration, previous: HTTPCache?) throws -> HTTPCache? {
        guard config.cache.enabled else { return nil }
        if let previous, previous.config == config.cache { return previous }
        var heuristic = CachePolicy.Heuristic()
        heuristic.fraction = config.cache.heuristicFraction
        heuristic.maxLifetime = Int(config.cache.heuristicMax.nanoseconds / 1_000_000_000)
        heuristic.defaultLifetime = config.cache.defaultTTL.map { Int($0.nanoseconds / 1_000_000_000) }
        var disk: DiskStore?
        if let d = config.cache.disk {
            if let kept = previous?.disk, kept.directory == DiskStore.normalized(d.path) {
                if kept.capacity != d.size.bytes { logger.warning("cache.disk.size: the new size takes effect at the next start") }
                disk = kept
            } else {
                let started = ContinuousClock.now
                let store = try DiskStore(directory: d.path, capacity: d.size.bytes, pool: diskPool)
                let deleted = store.removedCorrupt > 0 ? ", \(store.removedCorrupt) incomplete files deleted" : ""
                logger.info("disk cache \(store.directory): \(store.count) URLs, \(store.totalSize) bytes indexed in \(ContinuousClock.now - started)\(deleted)")
                disk = store
            }
        }
        return HTTPCache(config: config.cache, heuristic: heuristic, disk: disk)
    }

    /// Replaces the running health checks with those of `groups` (a reload starts its groups
    /// afresh: health is learnt again within a few intervals).
    private func startHealthChecks(_ groups: UpstreamGroups) {
        let tasks = HealthChecker.start(groups, services: services, logger: logger)
        let old = state.withLock { s -> [RepeatedTask] in
            let old = s.healthChecks
            s.healthChecks = tasks
            s.upstreams = groups
            return old
        }
        for t in old { t.cancel() }
    }

    /// Each upstream group's servers, as the balancer sees them now.
    public var upstreamStatus: [String: [UpstreamServerStatus]] {
        state.withLock { $0.upstreams }.byName.mapValues { $0.snapshot() }
    }

    /// Removes a URL from the cache (the admin API's `POST /purge`): the URL as given and with
    /// its default port written out or left out, since forward requests are stored with the
    /// port and reverse ones as the client wrote the host. nil when the cache is off.
    public func purge(url: String) -> Bool? {
        guard let cache = state.withLock({ $0.cache }) else { return nil }
        var keys = [url]
        if let schemeEnd = url.range(of: "://") {
            let rest = url[schemeEnd.upperBound...]
            let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
            let authority = rest[..<authorityEnd].lowercased()
            let path = rest[authorityEnd...].isEmpty ? "/" : String(rest[authorityEnd...])
            let scheme = String(url[..<schemeEnd.lowerBound]).lowercased()
            let defaultPort = scheme == "https" ? ":443" : ":80"
            let bare = authority.hasSuffix(defaultPort) ? String(authority.dropLast(defaultPort.count)) : authority
            let hasPort = bare.contains("]") ? bare.hasSuffix("]") == false : bare.contains(":")
            keys = [scheme + "://" + bare + path]
            if !hasPort { keys.append(scheme + "://" + bare + defaultPort + path) }
        }
        var removed = false
        for key in keys where cache.contains(key) {
            cache.remove(key)
            removed = true
        }
        return removed
    }

    /// What the cache holds, for /status and the dashboard (nil: no cache).
    var cacheSummary: String? {
        guard let cache = state.withLock({ $0.cache }) else { return nil }
        func mib(_ bytes: Int) -> String {
            let tenths = (bytes * 10 + 524_288) / 1_048_576
            return "\(tenths / 10).\(tenths % 10) MiB"
        }
        var text = "\(cache.count) URL\(cache.count == 1 ? "" : "s"), \(mib(cache.totalSize)) of \(mib(cache.capacity)) in memory"
        if let disk = cache.disk {
            let loads = disk.loads
            text += "; \(disk.count) URL\(disk.count == 1 ? "" : "s"), \(mib(disk.totalSize)) of \(mib(disk.capacity)) on disk"
            text += ", \(loads.done) read\(loads.failed > 0 ? ", \(loads.failed) damaged files dropped" : "")"
            if disk.skippedWrites > 0 { text += ", \(disk.skippedWrites) writes skipped (disk busy)" }
        }
        return text
    }

    /// Requests waiting in each upstream group's queue.
    public var upstreamQueues: [String: Int] {
        state.withLock { $0.upstreams }.byName.mapValues { $0.queueLength }
    }

    /// Reopens the access-log files at their paths (SIGUSR1, after logrotate moved them).
    public func reopenAccessLogs() {
        let logs = state.withLock { [$0.accessLog] + $0.retiredLogs }
        for l in logs { l.reopenFiles() }
    }

    /// Writes out queued access-log records (tests use it before reading a log file).
    public func flushAccessLog() {
        state.withLock { $0.accessLog }.flush()
    }

    /// What POST /reload on the admin API runs (the command line re-reads its file).
    public func setReloadAction(_ action: @escaping @Sendable () async -> ReloadOutcome) {
        state.withLock { $0.reloadAction = action }
    }

    var reloadAction: (@Sendable () async -> ReloadOutcome)? { state.withLock { $0.reloadAction } }
    var isDraining: Bool { state.withLock { $0.draining } }
    var adminSettings: AdminConfig? { state.withLock { $0.config.admin } }
    var currentListeners: [Listener] { state.withLock { $0.listeners } }
    var currentAccessLog: AccessLogWriter { state.withLock { $0.accessLog } }

    /// The admin listener's address, when there is one.
    public var adminAddress: SocketAddress? { state.withLock { $0.admin?.localAddress } }

    /// Open client connections per listener name.
    public var openConnections: [String: Int] {
        state.withLock { s in Dictionary(s.listeners.map { ($0.name, $0.open.load(ordering: .relaxed)) }, uniquingKeysWith: +) }
    }
}
