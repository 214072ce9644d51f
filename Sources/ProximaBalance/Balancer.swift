#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Choosing a back-end for a request: the algorithms of nginx (smooth weighted round robin,
/// weighted least connections), Finagle and Linkerd (power of two choices over a peak EWMA of
/// latency) and Envoy (ring hash, Maglev), over the servers that are usable at that moment.
/// Plain values: the server keeps one per upstream group behind a lock.

/// One back-end of an upstream group.
public struct Backend: Sendable, Hashable {
    public var name: String
    public var host: String
    public var port: Int
    public var weight: Int
    /// At most this many requests at once (nil: no limit).
    public var maxConnections: Int?
    /// Used only when no primary server is usable.
    public var backup: Bool

    public init(name: String? = nil, host: String, port: Int, weight: Int = 1, maxConnections: Int? = nil, backup: Bool = false) {
        self.name = name ?? (host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)")
        self.host = host
        self.port = port
        self.weight = max(1, weight)
        self.maxConnections = maxConnections
        self.backup = backup
    }
}

public enum HashKey: Sendable, Equatable {
    case clientAddress
    case header(String)
    case cookie(String)
    case url
}

public enum HashMethod: String, Sendable, Equatable, CaseIterable {
    /// Ketama-style ring: each server owns 100 × weight points on a circle.
    case ring
    /// Google's Maglev lookup table (65,537 entries): more even, slightly more disruption.
    case maglev
}

public enum BalanceAlgorithm: Sendable, Equatable {
    case roundRobin
    case leastConnections
    /// Power of two random choices, each scored by its peak-EWMA latency × (active + 1) / weight.
    case p2cEWMA
    case hash(HashKey, HashMethod)

    public var name: String {
        switch self {
        case .roundRobin: return "round_robin"
        case .leastConnections: return "least_connections"
        case .p2cEWMA: return "p2c_ewma"
        case .hash(_, let m): return "hash_\(m.rawValue)"
        }
    }
}

/// A small, fast generator with a seed: the balancer's random choices are reproducible in tests.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The state of one upstream group's choices.
public struct Balancer: Sendable {
    public let backends: [Backend]
    public let algorithm: BalanceAlgorithm
    /// Requests in flight per server.
    public private(set) var active: [Int]
    /// nginx's smooth weighted round robin: current weights.
    var current: [Int]
    /// Round-robin start for ties (least connections).
    var tieStart = 0
    /// Peak EWMA of response time per server, in seconds, and when it was last updated.
    var ewma: [Double]
    var ewmaStamp: [Double]
    var random: SplitMix64
    /// For hashing: (point, server) sorted by point.
    let ring: [(UInt64, Int)]
    let maglev: [Int32]

    /// EWMA time constant (seconds): older samples weigh less with time, not with count.
    public static let decay = 10.0
    /// A server with no sample yet scores as instant (as Finagle's peak EWMA): it is tried at
    /// once and then scored by what it did; its in-flight requests still count against it.
    public static let initialLatency = 0.0

    public init(backends: [Backend], algorithm: BalanceAlgorithm, seed: UInt64 = UInt64.random(in: 0...UInt64.max)) {
        self.backends = backends
        self.algorithm = algorithm
        active = Array(repeating: 0, count: backends.count)
        current = Array(repeating: 0, count: backends.count)
        ewma = Array(repeating: Self.initialLatency, count: backends.count)
        ewmaStamp = Array(repeating: 0, count: backends.count)
        random = SplitMix64(seed: seed)
        if case .hash(_, let method) = algorithm {
            ring = method == .ring ? Self.buildRing(backends) : []
            maglev = method == .maglev ? Self.buildMaglev(backends) : []
        } else {
            ring = []
            maglev = []
        }
    }

    /// Whether server `i` is at its connection limit.
    public func isFull(_ i: Int) -> Bool {
        backends[i].maxConnections.map { active[i] >= $0 } ?? false
    }

