import Foundation
import Testing

@testable import ProximaBalance

func servers(_ weights: [Int], backups: Int = 0) -> [Backend] {
    weights.enumerated().map { Backend(name: "s\($0.offset)", host: "10.0.0.\($0.offset + 1)", port: 80, weight: $0.element) }
        + (0..<backups).map { Backend(name: "b\($0)", host: "10.0.1.\($0 + 1)", port: 80, backup: true) }
}

@Suite("Balancing algorithms")
struct BalancerTests {
    @Test func smoothWeightedRoundRobinIsNginxs() {
        var b = Balancer(backends: servers([5, 1, 1]), algorithm: .roundRobin, seed: 1)
        let names = (0..<7).map { _ in b.backends[b.pick()!].name }
        // nginx's documented sequence for weights 5, 1, 1.
        #expect(names == ["s0", "s0", "s1", "s0", "s2", "s0", "s0"])
        var counts = [0, 0, 0]
        for _ in 0..<700 { counts[b.pick()!] += 1 }
        #expect(counts == [500, 100, 100])
    }

    @Test func roundRobinSkipsUnusableAndUsesBackupsOnlyWhenAllPrimariesAreDown() {
        var b = Balancer(backends: servers([1, 1, 1], backups: 1), algorithm: .roundRobin, seed: 1)
        let picks = (0..<6).map { _ in b.pick { $0 != 1 }! }
        #expect(Set(picks) == [0, 2])
        let value27 = b.pick { $0 == 3 } == 3
        #expect(value27)
        let value28 = (0..<5).map { _ in b.pick { $0 >= 3 }! } == [3, 3, 3, 3, 3]
        #expect(value28)
        let value29 = b.pick { _ in false } == nil
        #expect(value29)
    }

    @Test func connectionLimitsAreHonoured() {
        var backends = servers([1, 1])
        backends[0].maxConnections = 2
        var b = Balancer(backends: backends, algorithm: .roundRobin, seed: 1)
        b.started(0)
        b.started(0)
        let value38 = (0..<4).map { _ in b.pick()! } == [1, 1, 1, 1]
        #expect(value38)
        b.finished(0, seconds: 0.01, now: 1)
        let value40 = (0..<4).map { _ in b.pick()! }.contains(0)
        #expect(value40)
    }

    @Test func leastConnectionsWeighsActiveRequests() {
        var b = Balancer(backends: servers([1, 1, 2]), algorithm: .leastConnections, seed: 1)
        for _ in 0..<3 { b.started(0) }
        b.started(1)
        // s2 (weight 2, idle) first, then s2 again (1/2 < 2/1), then s1 and s2 tie at 1.
        let first = b.pick()!
        #expect(first == 2)
        b.started(first)
        let value51 = b.pick()! == 2
        #expect(value51)
        // Idle servers of equal weight share the load.
        var idle = Balancer(backends: servers([1, 1, 1]), algorithm: .leastConnections, seed: 1)
        let value54 = Set((0..<3).map { _ in idle.pick()! }) == [0, 1, 2]
        #expect(value54)
    }

    @Test func powerOfTwoChoicesAvoidsTheSlowServer() {
        var b = Balancer(backends: servers([1, 1, 1, 1]), algorithm: .p2cEWMA, seed: 42)
        var counts = [0, 0, 0, 0]
        var now = 0.0
        for _ in 0..<4000 {
            let i = b.pick(now: now)!
            counts[i] += 1
            b.started(i)
            now += 0.01
            b.finished(i, seconds: i == 3 ? 0.5 : 0.01, now: now)
        }
        #expect(counts[3] < 200, "\(counts)")
        #expect(counts[0...2].allSatisfy { $0 > 1000 }, "\(counts)")
        // Latency recovers: after fast answers the slow server's score decays back in.
        b.finished(3, seconds: 0.01, now: now + 60)
        #expect(b.latency(3) < 0.02)
    }

    static let keys = (0..<20_000).map { "client-\($0)" }

