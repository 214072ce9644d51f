import Testing

@testable import ProximaServer

@Suite("Dashboard statistics")
struct LiveStatsTests {
    @Test func percentilesFromPowerOfTwoBuckets() throws {
        let s = LiveStats()
        #expect(s.percentiles() == nil)
        // 90 requests at ~1 ms, 9 at ~10 ms, 1 at ~100 ms.
        for _ in 0..<90 { s.recordLatency(nanoseconds: 1_000_000) }
        for _ in 0..<9 { s.recordLatency(nanoseconds: 10_000_000) }
        s.recordLatency(nanoseconds: 100_000_000)
        let p = try #require(s.percentiles())
        #expect(p.count == 100)
        // Buckets are a factor of two wide: each answer lies in its value's bucket.
        #expect(p.p50 > 0.5 && p.p50 <= 1.024)
        #expect(p.p90 > 0.5 && p.p90 <= 1.024)
        #expect(p.p99 > 8.192 && p.p99 <= 16.384)
    }

    @Test func historyHoldsPerSecondDeltas() {
        let s = LiveStats()
        s.sample(time: 100, totals: [0, 0, 5, 0, 1, 0])
        s.sample(time: 101, totals: [0, 0, 12, 0, 1, 2])
        #expect(s.samples.map(\.byClass) == [[0, 0, 5, 0, 1, 0], [0, 0, 7, 0, 0, 2]])
        for t in 0..<400 { s.sample(time: 102 + t, totals: [0, 0, 12, 0, 1, 2]) }
        #expect(s.samples.count == LiveStats.historySeconds)
    }

    @Test func topCounterStaysBoundedAndKeepsTheBusiest() {
        let t = TopCounter(capacity: 100)
        for i in 0..<10_000 {
            t.add("busy.example")
            t.add("host\(i).example")
        }
        let top = t.top(3)
        #expect(top.first?.key == "busy.example")
        #expect(t.top(1000).count <= 101)
    }
}

@Suite("Login failure slowdown")
struct AuthFailuresTests {
    @Test func delaysGrowAreClearedAndExpire() {
        let f = AuthFailures()
        #expect(f.delay(for: "10.0.0.1", now: 1000) == .zero)
        f.failed("10.0.0.1", now: 1000)
        #expect(f.delay(for: "10.0.0.1", now: 1000) == .milliseconds(250))
        f.failed("10.0.0.1", now: 1001)
        f.failed("10.0.0.1", now: 1002)
        #expect(f.delay(for: "10.0.0.1", now: 1002) == .milliseconds(1000))
        for t in 0..<10 { f.failed("10.0.0.1", now: 1003 + t) }
        #expect(f.delay(for: "10.0.0.1", now: 1020) == .milliseconds(8000))
        #expect(f.delay(for: "10.0.0.2", now: 1020) == .zero)  // per client
        f.succeeded("10.0.0.1")
        #expect(f.delay(for: "10.0.0.1", now: 1020) == .zero)
        f.failed("10.0.0.3", now: 2000)
        #expect(f.delay(for: "10.0.0.3", now: 2000 + 601) == .zero)  // ten quiet minutes
    }
}