    /// The server for a request: among the primaries that `usable` accepts (and that are below
    /// their connection limit), or among the backups when no primary is. nil: none is usable.
    /// `key` is the hashing key (client address, header, cookie or URL), for `.hash` only.
    /// Nothing is allocated: this runs for every request.
    public mutating func pick(key: String? = nil, now: Double = 0, usable: (Int) -> Bool = { _ in true }) -> Int? {
        for pass in 0..<2 {
            let backup = pass == 1
            let active = self.active
            let backends = self.backends
            func ok(_ i: Int) -> Bool {
                backends[i].backup == backup && usable(i) && (backends[i].maxConnections.map { active[i] < $0 } ?? true)
            }
            var count = 0
            for i in backends.indices where ok(i) { count += 1 }
            guard count > 0 else { continue }
            switch algorithm {
            case .roundRobin: return smoothRoundRobin(ok)
            case .leastConnections: return leastConnections(ok)
            case .p2cEWMA: return powerOfTwo(ok, count: count, now: now)
            case .hash(_, let method):
                guard let key else { return smoothRoundRobin(ok) }
                return method == .ring ? ringLookup(key, ok) : maglevLookup(key, ok)
            }
        }
        return nil
    }

    /// nginx: every candidate gains its weight, the largest wins and pays the total back. Over
    /// a cycle each server is picked weight times, spread out (5,1,1 → a a b a c a a).
    mutating func smoothRoundRobin(_ ok: (Int) -> Bool) -> Int {
        var total = 0
        var best = -1
        for i in backends.indices where ok(i) {
            current[i] += backends[i].weight
            total += backends[i].weight
            if best < 0 || current[i] > current[best] { best = i }
        }
        current[best] -= total
        return best
    }

    /// The least (active + 1) / weight; ties go round robin so that idle servers share.
    mutating func leastConnections(_ ok: (Int) -> Bool) -> Int {
        var best = -1
        let n = backends.count
        for k in 0..<n {
            let i = (tieStart + k) % n
            guard ok(i) else { continue }
            // (active+1)/weight compared without division.
            if best < 0 || (active[i] + 1) * backends[best].weight < (active[best] + 1) * backends[i].weight { best = i }
        }
        tieStart = (tieStart + 1) % max(n, 1)
        return best
    }

    /// The `n`-th server that `ok` accepts.
    func nth(_ n: Int, _ ok: (Int) -> Bool) -> Int {
        var seen = 0
        for i in backends.indices where ok(i) {
            if seen == n { return i }
            seen += 1
        }
        return -1
    }

    mutating func powerOfTwo(_ ok: (Int) -> Bool, count: Int, now: Double) -> Int {
        guard count > 1 else { return nth(0, ok) }
        let first = Int(random.next() % UInt64(count))
        var second = Int(random.next() % UInt64(count - 1))
        if second >= first { second += 1 }
        let a = nth(first, ok)
        let b = nth(second, ok)
        return cost(a, now: now) <= cost(b, now: now) ? a : b
    }

    func cost(_ i: Int, now: Double) -> Double {
        ewma[i] * Double(active[i] + 1) / Double(backends[i].weight)
    }

    /// A request to server `i` starts.
    public mutating func started(_ i: Int) { active[i] += 1 }

    /// It ended after `seconds` (nil when it failed before a response: counted as slow).
    public mutating func finished(_ i: Int, seconds: Double?, now: Double) {
        active[i] = max(0, active[i] - 1)
        let sample = seconds ?? max(ewma[i] * 2, 1)
        // Peak EWMA: a slower sample is taken at once, faster ones decay in over time.
        if sample > ewma[i] {
            ewma[i] = sample
        } else {
            let elapsed = max(0, now - ewmaStamp[i])
            let w = exp(-elapsed / Self.decay)
            ewma[i] = ewma[i] * w + sample * (1 - w)
        }
        ewmaStamp[i] = now
    }

    public func latency(_ i: Int) -> Double { ewma[i] }

    // MARK: - Consistent hashing

