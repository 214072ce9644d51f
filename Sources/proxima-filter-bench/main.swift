// Measures Proxima's block-list matching: load time, memory and time per URL for the lists and
// URLs given. Used by bench/blocklist.sh (which also measures Brave's adblock-rust on the same
// URLs); a benchmark, not a test.
//
//   proxima-filter-bench URLS_FILE LIST_FILE...
import ProximaPolicy

#if canImport(Glibc)
import Glibc
#endif

func nanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func rssKiB() -> Int {
    guard let f = fopen("/proc/self/status", "r") else { return 0 }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, 256, f) != nil {
        let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if s.hasPrefix("VmRSS:") { return Int(s.split(separator: " ").dropFirst().first ?? "0") ?? 0 }
    }
    return 0
}

func readAll(_ path: String) -> String {
    guard let f = fopen(path, "rb") else { fatalError("cannot read \(path)") }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        bytes += buf[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// The host of an absolute URL, as the proxy has it after parsing the request target.
func host(_ url: Substring) -> String {
    guard let r = url.firstRange(of: "://") else { return String(url) }
    return String(url[r.upperBound...].prefix { $0 != "/" && $0 != ":" && $0 != "?" })
}

let args = CommandLine.arguments
guard args.count >= 3 else {
    print("usage: proxima-filter-bench URLS_FILE LIST_FILE...")
    exit(2)
}
let urls = readAll(args[1]).split(separator: "\n").map { $0.split(separator: " ")[0] }
let hosts = urls.map(host)
let texts = args.dropFirst(2).map(readAll)
let rssBefore = rssKiB()
let t0 = nanos()
let lists = zip(args.dropFirst(2), texts).map { BlockList(name: $0.0, source: $0.0, format: .adblock, text: $0.1) }
let set = BlockListSet(lists)
let loadMs = Double(nanos() - t0) / 1e6
let rssAfter = rssKiB()

var times: [UInt64] = []
times.reserveCapacity(hosts.count * 3)
var blocked = 0
for _ in 0..<3 {
    blocked = 0
    for h in hosts {
        let s = nanos()
        let hit = set.match(host: h) != nil
        times.append(nanos() - s)
        if hit { blocked += 1 }
    }
}
times.sort()
let median = Double(times[times.count / 2]) / 1000
let p99 = Double(times[times.count * 99 / 100]) / 1000
let rules = lists.reduce(0) { $0 + $1.ruleCount }
print("{\"engine\":\"proxima\",\"urls\":\(hosts.count),\"blocked\":\(blocked),\"rules\":\(rules),\"load_ms\":\(loadMs),\"memory_mib\":\(Double(rssAfter - rssBefore) / 1024),\"median_us\":\(median),\"p99_us\":\(p99)}")
