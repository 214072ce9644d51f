import NIOCore
import ProximaCache
import ProximaConfig
import ProximaHTTP1
import Synchronization

/// One stored response: its head as received (served through the same head writer as a
/// fetched answer, so hop-by-hop fields, header rules and `Via` apply alike), the body without
/// transfer coding, and what freshness needs.
final class CacheEntry: Sendable {
    let head: ResponseHead
    let body: ByteBuffer
    let facts: ResponseFacts
    let timing: ResponseTiming
    let lifetime: Int
    /// The request's values of the fields `Vary` names (the secondary key).
    let varyKey: String
    let size: Int
    /// What serving it leaves out of the stored head (its `Age` and `Cache-Status`), worked
    /// out once rather than on every hit.
    let servedEdit: HeaderEdit

    /// Fields of a stored head never sent from the store: those this cache adds itself, and
    /// those specific to the proxy the answer came through (RFC 9111 section 3.1).
    static let neverServed: Set<String> = ["age", "cache-status", "proxy-authenticate", "proxy-authentication-info", "proxy-authorization"]

    /// Unique per entry: a compressed copy names the entry it was made from, so a copy of an
    /// answer since replaced is never served.
    let serial: Int
    /// For a compressed copy: the coding, and the serial of the entry it was made from.
    let coding: ContentCoding?
    let derivedFrom: Int?

    private static let serials = ManagedCounter()

    init(
        head: ResponseHead, body: ByteBuffer, facts: ResponseFacts, timing: ResponseTiming, lifetime: Int, varyKey: String,
        coding: ContentCoding? = nil, derivedFrom: Int? = nil
    ) {
        self.serial = Self.serials.next()
        self.coding = coding
        self.derivedFrom = derivedFrom
        var edit = HeaderEdit()
        // `private="…"` fields must not be stored by a shared cache, `no-cache="…"` ones not sent
        // again without validation (RFC 9111 sections 5.2.2.4 and 5.2.2.7): both are left out.
        let withheld = Set(facts.cacheControl.privateFields + facts.cacheControl.noCacheFields)
        edit.drop(withheld.union(Self.neverServed), bytes: head.bytes, fields: head.fields)
        self.servedEdit = edit
        self.head = head
        self.body = body
        self.facts = facts
        self.timing = timing
        self.lifetime = lifetime
        self.varyKey = varyKey
        self.size = body.readableBytes + head.bytes.readableBytes + 512
    }
}

/// The memory cache shared by every connection: per URL, the stored variants (one per `Vary`
/// key), least recently used URLs evicted first when the bytes pass the limit. One lock, held
/// for a lookup or an insert, never across I/O.
final class HTTPCache: Sendable {
    let maxObjectSize: Int
    let heuristic: CachePolicy.Heuristic
    private let store: Mutex<MemoryTier>

    /// The memory tier: stored answers by URL, and compressed copies under keys of their own
    /// (counted apart, so that `count` says how many URLs are held).
    private struct MemoryTier {
        var lru: LRUStore<[CacheEntry]>
        var copies = 0

        static func isCopy(_ key: String) -> Bool { key.hasPrefix("\u{1}") }

        mutating func get(_ key: String) -> [CacheEntry]? { lru.get(key) }
        func peek(_ key: String) -> [CacheEntry]? { lru.peek(key) }

        mutating func insert(_ key: String, _ variants: [CacheEntry]) {
            let existed = lru.peek(key) != nil
            let evicted = lru.insert(key, variants, size: variants.reduce(0) { $0 + $1.size })
            guard Self.isCopy(key) || evicted.contains(where: { Self.isCopy($0.key) }) else { return }
            copies -= evicted.filter { Self.isCopy($0.key) && $0.key != key }.count
            if Self.isCopy(key) { copies += (lru.peek(key) != nil ? 1 : 0) - (existed ? 1 : 0) }
        }

        mutating func remove(_ key: String) {
            if lru.remove(key) != nil, Self.isCopy(key) { copies -= 1 }
        }
    }
    private let collapsing = Mutex(Collapsing())
    /// The disk tier, when configured: every stored answer is written there too, and a miss in
    /// memory looks there before going upstream.
    let disk: DiskStore?

    /// Misses being fetched, with the requests waiting for them; URLs recently found not
    /// storable, whose requests no longer wait (Varnish's hit-for-miss).
    private struct Collapsing {
        var fetching: [String: [@Sendable (Bool) -> Void]] = [:]
        var uncacheable: [String: Int] = [:]
        /// URLs being refreshed in the background (stale-while-revalidate): one at a time.
        var refreshing: Set<String> = []
    }

    /// How long a URL found not storable is fetched without waiting, seconds.
    static let uncacheableFor = 30
    static let maxUncacheable = 10_000

    /// The settings it was made from (a reload with the same ones keeps it).
    let config: CacheConfig

    init(config: CacheConfig, heuristic: CachePolicy.Heuristic = CachePolicy.Heuristic(), disk: DiskStore? = nil) {
        self.config = config
        self.disk = disk
        self.maxObjectSize = config.maxObject.bytes
        self.heuristic = heuristic
        self.store = Mutex(MemoryTier(lru: LRUStore(capacity: config.memory.bytes)))
    }