    /// 64-bit FNV-1a, then a finaliser (the raw FNV of similar strings clusters on a ring).
    static func hash(_ s: String) -> UInt64 {
        var h: UInt64 = 14_695_981_039_346_656_037
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 1_099_511_628_211 }
        h ^= h >> 33
        h = h &* 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 33
        h = h &* 0xC4CE_B9FE_1A85_EC53
        h ^= h >> 33
        return h
    }

    static let pointsPerWeight = 100

    static func buildRing(_ backends: [Backend]) -> [(UInt64, Int)] {
        var points: [(UInt64, Int)] = []
        for (i, b) in backends.enumerated() where !b.backup {
            for k in 0..<(Self.pointsPerWeight * b.weight) { points.append((hash("\(b.name)#\(k)"), i)) }
        }
        for (i, b) in backends.enumerated() where b.backup {
            for k in 0..<Self.pointsPerWeight { points.append((hash("\(b.name)#\(k)"), i)) }
        }
        return points.sorted { $0.0 < $1.0 }
    }

    /// The first point at or after the key's hash that belongs to an allowed server: when a
    /// server leaves, only the keys it held move.
    func ringLookup(_ key: String, _ allowed: (Int) -> Bool) -> Int? {
        guard !ring.isEmpty else { return nth(0, allowed) }
        let h = Self.hash(key)
        var lo = 0
        var hi = ring.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ring[mid].0 < h { lo = mid + 1 } else { hi = mid }
        }
        for k in 0..<ring.count {
            let server = ring[(lo + k) % ring.count].1
            if allowed(server) { return server }
        }
        return nil
    }

    static let maglevSize = 65_537

    /// Maglev (Eisenbud et al., 2016): each server fills the table in its own permutation order,
    /// in proportion to its weight, until the table is full.
    static func buildMaglev(_ backends: [Backend]) -> [Int32] {
        let m = maglevSize
        let servers = backends.indices.filter { !backends[$0].backup }
        guard !servers.isEmpty else { return [] }
        let offsets = servers.map { Int(hash(backends[$0].name) % UInt64(m)) }
        let skips = servers.map { Int(hash(backends[$0].name + "#skip") % UInt64(m - 1)) + 1 }
        var next = Array(repeating: 0, count: servers.count)
        var table = [Int32](repeating: -1, count: m)
        let maxWeight = servers.map { backends[$0].weight }.max()!
        var filled = 0
        var round = 0
        while filled < m {
            for (k, i) in servers.enumerated() {
                // Weighted: a server takes a turn in weight out of maxWeight rounds.
                if (round % maxWeight) >= backends[i].weight { continue }
                var c = (offsets[k] + next[k] * skips[k]) % m
                while table[c] >= 0 {
                    next[k] += 1
                    c = (offsets[k] + next[k] * skips[k]) % m
                }
                table[c] = Int32(i)
                next[k] += 1
                filled += 1
                if filled == m { break }
            }
            round += 1
        }
        return table
    }

    /// The table's entry for the key; when that server is not usable, the key is rehashed (with
    /// a counter) until an allowed one comes up, then any allowed one.
    func maglevLookup(_ key: String, _ allowed: (Int) -> Bool) -> Int? {
        guard !maglev.isEmpty else { return nth(0, allowed) }
        for attempt in 0..<32 {
            let h = Self.hash(attempt == 0 ? key : "\(key)#\(attempt)")
            let server = Int(maglev[Int(h % UInt64(maglev.count))])
            if allowed(server) { return server }
        }
        return nth(0, allowed)
    }
}

/// The servers a request has been tried on: a bit each for the first 64, a set beyond (no
/// allocation in the common case; this is made for every request).
public struct ServerSet: Sendable, Equatable {
    var bits: UInt64 = 0
    var more: Set<Int> = []
    public private(set) var count = 0

    public init() {}

    public func contains(_ i: Int) -> Bool { i < 64 ? bits & (1 << UInt64(i)) != 0 : more.contains(i) }

    public mutating func insert(_ i: Int) {
        guard !contains(i) else { return }
        if i < 64 { bits |= 1 << UInt64(i) } else { more.insert(i) }
        count += 1
    }

    public var isEmpty: Bool { count == 0 }
}
