import CCompression
import Dispatch
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ProximaCache
import ProximaHTTP1
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One stored answer as a file: everything a `CacheEntry` is made of, followed by a CRC-32 of
/// all that precedes it. A file is only ever written under a temporary name and renamed into
/// place when complete, so a crash leaves either the old file, the new one, or a temporary
/// file that the next start deletes; the length fields and the checksum catch what a torn
/// write (power loss without `fsync`) or a damaged disk would leave, and the URL and
/// secondary key stored inside catch two keys whose file names collide.
///
/// Layout (integers big-endian): `PXC1`, u32 URL length, URL, u32 secondary-key length, key,
/// i64 request time, i64 response time, i64 Date (or i64.min), i64 Age, i64 lifetime,
/// u32 head length, the response head as received, u64 body length, body, u32 CRC-32.
enum StoredObject {
    static let magic: [UInt8] = Array("PXC1".utf8)
    /// Longest prefix (before the body) accepted: a URL and a head are far shorter.
    static let maxPrefix = 4 << 20

    struct Meta: Equatable {
        var url: String
        var varyKey: String
        var requestTime: Int
        var responseTime: Int
        var date: Int?
        var age: Int
        var lifetime: Int
        var head: ByteBuffer
        /// Where the body starts and how long it is.
        var bodyOffset: Int
        var bodyLength: Int
        /// The file's whole length, checksum included.
        var totalLength: Int { bodyOffset + bodyLength + 4 }
    }

    enum DecodeError: Error, Equatable {
        case needMore(Int)
        case malformed(String)
    }