    @Test(arguments: HashMethod.allCases)
    func consistentHashingSpreadsByWeightAndMovesOnlyTheLeaversKeys(_ method: HashMethod) {
        let b = Balancer(backends: servers([1, 1, 1, 1, 2]), algorithm: .hash(.clientAddress, method), seed: 1)
        var copy = b
        let before = Self.keys.map { copy.pick(key: $0)! }
        var counts = [Int](repeating: 0, count: 5)
        for s in before { counts[s] += 1 }
        // Weight 1 ≈ 1/6 of the keys (3,333), weight 2 ≈ 1/3 (6,667): within 15 %.
        for i in 0..<4 { #expect(abs(counts[i] - 3333) < 500, "\(method) \(counts)") }
        #expect(abs(counts[4] - 6667) < 1000, "\(method) \(counts)")
        // The same key always goes to the same server.
        let value88 = Self.keys.prefix(100).map { copy.pick(key: $0)! } == Array(before.prefix(100))
        #expect(value88)
        // Server 2 leaves: its keys move, the others' stay (Maglev: almost all of them).
        let after = Self.keys.map { copy.pick(key: $0) { $0 != 2 }! }
        let moved = zip(before, after).filter { $0 != $1 }
        #expect(moved.allSatisfy { $0.0 == 2 } || method == .maglev)
        let strayed = moved.filter { $0.0 != 2 }.count
        #expect(strayed < Self.keys.count / 50, "\(method): \(strayed) keys of staying servers moved")
        #expect(after.allSatisfy { $0 != 2 })
    }

    @Test func hashingWithoutAKeyFallsBackToRoundRobin() {
        var b = Balancer(backends: servers([1, 1]), algorithm: .hash(.header("x-user"), .ring), seed: 1)
        let value100 = Set((0..<4).map { _ in b.pick(key: nil)! }) == [0, 1]
        #expect(value100)
    }
}

@Suite("Health: active checks, outlier ejection, retry budget")
struct HealthTests {
    @Test func riseAndFall() {
        var h = ServerHealth()
        let policy = ActiveCheckPolicy()
        #expect(h.checked(ok: false, policy: policy) == nil)
        #expect(h.checked(ok: false, policy: policy) == nil)
        #expect(h.checked(ok: false, policy: policy) == .wentDown)
        #expect(!h.usable(now: 0))
        #expect(h.checked(ok: true, policy: policy) == nil)
        #expect(h.checked(ok: false, policy: policy) == nil)
        #expect(h.checked(ok: true, policy: policy) == nil)
        #expect(h.checked(ok: true, policy: policy) == .cameUp)
        #expect(h.usable(now: 0))
    }

    @Test func ejectionsGrowAndEnd() {
        var h = ServerHealth()
        var p = OutlierPolicy()
        p.consecutiveFailures = 3
        p.baseEjection = 10
        p.maxEjection = 25
        let ejected = (0..<3).map { _ in h.served(ok: false, now: 0, policy: p, mayEject: true) }
        #expect(ejected == [false, false, true])
        #expect(!h.usable(now: 9.9) && h.usable(now: 10))
        // Trouble again: twice as long, then capped.
        for _ in 0..<3 { _ = h.served(ok: false, now: 11, policy: p, mayEject: true) }
        #expect(h.ejectedUntil == 31)
        for _ in 0..<3 { _ = h.served(ok: false, now: 32, policy: p, mayEject: true) }
        let capped = h.ejectedUntil
        #expect(capped == 57, "\(String(describing: capped)) \(h.ejections)")
        // A success in between resets the count; the group's limit can forbid an ejection.
        var g = ServerHealth()
        let results = [false, false, true, false, false].map { g.served(ok: $0, now: 0, policy: p, mayEject: true) }
        #expect(results == [false, false, false, false, false])
        let refused = g.served(ok: false, now: 0, policy: p, mayEject: false)
        #expect(!refused)
        #expect(g.usable(now: 0))
    }

    @Test func retryBudgetBoundsRetries() {
        var budget = RetryBudget(ratio: 0.2, minPerSecond: 2)
        // Within one second: the minimum, then what the requests deposited.
        let value152 = budget.withdraw(now: 0.1) && budget.withdraw(now: 0.2)
        #expect(value152)
        let value153 = !budget.withdraw(now: 0.3)
        #expect(value153)
        for _ in 0..<10 { budget.deposit() }
        let value155 = budget.withdraw(now: 0.4) && budget.withdraw(now: 0.5)
        #expect(value155)
        let value156 = !budget.withdraw(now: 0.6)
        #expect(value156)
        // A new second brings the minimum back.
        let value158 = budget.withdraw(now: 1.1)
        #expect(value158)
    }
}
