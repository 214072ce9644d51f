/// Whether a back-end may get requests: active checks with rise and fall thresholds (as
/// HAProxy's `check inter rise fall`), and passive outlier detection that ejects a server after
/// consecutive failures for a time that grows with each ejection (as Envoy's outlier detection).

public struct ActiveCheckPolicy: Sendable, Equatable {
    public var path = "/"
    public var interval = 5.0
    public var timeout = 2.0
    /// Consecutive successes that bring a down server back.
    public var rise = 2
    /// Consecutive failures that take an up server down.
    public var fall = 3
    /// Statuses that count as healthy.
    public var expectedStatuses: ClosedRange<Int> = 200...399

    public init() {}
}

public struct OutlierPolicy: Sendable, Equatable {
    /// Consecutive 5xx answers or connect failures that eject a server (0: never).
    public var consecutiveFailures = 5
    /// The first ejection lasts this long, the n-th n times as long, up to `maxEjection`.
    public var baseEjection = 30.0
    public var maxEjection = 300.0
    /// Never eject more than this share of a group's servers at once.
    public var maxEjectedPercent = 50

    public init() {}
}

public struct ServerHealth: Sendable, Equatable {
    public enum Transition: Sendable, Equatable { case wentDown, cameUp }

    /// As the active checks see it (servers start up, as HAProxy's default).
    public private(set) var up = true
    var successes = 0
    var failures = 0
    var consecutiveErrors = 0
    public private(set) var ejectedUntil: Double?
    public private(set) var ejections = 0
    var lastEjection = -Double.infinity

    public init() {}

    public func usable(now: Double) -> Bool { up && !isEjected(now: now) }

    public func isEjected(now: Double) -> Bool { ejectedUntil.map { now < $0 } ?? false }

    /// The result of one active check; a transition when the thresholds are crossed.
    public mutating func checked(ok: Bool, policy: ActiveCheckPolicy) -> Transition? {
        if ok {
            failures = 0
            successes += 1
            if !up, successes >= policy.rise {
                up = true
                return .cameUp
            }
        } else {
            successes = 0
            failures += 1
            if up, failures >= policy.fall {
                up = false
                return .wentDown
            }
        }
        return nil
    }

    /// The result of a real request. Returns true when this ejects the server; `mayEject` says
    /// whether the group can lose one more server (`maxEjectedPercent`).
    public mutating func served(ok: Bool, now: Double, policy: OutlierPolicy, mayEject: Bool) -> Bool {
        if ok {
            consecutiveErrors = 0
            return false
        }
        consecutiveErrors += 1
        guard policy.consecutiveFailures > 0, consecutiveErrors >= policy.consecutiveFailures, !isEjected(now: now), mayEject else {
            return false
        }
        // A server that behaved for the longest ejection time starts over.
        if now - lastEjection > policy.maxEjection { ejections = 0 }
        ejections += 1
        lastEjection = now
        ejectedUntil = now + min(policy.baseEjection * Double(ejections), policy.maxEjection)
        consecutiveErrors = 0
        return true
    }
}

/// Finagle's retry budget: every request deposits `ratio` of a retry, every retry withdraws
/// one, and `minPerSecond` retries are always allowed, so retries add at most that share of load
/// to a struggling group instead of multiplying it.
public struct RetryBudget: Sendable, Equatable {
    public var ratio: Double
    public var minPerSecond: Int
    /// In thousandths of a retry, so that ten deposits of 0.2 make exactly two retries.
    var balance = 0
    var second = Int.min
    var retriesThisSecond = 0

    public init(ratio: Double = 0.2, minPerSecond: Int = 10) {
        self.ratio = ratio
        self.minPerSecond = minPerSecond
    }

    var perRequest: Int { Int((ratio * 1000).rounded()) }

    /// At most a thousand requests' worth is saved up.
    public mutating func deposit() { balance = min(balance + perRequest, max(perRequest * 1000, 1000)) }

    public mutating func withdraw(now: Double) -> Bool {
        let s = Int(now.rounded(.down))
        if s != second {
            second = s
            retriesThisSecond = 0
        }
        if retriesThisSecond < minPerSecond {
            retriesThisSecond += 1
            return true
        }
        if balance >= 1000 {
            balance -= 1000
            return true
        }
        return false
    }
}