    static func encode(url: String, _ entry: CacheEntry) -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(entry.size + url.utf8.count + 64)
        out.writeBytes(magic)
        out.writeInteger(UInt32(url.utf8.count))
        out.writeString(url)
        out.writeInteger(UInt32(entry.varyKey.utf8.count))
        out.writeString(entry.varyKey)
        for v in [entry.timing.requestTime, entry.timing.responseTime, entry.timing.date ?? Int.min, entry.timing.age, entry.lifetime] {
            out.writeInteger(Int64(v))
        }
        out.writeInteger(UInt32(entry.head.bytes.readableBytes))
        var head = entry.head.bytes
        out.writeBuffer(&head)
        out.writeInteger(UInt64(entry.body.readableBytes))
        var body = entry.body
        out.writeBuffer(&body)
        let crc = checksum(out)
        out.writeInteger(crc)
        return out
    }

    static func checksum(_ buffer: ByteBuffer) -> UInt32 {
        buffer.withUnsafeReadableBytes { raw -> UInt32 in
            var crc = crc32(0, nil, 0)
            var offset = 0
            // zlib's length is a 32-bit unsigned int.
            while offset < raw.count {
                let n = min(raw.count - offset, 1 << 30)
                crc = crc32(crc, raw.baseAddress!.advanced(by: offset).assumingMemoryBound(to: UInt8.self), UInt32(n))
                offset += n
            }
            return UInt32(truncatingIfNeeded: crc)
        }
    }

    /// Reads the part before the body; `.needMore(n)` when the prefix needs `n` bytes in all.
    static func decodeMeta(_ buffer: ByteBuffer) throws(DecodeError) -> Meta {
        var b = buffer
        func need(_ n: Int) throws(DecodeError) {
            if b.readableBytes < n { throw .needMore(buffer.readableBytes - b.readableBytes + n) }
        }
        func string(_ what: String, max: Int) throws(DecodeError) -> String {
            try need(4)
            let n = Int(b.readInteger(as: UInt32.self)!)
            guard n <= max else { throw .malformed("\(what) of \(n) bytes") }
            try need(n)
            guard let s = b.readString(length: n) else { throw .malformed(what) }
            return s
        }
        try need(4)
        guard b.readBytes(length: 4)! == magic else { throw .malformed("not a Proxima cache file") }
        let url = try string("URL", max: 1 << 20)
        let varyKey = try string("secondary key", max: 1 << 20)
        try need(40)
        var numbers: [Int] = []
        for _ in 0..<5 { numbers.append(Int(b.readInteger(as: Int64.self)!)) }
        try need(4)
        let headLength = Int(b.readInteger(as: UInt32.self)!)
        guard headLength <= maxPrefix else { throw .malformed("head of \(headLength) bytes") }
        try need(headLength + 8)
        let head = b.readSlice(length: headLength)!
        let bodyLength = b.readInteger(as: UInt64.self)!
        guard bodyLength < UInt64(Int.max / 2) else { throw .malformed("body of \(bodyLength) bytes") }
        return Meta(
            url: url, varyKey: varyKey, requestTime: numbers[0], responseTime: numbers[1], date: numbers[2] == Int.min ? nil : numbers[2],
            age: numbers[3], lifetime: numbers[4], head: head, bodyOffset: b.readerIndex - buffer.readerIndex, bodyLength: Int(bodyLength))
    }

    /// The entry a whole file holds, after checking its length and checksum.
    static func decode(_ file: ByteBuffer) throws(DecodeError) -> (Meta, CacheEntry) {
        let meta: Meta
        do { meta = try decodeMeta(file) } catch {
            if case .needMore = error { throw .malformed("truncated before the body") }
            throw error
        }
        guard file.readableBytes == meta.totalLength else {
            throw .malformed("\(file.readableBytes) bytes where \(meta.totalLength) were written")
        }
        let stored = file.getInteger(at: file.readerIndex + meta.totalLength - 4, as: UInt32.self)!
        guard checksum(file.getSlice(at: file.readerIndex, length: meta.totalLength - 4)!) == stored else { throw .malformed("checksum mismatch") }
        let body = file.getSlice(at: file.readerIndex + meta.bodyOffset, length: meta.bodyLength)!
        return (meta, try entry(meta, body: body))
    }

    static func entry(_ meta: Meta, body: ByteBuffer) throws(DecodeError) -> CacheEntry {
        guard case .complete(let head, _)? = try? HeadParser.parseResponse(meta.head, requestMethod: "GET", limits: HeadLimits(maxHeadBytes: maxPrefix)) else {
            throw .malformed("response head")
        }
        var fields: [(String, String)] = []
        for f in head.fields { fields.append((head.name(f), head.value(f))) }
        let facts = ResponseFacts(status: head.status, fields: fields, now: meta.responseTime)
        var timing = ResponseTiming(requestTime: meta.requestTime, responseTime: meta.responseTime, date: meta.date, age: nil)
        timing.age = meta.age
        return CacheEntry(head: head, body: body, facts: facts, timing: timing, lifetime: meta.lifetime, varyKey: meta.varyKey)
    }
}

struct DiskStoreError: Error, CustomStringConvertible {
    let description: String
}

/// The disk tier of the cache: one file per stored variant under `directory` (in 256
/// subdirectories by hash), an index in memory of what is there (URL → variants, least
/// recently used first out when the files' bytes pass `capacity`), rebuilt from the files'
/// prefixes at start. File work runs on its own threads, never on an event loop.
final class DiskStore: Sendable {
    let directory: String
    let capacity: Int
    let pool: NIOThreadPool
    /// Holds the directory's lock (`flock`) until `close()`; -1 once closed.
    private let lockFD: Mutex<Int32>

    struct Item: Sendable, Equatable {
        var varyKey: String
        var vary: [String]
        var file: String
        var size: Int
    }

    private struct Index {
        var lru: LRUStore<[Item]>
        /// Writes started and not committed; a removal while any runs is noted with the write
        /// count at that moment, so that a write begun earlier does not bring back what the
        /// removal took away (an invalidation after a POST must stick).
        var writesStarted = 0
        var inFlight = 0
        var removedAt: [String: Int] = [:]
        var loads = 0
        var failures = 0
        var queuedBytes = 0
        var skipped = 0
    }

