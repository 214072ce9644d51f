import NIOCore
import ProximaBalance
import ProximaConfig
import ProximaHTTP1
import Synchronization

/// One upstream group at run time: its balancer, each server's health and the retry budget,
/// shared by every event loop behind one lock (held for a pick or a result, never across I/O).
final class UpstreamGroup: Sendable {
    let config: UpstreamGroupConfig
    /// Each server as a target to connect to (the pool key is its `host:port`).
    let targets: [RequestTarget]
    private struct State {
        var balancer: Balancer
        var health: [ServerHealth]
        var budget = RetryBudget()
        /// Requests waiting for a server under its connection limit, oldest first.
        var queue: [Waiter] = []
        var lastWaiter: UInt64 = 0
    }

    /// A queued request: `wake` runs (on whatever thread frees a slot) when it may try again.
    struct Waiter: Sendable {
        let id: UInt64
        let wake: @Sendable () -> Void
    }
    private let state: Mutex<State>
    /// TLS to the servers (`https://` back-ends), nil for plain HTTP.
    let tls: UpstreamTLS?
    /// Each server's key in the connection pools: TLS connections apart from plain ones to
    /// the same address (made once, not per request).
    let poolKeys: [String]

    /// `previous`: the group of the same name before a reload, whose servers' health (checks
    /// and ejections) carries over to the servers that are still there.
    init(_ config: UpstreamGroupConfig, previous: UpstreamGroup? = nil) throws {
        self.config = config
        let scheme = config.tls == nil ? "http" : "https"
        targets = config.servers.map { RequestTarget(scheme: scheme, host: $0.host, port: $0.port, pathAndQuery: "/", explicitPort: true) }
        tls = try config.tls.map { try UpstreamTLS($0, group: config.name) }
        poolKeys = targets.map { config.tls == nil ? $0.hostPort : "https://" + $0.hostPort }
        var health = Array(repeating: ServerHealth(), count: config.servers.count)
        // Without checks nothing would ever bring a server back up, so state carries over only
        // to a group that still has them.
        if let previous, config.activeCheck != nil {
            let old = previous.state.withLock { $0.health }
            for (i, server) in config.servers.enumerated() {
                if let j = previous.config.servers.firstIndex(where: { $0.name == server.name }) { health[i] = old[j] }
            }
        }
        state = Mutex(State(balancer: Balancer(backends: config.servers, algorithm: config.algorithm), health: health))
    }

    static func now() -> Double { Double(NIODeadline.now().uptimeNanoseconds) / 1e9 }

    /// A server for a request, not one of `tried`; nil when none is usable. The first try
    /// deposits into the retry budget, a later one must withdraw from it.
    func pick(key: String?, tried: ServerSet) -> Int? {
        let now = Self.now()
        return state.withLock { s in
            if tried.isEmpty {
                s.budget.deposit()
            } else if !s.budget.withdraw(now: now) {
                return nil
            }
            let health = s.health
            // When the checks say every server is down, try them anyway (Envoy's panic mode): a
            // check that fails for its own reasons must not take the whole site off line.
            guard let i = s.balancer.pick(key: key, now: now, usable: { !tried.contains($0) && health[$0].usable(now: now) })
                ?? s.balancer.pick(key: key, now: now, usable: { !tried.contains($0) && !health[$0].isEjected(now: now) })
            else { return nil }
            s.balancer.started(i)
            return i
        }
    }

    /// How a request to server `i` ended: `seconds` to the response head (nil: no response),
    /// `ok` false for connect failures and 5xx answers (outlier detection). The slot it frees
    /// goes to the oldest queued request.
    func finished(_ i: Int, seconds: Double?, ok: Bool) {
        let now = Self.now()
        let policy = config.outlier
        let next = state.withLock { s -> Waiter? in
            s.balancer.finished(i, seconds: seconds, now: now)
            var ejected = 0
            for h in s.health where h.isEjected(now: now) { ejected += 1 }
            let mayEject = (ejected + 1) * 100 <= policy.maxEjectedPercent * s.health.count
            _ = s.health[i].served(ok: ok, now: now, policy: policy, mayEject: mayEject)
            return s.queue.isEmpty ? nil : s.queue.removeFirst()
        }
        next?.wake()
    }

    /// A place in the group's queue (HAProxy's `maxqueue`) for a request that found every
    /// usable server at its `max_connections`; nil when there is no queue, it is full, or no
    /// server is merely busy (then waiting would not help).
    func enqueue(_ wake: @escaping @Sendable () -> Void) -> UInt64? {
        guard config.queueLimit > 0 else { return nil }
        let now = Self.now()
        return state.withLock { s in
            guard s.queue.count < config.queueLimit else { return nil }
            let health = s.health
            guard health.indices.contains(where: { health[$0].usable(now: now) && s.balancer.isFull($0) }) else { return nil }
            s.lastWaiter &+= 1
            s.queue.append(Waiter(id: s.lastWaiter, wake: wake))
            return s.lastWaiter
        }
    }

    /// Takes a waiter out (its time ran out); false when it was already woken.
    func leaveQueue(_ id: UInt64) -> Bool {
        state.withLock { s in
            guard let i = s.queue.firstIndex(where: { $0.id == id }) else { return false }
            s.queue.remove(at: i)
            return true
        }
    }

    /// Passes a wake-up on when its request has gone (the client left while it waited).
    func wakeNext() {
        state.withLock { s in s.queue.isEmpty ? nil : s.queue.removeFirst() }?.wake()
    }

    var queueLength: Int { state.withLock { $0.queue.count } }

    /// An active check's result for server `i`; a transition when its thresholds are crossed.
    func checked(_ i: Int, ok: Bool) -> ServerHealth.Transition? {
        guard let policy = config.activeCheck else { return nil }
        return state.withLock { $0.health[i].checked(ok: ok, policy: policy) }
    }

    /// For /status: each server and whether it takes requests now.
    func snapshot() -> [UpstreamServerStatus] {
        let now = Self.now()
        return state.withLock { s in
            config.servers.indices.map {
                UpstreamServerStatus(
                    name: config.servers[$0].name, up: s.health[$0].up, ejected: s.health[$0].isEjected(now: now),
                    active: s.balancer.active[$0], backup: config.servers[$0].backup)
            }
        }
    }
}

/// The groups of one configuration, by name.
struct UpstreamGroups: Sendable {
    let byName: [String: UpstreamGroup]

    init(_ configs: [UpstreamGroupConfig], previous: UpstreamGroups? = nil) throws {
        var byName: [String: UpstreamGroup] = [:]
        for c in configs { byName[c.name] = try UpstreamGroup(c, previous: previous?.byName[c.name]) }
        self.byName = byName
    }
}

/// One server as /status shows it.
public struct UpstreamServerStatus: Sendable, Equatable, Codable {
    public let name: String
    /// As the active checks see it (always true without checks).
    public let up: Bool
    /// Taken out by outlier detection for now.
    public let ejected: Bool
    public let active: Int
    public let backup: Bool
    public var usable: Bool { up && !ejected }
}
