import Foundation
import Testing

@testable import ProximaTelemetry

#if canImport(Glibc)
import Glibc
#endif

func tempPath(_ name: String) -> String {
    "/tmp/proxima-\(name)-\(UInt32.random(in: 0...UInt32.max))"
}

func fileLines(_ path: String) -> [String] {
    ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
}

@Suite("Custom log templates")
struct LogTemplateTests {
    @Test func rendersEveryFieldAndEscapes() throws {
        let t = try LogTemplate(#"$client [$time_local] "$method $url $version" $status $bytes_out ${bytes_in}b $result $upstream "$user_agent" $request_id $msec$"#)
        var e = sampleExchange()
        e.requestID = "abc"
        var out: [UInt8] = []
        var clock = LogClock()
        t.appendLine(e, to: &out, clock: &clock)
        #expect(String(decoding: out, as: UTF8.self) ==
            #"127.0.0.1 [14/Nov/2023:22:13:20 +0000] "GET http://example.com/a HTTP/1.1" 200 1234 120b TCP_MISS 93.184.216.34:80 "curl/8 \x22quoted\x22" abc 1700000000.007$"# + "\n")
        e.referer = nil
        e.url = "http://x/\n\"forged"
        out = []
        try LogTemplate("$url|$referer|$detail").appendLine(e, to: &out, clock: &clock)
        #expect(String(decoding: out, as: UTF8.self) == #"http://x/\x0A\x22forged|-|-"# + "\n")
    }

    @Test func everyFieldIsKnownAndMistakesAreReported() throws {
        for f in LogTemplate.Field.allCases { _ = try LogTemplate("$" + f.rawValue) }
        #expect(throws: LogTemplate.ParseError.unknownField("remote_addr")) { try LogTemplate("$remote_addr") }
        #expect(throws: LogTemplate.ParseError.unterminatedBrace) { try LogTemplate("${status") }
        #expect(throws: LogTemplate.ParseError.empty) { try LogTemplate("") }
        // A '$' not followed by a name is text.
        var out: [UInt8] = []
        var clock = LogClock()
        try LogTemplate("cost: $ $status").appendLine(sampleExchange(), to: &out, clock: &clock)
        #expect(String(decoding: out, as: UTF8.self) == "cost: $ 200\n")
    }
}

@Suite("Access-log files: size rotation and reopening")
struct FileRotationTests {
    @Test func rotatesBySizeKeepingTheNewestFiles() throws {
        let path = tempPath("rotate")
        defer { for n in ["", ".1", ".2", ".3", ".4"] { unlink(path + n) } }
        let w = try AccessLogWriter(outputs: [AccessLogOutput(.file(path), .squid, rotation: FileRotation(maxBytes: 4096, keep: 2))])
        var total = 0
        for batch in 0..<30 {
            for i in 0..<10 {
                var e = sampleExchange()
                e.url = "http://example.com/\(batch)-\(i)"
                w.record(e)
                total += 1
            }
            w.flush()
        }
        w.shutdown()
        #expect(FileManager.default.fileExists(atPath: path + ".1"))
        #expect(FileManager.default.fileExists(atPath: path + ".2"))
        #expect(!FileManager.default.fileExists(atPath: path + ".3"))
        for f in [path, path + ".1", path + ".2"] {
            let size = (try? FileManager.default.attributesOfItem(atPath: f)[.size] as? Int) ?? 0
            #expect(size <= 4096 + 2000, "\(f) is \(size) bytes")
        }
        // The newest lines are in the current file, the ones before in .1, then .2.
        #expect(fileLines(path).last?.contains("http://example.com/29-9") == true)
        let kept = fileLines(path + ".2") + fileLines(path + ".1") + fileLines(path)
        let numbers = kept.compactMap { $0.split(separator: " ").first { $0.hasPrefix("http://") } }
        #expect(numbers.last == "http://example.com/29-9")
        #expect(numbers.count < total && numbers.count > 40)
        // Nothing is lost or repeated inside what is kept: consecutive requests.
        #expect(Set(numbers).count == numbers.count)
    }

    @Test func reopenStartsANewFileAfterTheOldOneWasMoved() throws {
        let path = tempPath("reopen")
        defer { unlink(path); unlink(path + ".old") }
        let w = try AccessLogWriter([(.file(path), .squid)])
        w.record(sampleExchange())
        w.flush()
        #expect(rename(path, path + ".old") == 0)
        w.record(sampleExchange())  // still goes to the moved file, as logrotate expects
        w.flush()
        w.reopenFiles()
        w.record(sampleExchange())
        w.flush()
        w.shutdown()
        #expect(fileLines(path + ".old").count == 2)
        #expect(fileLines(path).count == 1)
    }
}

@Suite("Access-log queue bound")
struct LogQueueBoundTests {
    /// A stalled writer (here: one that is never woken before the flush) keeps the newest
    /// records and counts the oldest it had to drop.
    @Test func theOldestRecordsAreDroppedAndCounted() throws {
        let path = tempPath("bound")
        defer { unlink(path) }
        let w = try AccessLogWriter(outputs: [AccessLogOutput(.file(path), .squid)], maxPending: 100, batchDelay: .seconds(30))
        for i in 0..<150 {
            var e = sampleExchange()
            e.url = "http://example.com/\(i)"
            w.record(e)
        }
        w.flush()
        let urls = fileLines(path).compactMap { $0.split(separator: " ").first { $0.hasPrefix("http://") }.map(String.init) }
        #expect(urls.count + w.droppedCount == 150)
        #expect(urls.last == "http://example.com/149")
        #expect(!urls.contains("http://example.com/0"))
        #expect(urls.count <= 100 && urls.count >= 90)
        w.shutdown()
    }
}