    private let index: Mutex<Index>
    private let temporaryNames = ManagedCounter()

    /// Opens (creating it if needed) the store at `directory`: temporary files of an
    /// interrupted run are deleted, every other file's prefix is read into the index (files
    /// that are not whole are deleted), and what passes `capacity` is evicted, oldest first.
    init(directory: String, capacity: Int, pool: NIOThreadPool, maxQueuedBytes: Int = 64 << 20) throws {
        self.maxQueuedBytes = maxQueuedBytes
        let root = Self.normalized(directory)
        self.directory = root
        self.capacity = capacity
        self.pool = pool
        for dir in [root, root + "/tmp"] + (0..<256).map({ root + "/" + Self.hex2(UInt8($0)) }) {
            if mkdir(dir, 0o750) != 0, errno != EEXIST {
                throw DiskStoreError(description: "cache.disk.path: cannot create \(dir): \(String(cString: strerror(errno)))")
            }
        }
        let lockPath = self.directory + "/lock"
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw DiskStoreError(description: "cache.disk.path: cannot open \(lockPath): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            Glibc.close(fd)
            throw DiskStoreError(description: "cache.disk.path: \(root) is in use by another running Proxima")
        }
        self.lockFD = Mutex(fd)
        Self.removeAll(in: self.directory + "/tmp")
        // The 256 subdirectories are read in parallel: on a cold disk the scan waits on reads.
        let scanned = Mutex([(found: [(mtime: Int, url: String, item: Item)], corrupt: [String])](repeating: ([], []), count: 256))
        DispatchQueue.concurrentPerform(iterations: 256) { sub in
            let dir = root + "/" + Self.hex2(UInt8(sub))
            var found: [(mtime: Int, url: String, item: Item)] = []
            var corrupt: [String] = []
            for name in Self.names(in: dir) {
                let path = dir + "/" + name
                if let (meta, mtime) = Self.readMeta(path), let item = Self.item(meta, file: path) {
                    found.append((mtime, meta.url, item))
                } else {
                    corrupt.append(path)
                }
            }
            scanned.withLock { $0[sub] = (found, corrupt) }
        }
        let parts = scanned.withLock { $0 }
        var found = parts.flatMap(\.found)
        let corrupt = parts.flatMap(\.corrupt)
        for path in corrupt { unlink(path) }
        found.sort { $0.mtime < $1.mtime }
        var lru = LRUStore<[Item]>(capacity: capacity)
        var unwanted: [String] = []
        for f in found {
            unwanted += Self.place(f.item, of: f.url, in: &lru)
        }
        for path in unwanted { unlink(path) }
        self.index = Mutex(Index(lru: lru))
        self.removedCorrupt = corrupt.count
    }

    static func normalized(_ directory: String) -> String {
        var d = directory
        while d.count > 1, d.hasSuffix("/") { d.removeLast() }
        return d
    }

    /// Files found damaged or incomplete at start (and deleted).
    let removedCorrupt: Int

    deinit { close() }

    /// Lets the directory go (a server shutting down): another store may open it now. Writes
    /// still queued find the pool shut down and are dropped.
    func close() {
        lockFD.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }

    /// Puts `item` first among `url`'s variants (replacing the one with its secondary key;
    /// a new `Vary` makes the others meaningless; eight at most) and returns the files no
    /// longer indexed: variants let go and whole URLs evicted to make room.
    static func place(_ item: Item, of url: String, in lru: inout LRUStore<[Item]>) -> [String] {
        var variants = lru.peek(url) ?? []
        var dropped = variants.filter { $0.file != item.file && ($0.varyKey == item.varyKey || $0.vary != item.vary) }.map(\.file)
        variants.removeAll { $0.varyKey == item.varyKey || $0.vary != item.vary }
        variants.insert(item, at: 0)
        if variants.count > 8 {
            dropped += variants[8...].map(\.file)
            variants.removeLast(variants.count - 8)
        }
        for (_, evicted) in lru.insert(url, variants, size: variants.reduce(0) { $0 + $1.size }) {
            dropped += evicted.map(\.file).filter { $0 != item.file }
        }
        // Larger than the whole store: not kept.
        if lru.peek(url)?.contains(item) != true { dropped.append(item.file) }
        return dropped
    }

