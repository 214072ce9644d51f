/// Entries by key with a size each, bounded by their total size: inserting past the capacity
/// evicts the least recently used entries first. A lookup or an insert makes an entry the most
/// recently used. All operations are O(1): a dictionary to slots of a doubly linked list kept
/// in an array (freed slots are reused).
public struct LRUStore<Value> {
    public let capacity: Int
    public private(set) var totalSize = 0

    struct Slot {
        var key: String
        var value: Value?
        var size: Int
        var previous: Int
        var next: Int
    }

    private var slots: [Slot] = []
    private var free: [Int] = []
    private var index: [String: Int] = [:]
    /// Most and least recently used slot (-1: none).
    private var head = -1
    private var tail = -1

    public init(capacity: Int) {
        self.capacity = capacity
    }

    public var count: Int { index.count }

    public func peek(_ key: String) -> Value? {
        index[key].flatMap { slots[$0].value }
    }

    /// The value, now the most recently used.
    public mutating func get(_ key: String) -> Value? {
        guard let i = index[key] else { return nil }
        moveToFront(i)
        return slots[i].value
    }

    /// Stores `value` (replacing one under the same key) and returns the entries evicted to
    /// make room (so that what they hold elsewhere, files say, can be let go). A value larger
    /// than the capacity is not stored: the entry under its key, if any, is returned as evicted.
    @discardableResult
    public mutating func insert(_ key: String, _ value: Value, size: Int) -> [(key: String, value: Value)] {
        guard size <= capacity else {
            return remove(key).map { [(key, $0)] } ?? []
        }
        remove(key)
        var evicted: [(key: String, value: Value)] = []
        while totalSize + size > capacity, tail >= 0 {
            let victim = slots[tail].key
            if let old = remove(victim) { evicted.append((victim, old)) }
        }
        let slot = Slot(key: key, value: value, size: size, previous: -1, next: head)
        let i: Int
        if let reused = free.popLast() {
            slots[reused] = slot
            i = reused
        } else {
            slots.append(slot)
            i = slots.count - 1
        }
        if head >= 0 { slots[head].previous = i }
        head = i
        if tail < 0 { tail = i }
        index[key] = i
        totalSize += size
        return evicted
    }

    @discardableResult
    public mutating func remove(_ key: String) -> Value? {
        guard let i = index.removeValue(forKey: key) else { return nil }
        unlink(i)
        totalSize -= slots[i].size
        let value = slots[i].value
        slots[i].value = nil
        slots[i].key = ""
        free.append(i)
        return value
    }

    /// Keys from the most to the least recently used (for tests and listings).
    public var keysByRecency: [String] {
        var keys: [String] = []
        var i = head
        while i >= 0 {
            keys.append(slots[i].key)
            i = slots[i].next
        }
        return keys
    }

    private mutating func unlink(_ i: Int) {
        let (p, n) = (slots[i].previous, slots[i].next)
        if p >= 0 { slots[p].next = n } else { head = n }
        if n >= 0 { slots[n].previous = p } else { tail = p }
        slots[i].previous = -1
        slots[i].next = -1
    }

    private mutating func moveToFront(_ i: Int) {
        guard head != i else { return }
        unlink(i)
        slots[i].next = head
        if head >= 0 { slots[head].previous = i }
        head = i
        if tail < 0 { tail = i }
    }
}

extension LRUStore: Sendable where Value: Sendable {}
extension LRUStore.Slot: Sendable where Value: Sendable {}
