import Atomics
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ProximaCache
import ProximaConfig
import ProximaHTTP1
import ProximaTesting
import Testing

@testable import ProximaServer

#if canImport(Glibc)
import Glibc
#endif

/// A fresh empty directory under /tmp, removed by `removeTree` at the end of a test.
func makeTempDirectory(_ prefix: String) -> String {
    var template = Array("/tmp/\(prefix).XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
}

func removeTree(_ path: String) {
    try? FileManager.default.removeItem(atPath: path)
}

/// Every regular file under `dir` (the store's subdirectories included).
func filesUnder(_ dir: String) -> [String] {
    guard let e = FileManager.default.enumerator(atPath: dir) else { return [] }
    var out: [String] = []
    for case let p as String in e {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: dir + "/" + p, isDirectory: &isDir), !isDir.boolValue { out.append(dir + "/" + p) }
    }
    return out
}

/// The answers the crash test's origin sends: a body that names its object and cannot be
/// mistaken for another's (a mixed or wrong object shows), of a size that varies by object.
enum NumberedObjects {
    static let count = 400
    static func size(_ i: Int) -> Int { [700, 3_000, 20_000, 60_000, 9_000][i % 5] + i }

    /// Made once, from bytes: the origin answers on the event loop that every test shares, and
    /// building 60 KB strings a character at a time there (in a debug build) held up other
    /// tests' connections.
    static let bodies: [String] = (0..<count).map { i in
        let letters = Array("abcdefghijklmnopqrstuvwxyz".utf8)
        var bytes = Array("object \(i):".utf8)
        bytes.reserveCapacity(size(i))
        var j = 0
        while bytes.count < size(i) {
            bytes.append(letters[(j * 31 + i * 7) % 26])
            j += 1
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func body(_ i: Int) -> String { bodies[i] }

    static func origin() async throws -> RawOrigin {
        try await RawOrigin.start(closeAfter: false) { head in
            let path = head.split(separator: " ").dropFirst().first.map(String.init) ?? "/"
            guard path.hasPrefix("/obj/"), let i = Int(path.dropFirst(5)), i < count else {
                return "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
            }
            let body = body(i)
            return "HTTP/1.1 200 OK\r\nCache-Control: max-age=3600\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body
        }
    }
}

@Suite("HTTP cache: the disk store")
struct DiskCacheTests {
    static func entry(body: String, varyKey: String = "", extra: String = "") -> CacheEntry {
        let text = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nETag: \"e1\"\r\n\(extra)Content-Length: \(body.utf8.count)\r\n\r\n"
        guard case .complete(let head, _)? = try? HeadParser.parseResponse(ByteBuffer(string: text), requestMethod: "GET") else {
            fatalError("test head does not parse")
        }
        var fields: [(String, String)] = []
        for f in head.fields { fields.append((head.name(f), head.value(f))) }
        let facts = ResponseFacts(status: 200, fields: fields, now: 1_000)
        return CacheEntry(
            head: head, body: ByteBuffer(string: body), facts: facts, timing: ResponseTiming(requestTime: 999, responseTime: 1_000, date: 998, age: 3),
            lifetime: 60, varyKey: varyKey)
    }

    @Test func aStoredObjectReadsBackAndAnyDamageIsCaught() throws {
        let original = Self.entry(body: "hello, disk", varyKey: "accept-language=de", extra: "Vary: Accept-Language\r\n")
        let file = StoredObject.encode(url: "http://www.example/a?b", original)
        let (meta, entry) = try StoredObject.decode(file)
        #expect(meta.url == "http://www.example/a?b" && meta.varyKey == "accept-language=de")
        #expect(entry.head.bytes == original.head.bytes && entry.body == original.body)
        #expect(entry.timing == original.timing && entry.lifetime == 60 && entry.facts.vary == ["accept-language"])
        #expect(entry.facts.etag == "\"e1\"")

        // Every truncation, every changed byte and anything appended is refused.
        for length in 0..<file.readableBytes {
            #expect(throws: StoredObject.DecodeError.self) { try StoredObject.decode(file.getSlice(at: 0, length: length)!) }
        }
        for position in 0..<file.readableBytes {
            var damaged = file
            damaged.setInteger(file.getInteger(at: position, as: UInt8.self)! ^ 0x20, at: position)
            #expect(throws: StoredObject.DecodeError.self, "byte \(position)") { try StoredObject.decode(damaged) }
        }
        var longer = file
        longer.writeString("x")
        #expect(throws: StoredObject.DecodeError.self) { try StoredObject.decode(longer) }

        // The prefix alone (what a start reads) says how many bytes it needs.
        guard case .needMore(let n)? = catchMeta(file.getSlice(at: 0, length: 10)!) else {
            Issue.record("a short prefix must ask for more")
            return
        }
        #expect(n > 10)
        #expect(try StoredObject.decodeMeta(file).bodyOffset == file.readableBytes - 4 - 11)
    }

    func catchMeta(_ b: ByteBuffer) -> StoredObject.DecodeError? {
        do {
            _ = try StoredObject.decodeMeta(b)
            return nil
        } catch { return error }
    }

    /// Writes land, a second store reads them back, damaged and temporary files are deleted
    /// at start, the least recently used URLs go first past the size, purges delete files,
    /// and one directory serves one store at a time.
    @Test func theStoreSurvivesReopeningAndStaysWithinItsSize() async throws {
        let dir = makeTempDirectory("proxima-disk")
        defer { removeTree(dir) }
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let body = String(repeating: "b", count: 2_000)
        let size = StoredObject.encode(url: "http://h/0", Self.entry(body: body)).readableBytes

        var store: DiskStore? = try DiskStore(directory: dir, capacity: size * 3 + 10, pool: pool)
        #expect(throws: DiskStoreError.self) { _ = try DiskStore(directory: dir, capacity: 1 << 20, pool: pool) }
        for i in 0..<3 {
            // One at a time, so that the order of use is known.
            store!.write("http://h/\(i)", Self.entry(body: body))
            #expect(await eventually { store!.count == i + 1 })
        }
        _ = store!.lookup("http://h/0") { _ in [] }  // h/0 is now the most recently used
        store!.write("http://h/3", Self.entry(body: body))
        #expect(await eventually { store!.count == 3 && !store!.contains("http://h/1") })
        #expect(store!.totalSize <= store!.capacity)
        #expect(await eventually { filesUnder(dir).filter { !$0.hasSuffix("/lock") }.count == 3 }, "the evicted file is deleted")
        store!.remove("http://h/2")
        #expect(await eventually { filesUnder(dir).filter { !$0.hasSuffix("/lock") }.count == 2 })

        let item = try #require(store!.lookup("http://h/0") { _ in [] })
        let read = try await store!.load("http://h/0", item, on: loop).get()
        #expect(read.map { String(buffer: $0.body) } == body)
        store!.close()
        store = nil

        // What a crash leaves: a temporary file, a truncated object, garbage.
        writeFile(dir + "/tmp/17", "half-written")
        let kept = filesUnder(dir).filter { !$0.hasSuffix("/lock") && !$0.hasPrefix(dir + "/tmp/") }
        let truncated = try #require(kept.first)
        let whole = try #require(FileManager.default.contents(atPath: truncated))
        _ = FileManager.default.createFile(atPath: truncated, contents: whole.prefix(whole.count / 2))
        writeFile(dir + "/ab/garbage", "not a cache file")

        let reopened = try DiskStore(directory: dir, capacity: size * 3 + 10, pool: pool)
        defer { reopened.close() }
        #expect(reopened.count == 1 && reopened.removedCorrupt == 2)
        #expect(filesUnder(dir).filter { !$0.hasSuffix("/lock") }.count == 1, "\(filesUnder(dir))")
        let survivor = try #require(["http://h/0", "http://h/3"].first { reopened.contains($0) })
        let again = try await reopened.load(survivor, try #require(reopened.lookup(survivor) { _ in [] }), on: loop).get()
        #expect(again.map { String(buffer: $0.body) } == body)

        // A file damaged after the start is caught when read, dropped, and counted.
        let last = try #require(filesUnder(dir).first { !$0.hasSuffix("/lock") })
        var bytes = try #require(FileManager.default.contents(atPath: last))
        bytes[bytes.count - 100] ^= 1
        _ = FileManager.default.createFile(atPath: last, contents: bytes)
        let damaged = try await reopened.load(survivor, try #require(reopened.lookup(survivor) { _ in [] }), on: loop).get()
        #expect(damaged == nil && !reopened.contains(survivor) && reopened.loads.failed == 1)
        #expect(!FileManager.default.fileExists(atPath: last))
        try await pool.shutdownGracefully()
    }

    /// A disk slower than the answers coming in: writes past the queue's bytes are skipped, and
    /// what the disk held for that URL is dropped (it is older than what memory now holds).
    @Test func writesAreSkippedWhenTheDiskLagsBehind() async throws {
        let dir = makeTempDirectory("proxima-disk")
        defer { removeTree(dir) }
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let entry = Self.entry(body: String(repeating: "q", count: 1_000))
        let store = try DiskStore(directory: dir, capacity: 1 << 20, pool: pool, maxQueuedBytes: entry.size + 10)
        defer { store.close() }
        store.write("http://h/old", entry)
        #expect(await eventually { store.count == 1 })
        // The store's only thread is held: the next write waits, the one after is skipped.
        let held = NIOLockedValueBox(true)
        pool.submit { _ in
            let deadline = ContinuousClock.now + .seconds(10)
            while held.withLockedValue({ $0 }), ContinuousClock.now < deadline { usleep(1_000) }
        }
        store.write("http://h/a", entry)
        store.write("http://h/old", entry)
        #expect(store.skippedWrites == 1 && !store.contains("http://h/old"), "the older file of a skipped URL is dropped")
        held.withLockedValue { $0 = false }
        #expect(await eventually { store.contains("http://h/a") })
        try await pool.shutdownGracefully()
    }

    static func reverseWithDisk(_ c: inout ProximaConfiguration, origin: Int, dir: String) {
        CacheTests.reverse(&c, origin: origin)
        c.cache.memory = ByteSize(bytes: 1 << 20)
        c.cache.maxObject = ByteSize(bytes: 1 << 20)
        c.cache.disk = DiskCacheConfig(path: dir, size: ByteSize(bytes: 16 << 20))
    }

    /// Answers stored on disk are there after a restart, served without asking the origin,
    /// and logged as TCP_HIT; a purge deletes them for good.
    @Test func answersOnDiskSurviveARestart() async throws {
        let origin = try await CacheTests.origin()
        defer { Task { await origin.stop() } }
        let dir = makeTempDirectory("proxima-disk")
        defer { removeTree(dir) }
        try await ProxyHarness.withProxy({ c in Self.reverseWithDisk(&c, origin: origin.port, dir: dir) }) { (proxy: RunningProxy) async throws in
            #expect(try await CacheTests.get(proxy, "/item").body == "answer 1")
            #expect(try await CacheTests.get(proxy, "/gone").body == "answer 2")
            #expect(await eventually { proxy.server.cacheSummary?.contains("2 URLs, 0.0 MiB of 16.0 MiB on disk") == true }, "\(proxy.server.cacheSummary ?? "")")
        }
        try await ProxyHarness.withProxy({ c in Self.reverseWithDisk(&c, origin: origin.port, dir: dir) }) { (proxy: RunningProxy) async throws in
            let hit = try await CacheTests.get(proxy, "/item")
            #expect(hit.body == "answer 1" && hit.header("cache-status") == "proxima; hit", "\(hit.headers)")
            #expect(try await CacheTests.get(proxy, "/item").body == "answer 1")  // from memory now
            #expect(try await CacheTests.get(proxy, "/gone", method: "PURGE").status == 200)
            let results = jsonRecords(await proxy.waitForAccessLog(count: 3)).compactMap { $0["result"] as? String }
            #expect(Array(results.prefix(2)) == ["TCP_HIT", "TCP_MEM_HIT"], "\(results)")
        }
        try await ProxyHarness.withProxy({ c in Self.reverseWithDisk(&c, origin: origin.port, dir: dir) }) { (proxy: RunningProxy) async throws in
            #expect(try await CacheTests.get(proxy, "/gone").body == "answer 3", "purged answers stay purged")
            #expect(try await CacheTests.get(proxy, "/item").body == "answer 1")
        }
    }

    /// A reload with other memory settings makes a new memory tier but keeps the disk store of
    /// the same directory (a second store there would be refused: one store per directory).
    @Test func aReloadKeepsTheDiskStore() async throws {
        let origin = try await CacheTests.origin()
        defer { Task { await origin.stop() } }
        let dir = makeTempDirectory("proxima-disk")
        defer { removeTree(dir) }
        try await ProxyHarness.withProxy({ c in Self.reverseWithDisk(&c, origin: origin.port, dir: dir) }) { (proxy: RunningProxy) async throws in
            #expect(try await CacheTests.get(proxy, "/item").body == "answer 1")
            #expect(await eventually { proxy.server.cacheSummary?.contains("1 URL, 0.0 MiB of 16.0 MiB on disk") == true })
            var next = proxy.server.configuration
            next.listeners[0].address.port = proxy.port
            next.cache.memory = ByteSize(bytes: 2 << 20)
            try await proxy.server.reload(next)
            let hit = try await CacheTests.get(proxy, "/item")
            #expect(hit.body == "answer 1" && hit.header("cache-status") == "proxima; hit")
            let results = jsonRecords(await proxy.waitForAccessLog(count: 2)).compactMap { $0["result"] as? String }
            #expect(results == ["TCP_MISS", "TCP_HIT"], "the new memory tier is empty: the hit comes from disk")
        }
    }

    /// `kill -9` of the real binary while it stores answers as fast as clients fetch them:
    /// after a restart, every answer it serves from the store is byte for byte the one the
    /// origin sent for that URL, and every object whose file was whole before the kill is
    /// served. A file cut short and one with a changed byte (what a torn write or a bad disk
    /// leaves) are never served.
    @Test func killNineDuringWritesNeverServesADamagedObject() async throws {
        let origin = try await NumberedObjects.origin()
        defer { Task { await origin.stop() } }
        let dir = makeTempDirectory("proxima-crash")
        defer { removeTree(dir) }
        let yaml = """
            listeners:
              - {name: site, role: reverse, address: 127.0.0.1:0}
            access:
              - {name: anyone, action: allow, clients: [127.0.0.0/8]}
            upstreams:
              - {name: origin, servers: [{address: 127.0.0.1:\(origin.port)}]}
            routes:
              - {name: all, upstream: origin}
            cache:
              memory: 1MiB
              max_object: 1MiB
              disk: {path: \(dir), size: 256MiB}
            logging:
              level: notice
              access: []
            """
        let objects = NumberedObjects.count
        _ = NumberedObjects.bodies  // made before the origin answers
        let first = try await offThePool { try ProximaProcess(yaml: yaml) }
        defer { if first.process.isRunning { first.signal(SIGKILL) } }
        let stop = ManagedAtomic(false)
        let next = ManagedAtomic(0)
        // Four clients fetch distinct objects until the kill; each answer must be right.
        let loaders = Task {
            try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        var wrong = 0
                        while !stop.load(ordering: .relaxed) {
                            let i = next.wrappingIncrementThenLoad(ordering: .relaxed) - 1
                            if i >= objects { break }
                            guard let r = try? await RawClient.exchange(port: first.port, send: ["GET /obj/\(i) HTTP/1.1\r\nHost: site\r\n\r\n"], timeout: .seconds(10), until: { completeResponseCount($0) >= 1 }) else { continue }
                            if let reply = parseReplies(r.text).first, reply.status == 200, reply.body != NumberedObjects.body(i) { wrong += 1 }
                        }
                        return wrong
                    }
                }
                return try await group.reduce(0, +)
            }
        }
        func stored() -> [String] { filesUnder(dir).filter { !$0.hasSuffix("/lock") && !$0.hasPrefix(dir + "/tmp/") } }
        #expect(await eventually(timeout: .seconds(60)) { stored().count >= 100 }, "the store must fill while clients fetch")
        first.signal(SIGKILL)
        _ = try await offThePool { first.waitForExit() }
        stop.store(true, ordering: .relaxed)
        let wrongBeforeKill = try await loaders.value
        #expect(wrongBeforeKill == 0)
        try await offThePool { first.stop() }

        let whole = stored()
        #expect(whole.count >= 100)
        // Damage two of the whole files as a torn write or a bad disk would.
        let cut = whole[0], flipped = whole[1]
        let cutBytes = try #require(FileManager.default.contents(atPath: cut))
        _ = FileManager.default.createFile(atPath: cut, contents: cutBytes.prefix(cutBytes.count - 7))
        var flippedBytes = try #require(FileManager.default.contents(atPath: flipped))
        flippedBytes[flippedBytes.count / 2] ^= 0x01
        _ = FileManager.default.createFile(atPath: flipped, contents: flippedBytes)

        let second = try await offThePool { try ProximaProcess(yaml: yaml) }
        defer { if second.process.isRunning { second.signal(SIGKILL) } }
        let seenBefore = origin.requestsSeen
        var served = 0, wrong = 0, missing = 0
        for i in 0..<objects {
            let r = try await RawClient.exchange(
                port: second.port, send: ["GET /obj/\(i) HTTP/1.1\r\nHost: site\r\nCache-Control: only-if-cached\r\n\r\n"], timeout: .seconds(10),
                until: { completeResponseCount($0) >= 1 })
            let reply = try #require(parseReplies(r.text).first)
            switch reply.status {
            case 200:
                served += 1
                if reply.body != NumberedObjects.body(i) { wrong += 1 }
            case 504: missing += 1
            default: Issue.record("object \(i): status \(reply.status)")
            }
        }
        #expect(wrong == 0, "\(wrong) objects served with the wrong bytes")
        // Every file that was whole is served, except the two damaged ones.
        #expect(served >= whole.count - 2, "served \(served) of \(whole.count) whole files, \(missing) not in the cache")
        #expect(origin.requestsSeen == seenBefore, "only-if-cached never reaches the origin")
        try await offThePool { second.stop() }
    }
}