    var count: Int { index.withLock { $0.lru.count } }
    var totalSize: Int { index.withLock { $0.lru.totalSize } }
    /// Objects read from disk, and reads that found a damaged file.
    var loads: (done: Int, failed: Int) { index.withLock { ($0.loads, $0.failures) } }
    /// Writes skipped because too many bytes were waiting to be written.
    var skippedWrites: Int { index.withLock { $0.skipped } }

    /// The stored variant of `url` whose secondary key matches this request, if any.
    func lookup(_ url: String, header: (String) -> [String]) -> Item? {
        guard let variants = index.withLock({ $0.lru.get(url) }) else { return nil }
        return variants.first { CachePolicy.varyKey($0.vary, header: header) == $0.varyKey }
    }

    func contains(_ url: String) -> Bool { index.withLock { $0.lru.peek(url) != nil } }

    /// Reads `item` of `url` on the store's threads; nil (and the file deleted) when it is no
    /// longer there or not whole.
    func load(_ url: String, _ item: Item, on loop: EventLoop) -> EventLoopFuture<CacheEntry?> {
        pool.runIfActive(eventLoop: loop) { [self] () -> CacheEntry? in
            guard let file = Self.readFile(item.file) else {
                forget(url, item, failed: false)
                return nil
            }
            guard let (meta, entry) = try? StoredObject.decode(file), meta.url == url, meta.varyKey == item.varyKey else {
                unlink(item.file)
                forget(url, item, failed: true)
                return nil
            }
            index.withLock { $0.loads += 1 }
            return entry
        }.recover { _ in nil }
    }

    private func forget(_ url: String, _ item: Item, failed: Bool) {
        index.withLock { ix in
            if failed { ix.failures += 1 }
            guard var variants = ix.lru.peek(url), variants.contains(item) else { return }
            variants.removeAll { $0 == item }
            if variants.isEmpty { ix.lru.remove(url) } else { ix.lru.insert(url, variants, size: variants.reduce(0) { $0 + $1.size }) }
        }
    }

    /// Writes `entry` in the background: to a temporary file, renamed into place when whole.
    func write(_ url: String, _ entry: CacheEntry) {
        let size = entry.size
        let ticket = index.withLock { ix -> Int? in
            // A disk slower than the answers coming in: the write is skipped rather than queued
            // without end (each queued write holds its answer in memory).
            guard ix.queuedBytes + size <= maxQueuedBytes || ix.inFlight == 0 else {
                ix.skipped += 1
                return nil
            }
            ix.writesStarted += 1
            ix.inFlight += 1
            ix.queuedBytes += size
            return ix.writesStarted
        }
        guard let ticket else {
            // What the disk holds for the URL is now older than what was just received.
            remove(url)
            return
        }
        let temporary = directory + "/tmp/" + String(temporaryNames.next())
        let file = path(url: url, varyKey: entry.varyKey)
        pool.submit { [self] state in
            var written = false
            if state == .active {
                let bytes = StoredObject.encode(url: url, entry)
                written = Self.writeFile(temporary, bytes)
                if written {
                    commit(url, ticket: ticket, queued: size, temporary: temporary, item: Item(varyKey: entry.varyKey, vary: entry.facts.vary, file: file, size: bytes.readableBytes))
                    return
                }
            }
            unlink(temporary)
            index.withLock { ix in
                ix.queuedBytes -= size
                ix.inFlight -= 1
                if ix.inFlight == 0 { ix.removedAt = [:] }
            }
        }
    }

