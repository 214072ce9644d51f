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

let args = CommandLine.arguments
guard args.count >= 3 else {
    print("usage: proxima-filter-bench URLS_FILE LIST_FILE...   (lines of URLS_FILE: URL SOURCE_URL TYPE)")
    exit(2)
}
let suffixes = PublicSuffixList(text: readAll(PublicSuffixList.systemPath))
let requests: [FilterRequest] = readAll(args[1]).split(separator: "\n").map { line in
    let fields = line.split(separator: " ").map(String.init)
    let host = FilterRequest.host(ofURL: fields[0]) ?? ""
    let source = fields.count > 1 ? FilterRequest.host(ofURL: fields[1]) : nil
    let type = fields.count > 2 ? ResourceType(optionName: fields[2]) ?? .other : .other
    return FilterRequest(
        url: fields[0], host: host, type: type, sourceHost: source,
        thirdParty: FilterRequest.thirdParty(host: host, sourceHost: source, secFetchSite: nil, suffixes: suffixes))
}
let texts = args.dropFirst(2).map(readAll)
let rssBefore = rssKiB()
let t0 = nanos()
let lists = zip(args.dropFirst(2), texts).map { BlockList(name: $0.0, source: $0.0, format: .adblock, text: $0.1) }
let set = BlockListSet(lists)
let loadMs = Double(nanos() - t0) / 1e6
let rssAfter = rssKiB()
if getenv("STATS") != nil {
    print(set.indexStatistics)
    var total: [String: Int] = [:]
    for r in requests.prefix(2000) { for (t, n) in set.candidates(url: r.url) { total[t, default: 0] += n } }
    print("candidates per token over 2000 URLs:", total.sorted { $0.value > $1.value }.prefix(25))
}

var times: [UInt64] = []
times.reserveCapacity(requests.count * 3)
var decisions: [Bool] = []
let repeats = getenv("REPEAT").map { Int(String(cString: $0)) ?? 3 } ?? 3
for _ in 0..<repeats {
    decisions.removeAll(keepingCapacity: true)
    for r in requests {
        let s = nanos()
        let hit = set.match(r) != nil
        times.append(nanos() - s)
        decisions.append(hit)
    }
}
if let path = getenv("DECISIONS").map({ String(cString: $0) }), let f = fopen(path, "w") {
    for (r, d) in zip(requests, decisions) { fputs("\(d ? 1 : 0) \(r.url) \(d ? set.match(r)!.rule : "-")\n", f) }
    fclose(f)
}
if let path = getenv("TIMES").map({ String(cString: $0) }), let f = fopen(path, "w") {
    // The fastest of the repeats for each URL, to find which URLs cost most.
    for (i, r) in requests.enumerated() {
        let best = stride(from: i, to: times.count, by: requests.count).map { times[$0] }.min()!
        fputs("\(best) \(r.type.names.first ?? "-") \(r.url) \(r.sourceHost ?? "-")\n", f)
    }
    fclose(f)
}
times.sort()
let median = Double(times[times.count / 2]) / 1000
let p99 = Double(times[times.count * 99 / 100]) / 1000
let rules = lists.reduce(0) { $0 + $1.hostRuleCount + $1.networkRuleCount }
print("{\"engine\":\"proxima\",\"urls\":\(requests.count),\"blocked\":\(decisions.filter { $0 }.count),\"rules\":\(rules),\"load_ms\":\(loadMs),\"memory_mib\":\(Double(rssAfter - rssBefore) / 1024),\"median_us\":\(median),\"p99_us\":\(p99)}")
