import Atomics
import NIOCore
import Synchronization

/// What the dashboard shows that Prometheus handles cannot give back: recent history per
/// second, latency percentiles over the last minute, and the busiest and most denied hosts.
final class LiveStats: Sendable {
    /// Latency buckets by powers of two of microseconds: bucket b holds [2^(b-1), 2^b) µs.
    static let latencyBuckets = 28
    let latency: [ManagedAtomic<Int>] = (0..<LiveStats.latencyBuckets).map { _ in ManagedAtomic(0) }
    let hosts = TopCounter(capacity: 1024)
    let denied = TopCounter(capacity: 1024)

    struct Sample: Sendable {
        var time: Int
        /// Requests finished in that second by status class (none, 1xx..5xx).
        var byClass: [Int]
    }

    struct History {
        var samples: [Sample] = []
        var lastTotals: [Int]? = nil
        /// Latency bucket totals at each of the last 61 samples (for a one-minute window).
        var latencySnapshots: [[Int]] = []
    }

    private let history = Mutex(History())
    static let historySeconds = 300

    func recordLatency(nanoseconds: UInt64) {
        let micros = max(1, nanoseconds / 1000)
        let bucket = min(Self.latencyBuckets - 1, 64 - micros.leadingZeroBitCount)
        latency[bucket].wrappingIncrement(ordering: .relaxed)
    }

    /// Called once a second with the request totals by status class over all listeners.
    func sample(time: Int, totals: [Int]) {
        let lat = latency.map { $0.load(ordering: .relaxed) }
        history.withLock { h in
            // The first sample counts from zero: requests of the first second are not lost.
            let previous = h.lastTotals ?? Array(repeating: 0, count: totals.count)
            h.samples.append(Sample(time: time, byClass: zip(totals, previous).map { max(0, $0 - $1) }))
            if h.samples.count > Self.historySeconds { h.samples.removeFirst(h.samples.count - Self.historySeconds) }
            h.lastTotals = totals
            h.latencySnapshots.append(lat)
            if h.latencySnapshots.count > 61 { h.latencySnapshots.removeFirst() }
        }
    }

    var samples: [Sample] { history.withLock { $0.samples } }

    /// p50, p90 and p99 in milliseconds over the last minute (since start when younger), from
    /// the bucket counts; a value is interpolated inside its bucket. nil without requests.
    func percentiles() -> (count: Int, p50: Double, p90: Double, p99: Double)? {
        let now = latency.map { $0.load(ordering: .relaxed) }
        // The snapshot of a minute ago; younger than that, everything since start counts.
        let then = history.withLock { $0.latencySnapshots.count > 60 ? $0.latencySnapshots.first : nil } ?? Array(repeating: 0, count: now.count)
        let window = zip(now, then).map { max(0, $0 - $1) }
        let total = window.reduce(0, +)
        guard total > 0 else { return nil }
        func quantile(_ q: Double) -> Double {
            let rank = q * Double(total)
            var seen = 0.0
            for (b, n) in window.enumerated() where n > 0 {
                if seen + Double(n) >= rank {
                    let low = b == 0 ? 0.0 : Double(1 << (b - 1))
                    let high = Double(1 << b)
                    return (low + (high - low) * (rank - seen) / Double(n)) / 1000
                }
                seen += Double(n)
            }
            return Double(1 << (window.count - 1)) / 1000
        }
        return (total, quantile(0.5), quantile(0.9), quantile(0.99))
    }
}

/// Approximate counts of the most frequent keys in bounded memory: when full, every count is
/// halved and the keys that fall to zero are forgotten, so old traffic fades and new keys get in.
final class TopCounter: Sendable {
    let capacity: Int
    private let counts = Mutex<[String: Int]>([:])

    init(capacity: Int) { self.capacity = capacity }

    func add(_ key: String) {
        counts.withLock { c in
            c[key, default: 0] += 1
            if c.count > capacity {
                c = c.compactMapValues { $0 / 2 > 0 ? $0 / 2 : nil }
            }
        }
    }

    func top(_ n: Int) -> [(key: String, count: Int)] {
        counts.withLock { c in c.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(n).map { ($0.key, $0.value) } }
    }
}
