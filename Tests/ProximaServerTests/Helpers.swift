import Foundation
import NIOCore
import ProximaTesting
import Testing

/// A response as a test sees it.
struct Reply {
    var status: Int
    var headers: [(String, String)]
    var body: String

    func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    func headers(_ name: String) -> [String] {
        headers.filter { $0.0.lowercased() == name.lowercased() }.map(\.1)
    }
}

/// Splits raw bytes into responses (Content-Length, chunked, or until the end). Works on bytes:
/// Swift treats "\r\n" as one Character, which makes string slicing of HTTP text treacherous.
func parseReplies(_ text: String, headRequest: Bool = false) -> [Reply] {
    parseRepliesCounting(Array(text.utf8), headRequest: headRequest).replies
}

func find(_ bytes: [UInt8], _ needle: [UInt8], from: Int) -> Int? {
    guard bytes.count >= needle.count, from <= bytes.count - needle.count else { return nil }
    var i = from
    while i <= bytes.count - needle.count {
        if bytes[i] == needle[0], Array(bytes[i..<(i + needle.count)]) == needle { return i }
        i += 1
    }
    return nil
}

let crlf: [UInt8] = [13, 10]
let crlfcrlf: [UInt8] = [13, 10, 13, 10]

/// Parses complete responses; `complete` counts final responses whose body fully arrived.
func parseRepliesCounting(_ bytes: [UInt8], headRequest: Bool = false) -> (replies: [Reply], complete: Int) {
    var pos = 0
    var out: [Reply] = []
    var complete = 0
    while let end = find(bytes, crlfcrlf, from: pos) {
        let headText = String(decoding: bytes[pos..<end], as: UTF8.self)
        pos = end + 4
        let lines = headText.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { break }
        var reply = Reply(status: status, headers: [], body: "")
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            reply.headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        if status < 200 { continue }
        if status == 204 || status == 304 || headRequest {
            out.append(reply)
            complete += 1
            continue
        }
        if reply.header("transfer-encoding")?.lowercased() == "chunked" {
            var body: [UInt8] = []
            var done = false
            while let lineEnd = find(bytes, crlf, from: pos) {
                let sizeText = String(decoding: bytes[pos..<lineEnd], as: UTF8.self).split(separator: ";").first.map(String.init) ?? ""
                guard let size = Int(sizeText, radix: 16) else { break }
                pos = lineEnd + 2
                if size == 0 {
                    while let tEnd = find(bytes, crlf, from: pos) {
                        if tEnd == pos {
                            pos += 2
                            done = true
                            break
                        }
                        let line = String(decoding: bytes[pos..<tEnd], as: UTF8.self)
                        if let colon = line.firstIndex(of: ":") {
                            reply.headers.append(("trailer:" + line[..<colon], line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
                        }
                        pos = tEnd + 2
                    }
                    break
                }
                guard pos + size + 2 <= bytes.count else {
                    body += bytes[pos...]
                    pos = bytes.count
                    break
                }
                body += bytes[pos..<(pos + size)]
                pos += size + 2
            }
            reply.body = String(decoding: body, as: UTF8.self)
            out.append(reply)
            if done { complete += 1 } else { break }
        } else if let cl = reply.header("content-length").flatMap({ Int($0) }) {
            let take = min(cl, bytes.count - pos)
            reply.body = String(decoding: bytes[pos..<(pos + take)], as: UTF8.self)
            pos += take
            out.append(reply)
            if take == cl { complete += 1 } else { break }
        } else {
            reply.body = String(decoding: bytes[pos...], as: UTF8.self)
            pos = bytes.count
            out.append(reply)
            break
        }
    }
    return (out, complete)
}

/// Sends raw request text to the proxy and parses what comes back (read until the proxy closes
/// or `responses` complete responses arrived).
func send(_ proxy: RunningProxy, _ requests: [String], responses: Int = 1, halfClose: Bool = false, timeout: TimeAmount = .seconds(10)) async throws -> (replies: [Reply], closed: Bool, raw: String) {
    let reply = try await RawClient.exchange(port: proxy.port, send: requests, halfClose: halfClose, timeout: timeout) { text in
        completeResponseCount(text) >= responses
    }
    return (parseReplies(reply.text), reply.closedByServer, reply.text)
}

/// How many complete final responses the text holds.
func completeResponseCount(_ text: String) -> Int {
    parseRepliesCounting(Array(text.utf8)).complete
}

func jsonRecords(_ lines: [String]) -> [[String: Any]] {
    lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
}

/// Runs a command line tool, returning its exit status and standard output. The waiting happens
/// on a thread of its own: blocking a thread of the concurrency pool (two on this machine)
/// delays every other test's tasks, past their timeouts.
@discardableResult
func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) async throws -> (status: Int32, output: String, error: String) {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try runBlocking(executable, arguments, environment: environment) })
        }
    }
}

func runBlocking(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, output: String, error: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    if let environment { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let out = Pipe()
    let err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

/// One headless browser at a time: three at once on two cores starved the other tests of CPU
/// for seconds.
actor BrowserSlot {
    static let shared = BrowserSlot()
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        if !busy {
            busy = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty { busy = false } else { waiting.removeFirst().resume() }
    }
}

func withBrowser<T>(_ body: () async throws -> T) async throws -> T {
    await BrowserSlot.shared.acquire()
    do {
        let result = try await body()
        await BrowserSlot.shared.release()
        return result
    } catch {
        await BrowserSlot.shared.release()
        throw error
    }
}

/// Polls `condition` until it holds or the deadline passes; no fixed sleeps.
func eventually(timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}

#if canImport(Glibc)
import Glibc
#endif

/// A loopback TCP listener with a zero backlog that never accepts, its queue already filled by
/// one connection: further connects to it hang (their SYNs are dropped).
final class BlackholeListener {
    let fd: Int32
    let filler: Int32
    let port: Int

    struct Failure: Error { var step: String }

    init() throws {
        let listenFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        let size = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listenFD, $0, size) } }
        guard bound == 0, listen(listenFD, 0) == 0 else { throw Failure(step: "bind/listen") }
        var len = size
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listenFD, $0, &len) } }
        let fillerFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let connected = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fillerFD, $0, size) } }
        guard connected == 0 else { throw Failure(step: "fill the queue") }
        fd = listenFD
        filler = fillerFD
        port = Int(UInt16(bigEndian: addr.sin_port))
    }

    func close() {
        _ = Glibc.close(filler)
        _ = Glibc.close(fd)
    }
}

/// Runs blocking work (waiting for a child process, reading its pipe) on a thread of its own:
/// the concurrency pool has two threads on this machine, and a test that blocks one of them
/// delays every other test's tasks, past their timeouts.
func offThePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
    }
}
