import Testing

@testable import ProximaTelemetry

#if canImport(Glibc)
import Glibc
#endif

func sampleExchange() -> Exchange {
    var e = Exchange(startSeconds: 1_700_000_000, startNanoseconds: 7_000_000, client: "127.0.0.1", listener: "fwd")
    e.durationNanoseconds = 45_600_000
    e.method = "GET"
    e.url = "http://example.com/a"
    e.status = 200
    e.bytesIn = 120
    e.bytesOut = 1234
    e.upstream = "93.184.216.34:80"
    e.result = .miss
    e.contentType = "text/html; charset=utf-8"
    e.userAgent = "curl/8 \"quoted\""
    return e
}

@Suite("Access-log formats")
struct AccessLogFormatTests {
    @Test func squidNative() {
        var clock = LogClock()
        let line = AccessLogLineFormat.squid.line(sampleExchange(), clock: &clock)
        #expect(line == "1700000000.007     45 127.0.0.1 TCP_MISS/200 1234 GET http://example.com/a - HIER_DIRECT/93.184.216.34:80 text/html;%20charset=utf-8")
    }

    @Test func combined() {
        var clock = LogClock()
        let line = AccessLogLineFormat.combined.line(sampleExchange(), clock: &clock)
        #expect(line == "127.0.0.1 - - [14/Nov/2023:22:13:20 +0000] \"GET http://example.com/a HTTP/1.1\" 200 1234 \"-\" \"curl/8 \\\"quoted\\\"\"")
    }

    @Test func jsonLine() {
        var clock = LogClock()
        let line = AccessLogLineFormat.json.line(sampleExchange(), clock: &clock)
        #expect(line.hasPrefix("{\"time\":\"2023-11-14T22:13:20.007Z\",\"duration_ms\":45.6,\"client\":\"127.0.0.1\""))
        #expect(line.contains("\"result\":\"TCP_MISS\""))
        #expect(line.contains("\"user_agent\":\"curl/8 \\\"quoted\\\"\""))
        #expect(line.contains("\"detail\":null"))
    }

    @Test func jsonEscapesControlCharacters() {
        #expect(AccessLogLineFormat.jsonString("a\u{1}\n\"") == "\"a\\u0001\\n\\\"\"")
    }

    @Test(arguments: [(0, 1970, 1, 1, 0, 0, 0), (951_782_400, 2000, 2, 29, 0, 0, 0), (1_700_000_000, 2023, 11, 14, 22, 13, 20), (4_102_444_799, 2099, 12, 31, 23, 59, 59)])
    func civilTime(_ c: (Int, Int, Int, Int, Int, Int, Int)) {
        let t = CivilTime(c.0)
        #expect([t.year, t.month, t.day, t.hour, t.minute, t.second] == [c.1, c.2, c.3, c.4, c.5, c.6])
    }
}

@Suite("Access-log writer")
struct AccessLogWriterTests {
    @Test func writesEveryRecordToAFile() throws {
        let path = "/tmp/proxima-writer-test-\(getpid())-\(Int.random(in: 0..<1_000_000)).log"
        defer { unlink(path) }
        let writer = try AccessLogWriter([(.file(path), .squid)])
        for i in 0..<1000 {
            var e = sampleExchange()
            e.url = "http://example.com/\(i)"
            writer.record(e)
        }
        writer.shutdown()
        let f = fopen(path, "r")!
        var lines = 0
        var buf = [CChar](repeating: 0, count: 4096)
        while fgets(&buf, 4096, f) != nil { lines += 1 }
        fclose(f)
        #expect(lines == 1000)
    }

    @Test func boundedQueueDropsAndCounts() throws {
        let writer = try AccessLogWriter([], maxPending: 0)
        writer.record(sampleExchange())
        #expect(writer.droppedCount == 1)
    }

    @Test func unopenableFileIsAClearError() {
        #expect(throws: AccessLogWriter.OpenError.self) { _ = try AccessLogWriter([(.file("/nonexistent-dir/x.log"), .json)]) }
    }
}