    /// Bytes of answers waiting to be written at most (see `write`).
    let maxQueuedBytes: Int

    /// Renames a written file into place and indexes it, unless its URL was removed after the
    /// write began. Under the index lock, so a removal sees either the file in place or the
    /// write not yet committed.
    private func commit(_ url: String, ticket: Int, queued: Int, temporary: String, item: Item) {
        let unwanted = index.withLock { ix -> [String] in
            defer {
                ix.queuedBytes -= queued
                ix.inFlight -= 1
                if ix.inFlight == 0 { ix.removedAt = [:] }
            }
            if let removed = ix.removedAt[url], removed >= ticket { return [temporary] }
            guard rename(temporary, item.file) == 0 else { return [temporary] }
            return Self.place(item, of: url, in: &ix.lru)
        }
        for path in unwanted { unlink(path) }
    }

    /// Removes `url`'s variants from the index and their files from the disk.
    func remove(_ url: String) {
        let files = index.withLock { ix -> [String] in
            if ix.inFlight > 0 { ix.removedAt[url] = ix.writesStarted }
            return (ix.lru.remove(url) ?? []).map(\.file)
        }
        guard !files.isEmpty else { return }
        pool.submit { _ in for f in files { unlink(f) } }
    }

    func path(url: String, varyKey: String) -> String {
        let h = Self.fnv1a(url + "\n" + varyKey)
        return directory + "/" + Self.hex2(UInt8(truncatingIfNeeded: h >> 56)) + "/" + String(h, radix: 16)
    }

    // MARK: files

    static func fnv1a(_ s: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return h
    }

    static func hex2(_ b: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(b >> 4)], digits[Int(b & 15)]])
    }

    static func item(_ meta: StoredObject.Meta, file: String) -> Item? {
        guard let entry = try? StoredObject.entry(meta, body: ByteBuffer()) else { return nil }
        return Item(varyKey: meta.varyKey, vary: entry.facts.vary, file: file, size: meta.totalLength)
    }

    static func names(in dir: String) -> [String] {
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
            if name != ".", name != ".." { names.append(name) }
        }
        return names
    }

    static func removeAll(in dir: String) {
        for name in names(in: dir) { unlink(dir + "/" + name) }
    }

    /// The prefix of a file and its modification time; nil when the file is not whole.
    static func readMeta(_ path: String) -> (StoredObject.Meta, Int)? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        var want = min(Int(st.st_size), 16 << 10)
        while true {
            guard let prefix = readBytes(fd, count: want) else { return nil }
            do {
                let meta = try StoredObject.decodeMeta(prefix)
                guard meta.totalLength == Int(st.st_size) else { return nil }
                return (meta, Int(st.st_mtim.tv_sec))
            } catch {
                guard case .needMore(let n) = error, n <= StoredObject.maxPrefix, n <= Int(st.st_size), n > want else { return nil }
                want = n
            }
        }
    }

    /// The first `count` bytes of an open file; nil when it has fewer.
    static func readBytes(_ fd: Int32, count: Int) -> ByteBuffer? {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(count)
        var done = 0
        while done < count {
            let n = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 0) { raw in
                max(0, Glibc.pread(fd, raw.baseAddress!, min(raw.count, count - done), off_t(done)))
            }
            if n == 0 { return nil }
            done += n
        }
        return buffer
    }

    static func readFile(_ path: String) -> ByteBuffer? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        return readBytes(fd, count: Int(st.st_size))
    }

    static func writeFile(_ path: String, _ bytes: ByteBuffer) -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o640)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        return bytes.withUnsafeReadableBytes { raw -> Bool in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress!.advanced(by: offset), raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += n
            }
            return true
        }
    }
}

/// Unique numbers for temporary file names.
final class ManagedCounter: Sendable {
    private let value = Atomic<Int>(0)
    func next() -> Int { value.add(1, ordering: .relaxed).newValue }
}