    enum MissRole { case leader, follower, alone }

    /// A miss on `key`: the first request fetches (leader); the next ones wait for it and are
    /// woken with whether it stored an answer (`wake` runs on whatever thread finishes).
    func miss(_ key: String, now: Int, wake: @escaping @Sendable (Bool) -> Void) -> MissRole {
        collapsing.withLock { c in
            if let until = c.uncacheable[key] {
                if until > now { return .alone }
                c.uncacheable[key] = nil
            }
            if c.fetching[key] != nil {
                c.fetching[key]!.append(wake)
                return .follower
            }
            c.fetching[key] = []
            return .leader
        }
    }

    func beginRefresh(_ key: String) -> Bool { collapsing.withLock { $0.refreshing.insert(key).inserted } }
    func endRefresh(_ key: String) { _ = collapsing.withLock { $0.refreshing.remove(key) } }

    /// The leader's fetch ended; `stored` says whether its answer is in the cache now.
    func fetched(_ key: String, stored: Bool, now: Int) {
        let waiting = collapsing.withLock { c -> [@Sendable (Bool) -> Void] in
            if !stored {
                if c.uncacheable.count >= Self.maxUncacheable { c.uncacheable = c.uncacheable.filter { $0.value > now } }
                if c.uncacheable.count < Self.maxUncacheable { c.uncacheable[key] = now + Self.uncacheableFor }
            }
            return c.fetching.removeValue(forKey: key) ?? []
        }
        for wake in waiting { wake(stored) }
    }

    /// The variant of `key` whose `Vary` fields match this request's.
    func lookup(_ key: String, header: (String) -> [String]) -> CacheEntry? {
        guard let variants = store.withLock({ $0.get(key) }) else { return nil }
        return variants.first { entry in
            CachePolicy.varyKey(entry.facts.vary, header: header) == entry.varyKey
        }
    }

    /// Stores `entry` under `key`, replacing the variant with the same secondary key, in memory
    /// and (in the background) on disk.
    func insert(_ key: String, _ entry: CacheEntry) {
        promote(key, entry)
        disk?.write(key, entry)
    }

    /// Puts an answer read from disk in memory too.
    func promote(_ key: String, _ entry: CacheEntry) {
        store.withLock { s in
            var variants = s.peek(key) ?? []
            variants.removeAll { $0.varyKey == entry.varyKey || $0.facts.vary != entry.facts.vary }
            variants.insert(entry, at: 0)
            // A URL holds a handful of variants at most (Accept-Encoding, Accept-Language).
            if variants.count > 8 { variants.removeLast(variants.count - 8) }
            s.insert(key, variants)
        }
    }

    /// Compressed copies of stored answers live in the memory tier under keys of their own, so
    /// they are evicted and sized like any answer; never on disk.
    static func encodedKey(_ key: String, _ coding: ContentCoding) -> String { "\u{1}\(coding.rawValue)\u{1}" + key }

    /// The compressed copy of `entry` (stored under `key`), if one was made from it.
    func encoded(_ key: String, of entry: CacheEntry, coding: ContentCoding) -> CacheEntry? {
        store.withLock { $0.get(Self.encodedKey(key, coding)) }?.first { $0.derivedFrom == entry.serial }
    }

    /// Keeps a compressed copy (one per coding and variant, replacing older ones).
    func insertEncoded(_ key: String, _ copy: CacheEntry) {
        guard let coding = copy.coding else { return }
        promote(Self.encodedKey(key, coding), copy)
    }

    func contains(_ key: String) -> Bool { store.withLock { $0.peek(key) != nil } || disk?.contains(key) == true }

    func remove(_ key: String) {
        store.withLock { s in
            s.remove(key)
            s.remove(Self.encodedKey(key, .br))
            s.remove(Self.encodedKey(key, .gzip))
        }
        disk?.remove(key)
    }

    var totalSize: Int { store.withLock { $0.lru.totalSize } }
    var capacity: Int { store.withLock { $0.lru.capacity } }
    /// URLs held in memory (compressed copies not counted).
    var count: Int { store.withLock { $0.lru.count - $0.copies } }
}

/// A response being stored while it passes to the client.
final class CacheCapture {
    let key: String
    let head: ResponseHead
    let facts: ResponseFacts
    let timing: ResponseTiming
    let varyKey: String
    let limit: Int
    var body: ByteBuffer
    /// Over the size limit: given up, the rest only passes through.
    var abandoned = false

    init(key: String, head: ResponseHead, facts: ResponseFacts, timing: ResponseTiming, varyKey: String, limit: Int, expected: Int?) {
        self.key = key
        self.head = head
        self.facts = facts
        self.timing = timing
        self.varyKey = varyKey
        self.limit = limit
        self.body = ByteBuffer()
        body.reserveCapacity(min(expected ?? 4096, limit))
    }

    func append(_ bytes: ByteBuffer) {
        guard !abandoned else { return }
        if body.readableBytes + bytes.readableBytes > limit {
            abandoned = true
            body = ByteBuffer()
            return
        }
        var b = bytes
        body.writeBuffer(&b)
    }
}
