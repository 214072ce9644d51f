/// The network rules of up to 64 block lists compiled for matching one request in about a
/// microsecond, the way uBlock Origin and adblock-rust do it: every rule is filed under one
/// token (a run of letters and digits) that any URL it matches must contain, the rarest one it
/// has; a URL is cut into its tokens and only the rules filed under those are tried. Pure host
/// rules (`||host^`, hosts files, the bulk of every list) sit in a hash table of host names,
/// looked up once per label of the host.
///
/// A list's exceptions (`@@`) only undo that list's own blocks; `$important` blocks cannot be
/// undone. The first list (in configuration order) whose decision is "block" is reported.
struct FilterEngine: Sendable {
    struct Masks: Sendable, Equatable {
        var blocked: UInt64 = 0
        var important: UInt64 = 0
        var allowed: UInt64 = 0
    }

    struct Flags: OptionSet, Sendable {
        let rawValue: UInt16
        static let hostAnchored = Flags(rawValue: 1)
        static let leftAnchored = Flags(rawValue: 2)
        static let rightAnchored = Flags(rawValue: 4)
        static let matchCase = Flags(rawValue: 8)
        static let important = Flags(rawValue: 16)
        static let regex = Flags(rawValue: 32)
    }

    /// Plain values only, so that the matching loop touches no reference counts.
    struct Compiled: Sendable {
        var patternStart: Int32
        var patternCount: Int32
        var flags: Flags
        var types: UInt16
        var party: NetworkFilter.Party
        var list: UInt8
        var domainStart: Int32
        var includeCount: Int16
        var excludeCount: Int16
        var regex: Int32
        /// Where the token the rule is filed under sits in its pattern, if that is fixed.
        var tokenOffset: Int32 = -1
    }

    var filters: [Compiled] = []
    var texts: [String] = []
    var arena: [UInt8] = []
    var domainHashes: [UInt64] = []
    nonisolated(unsafe) var regexes: [Regex<AnyRegexOutput>] = []
    var blocking = TokenIndex()
    var exceptions = TokenIndex()
    var hosts = HostTable()
    /// `@@||site^$document`: every request from a page of that site is let through.
    var pageExceptions = HostTable()
    var hasNetworkFilters = false

    init(_ lists: [BlockList]) {
        var hostMasks: [String: Masks] = [:]
        var pageMasks: [String: Masks] = [:]
        var blockingIDs: [(Int32, [(bytes: [UInt8], offset: Int)])] = []
        var exceptionIDs: [(Int32, [(bytes: [UInt8], offset: Int)])] = []
        for (i, list) in lists.enumerated() {
            let bit = UInt64(1) << UInt64(i)
            for (host, kind) in list.rules {
                var m = hostMasks[host, default: Masks()]
                if kind.contains(.blocked) { m.blocked |= bit }
                if kind.contains(.important) { m.important |= bit }
                if kind.contains(.allowed) { m.allowed |= bit }
                hostMasks[host] = m
            }
            for filter in list.network {
                if filter.exception, filter.types.contains(.document), let host = filter.hostOnlyName,
                    filter.includeDomains.isEmpty, filter.excludeDomains.isEmpty
                {
                    pageMasks[host, default: Masks()].allowed |= bit
                }
                let id = Int32(filters.count)
                filters.append(compile(filter, list: UInt8(i)))
                texts.append(filter.text)
                if filter.exception { exceptionIDs.append((id, filter.tokens)) } else { blockingIDs.append((id, filter.tokens)) }
            }
        }
        hasNetworkFilters = !filters.isEmpty
        blocking = file(blockingIDs)
        exceptions = file(exceptionIDs)
        placeInBucketOrder()
        hosts = HostTable(hostMasks)
        pageExceptions = HostTable(pageMasks)
    }

    /// Moves the rules (and their patterns) into the order of the buckets, so that the rules a
    /// URL token leads to sit next to each other in memory: a bucket costs one or two cache
    /// misses instead of one per rule.
    private mutating func placeInBucketOrder() {
        var order: [Int32] = []
        order.reserveCapacity(filters.count)
        var placed = [Bool](repeating: false, count: filters.count)
        for id in blocking.ids + exceptions.ids + blocking.untokenized + exceptions.untokenized where !placed[Int(id)] {
            placed[Int(id)] = true
            order.append(id)
        }
        for id in 0..<Int32(filters.count) where !placed[Int(id)] { order.append(id) }
        var newID = [Int32](repeating: 0, count: filters.count)
        var newFilters: [Compiled] = []
        var newTexts: [String] = []
        var newArena: [UInt8] = []
        newFilters.reserveCapacity(filters.count)
        newTexts.reserveCapacity(filters.count)
        newArena.reserveCapacity(arena.count)
        for (position, old) in order.enumerated() {
            newID[Int(old)] = Int32(position)
            var c = filters[Int(old)]
            let start = Int(c.patternStart)
            c.patternStart = Int32(newArena.count)
            newArena += arena[start..<start + Int(c.patternCount)]
            newFilters.append(c)
            newTexts.append(texts[Int(old)])
        }
        filters = newFilters
        texts = newTexts
        arena = newArena
        for index in [\FilterEngine.blocking, \FilterEngine.exceptions] {
            self[keyPath: index].ids = self[keyPath: index].ids.map { newID[Int($0)] }
            self[keyPath: index].untokenized = self[keyPath: index].untokenized.map { newID[Int($0)] }
            self[keyPath: index].byPageDomain = self[keyPath: index].byPageDomain.mapValues { $0.map { newID[Int($0)] } }
        }
    }

    /// Tokens found in most URLs: a rule filed under one would be tried for most requests, so
    /// any other token of the rule is preferred (uBlock Origin keeps a similar list).
    static let commonInURLs: Set<UInt32> = Set([
        "http", "https", "www", "com", "net", "org", "de", "uk", "co", "io", "fr", "js", "css", "html", "htm", "php",
        "jpg", "jpeg", "png", "gif", "svg", "webp", "json", "cdn", "static", "img", "images", "assets", "min", "api",
        "v1", "v2", "index", "src", "id", "utm", "source", "content", "media", "wp", "1", "2", "3", "0",
    ].map { TokenIndex.hash(Array($0.utf8)) })

    /// Files each rule under its rarest token (ties: the longer one), avoiding tokens that most
    /// URLs have; rules without one are tried for every URL.
    /// Rules that have no good token but name the pages they apply to (`$domain=`) are filed
    /// under those sites instead, and tried only for requests from them.
    private mutating func file(_ rules: [(Int32, [(bytes: [UInt8], offset: Int)])]) -> TokenIndex {
        var frequency: [UInt32: Int] = [:]
        for (_, tokens) in rules {
            for t in Set(tokens.map { TokenIndex.hash($0.bytes) }) { frequency[t, default: 0] += 1 }
        }
        for t in Self.commonInURLs where frequency[t] != nil { frequency[t]! += 1_000_000 }
        var entries: [(Int32, UInt32?)] = []
        var byPageDomain: [UInt64: [Int32]] = [:]
        for (id, tokens) in rules {
            let best = tokens.min { a, b in
                let fa = frequency[TokenIndex.hash(a.bytes)]!, fb = frequency[TokenIndex.hash(b.bytes)]!
                return fa != fb ? fa < fb : a.bytes.count > b.bytes.count
            }
            let c = filters[Int(id)]
            let poor = best.map { frequency[TokenIndex.hash($0.bytes)]! >= 1_000_000 } ?? true
            if poor, c.includeCount > 0 {
                for k in 0..<Int(c.includeCount) { byPageDomain[domainHashes[Int(c.domainStart) + k], default: []].append(id) }
                continue
            }
            filters[Int(id)].tokenOffset = Int32(best?.offset ?? -1)
            entries.append((id, best.map { TokenIndex.hash($0.bytes) }))
        }
        var index = TokenIndex(entries)
        index.byPageDomain = byPageDomain
        return index
    }

    private mutating func compile(_ f: NetworkFilter, list: UInt8) -> Compiled {
        var flags: Flags = []
        if f.hostAnchored { flags.insert(.hostAnchored) }
        if f.leftAnchored { flags.insert(.leftAnchored) }
        if f.rightAnchored { flags.insert(.rightAnchored) }
        if f.matchCase { flags.insert(.matchCase) }
        if f.important { flags.insert(.important) }
        var regexIndex: Int32 = -1
        if let source = f.regex, let compiled = try? Regex(source) {
            flags.insert(.regex)
            regexIndex = Int32(regexes.count)
            regexes.append(f.matchCase ? compiled : compiled.ignoresCase())
        }
        let c = Compiled(
            patternStart: Int32(arena.count), patternCount: Int32(f.pattern.count), flags: flags, types: f.types.rawValue,
            party: f.party, list: list, domainStart: Int32(domainHashes.count), includeCount: Int16(f.includeDomains.count),
            excludeCount: Int16(f.excludeDomains.count), regex: regexIndex)
        arena += f.pattern
        // Sorted, so that a page's few domains are looked up by bisection in long `$domain=` lists.
        domainHashes += f.includeDomains.map { HostTable.hash(Array($0.utf8)[...]) }.sorted()
        domainHashes += f.excludeDomains.map { HostTable.hash(Array($0.utf8)[...]) }.sorted()
        return c
    }

    // MARK: - Matching

    /// What one request is checked with: the URL lowercased, where its host is, its tokens.
    struct Subject {
        let url: UnsafeBufferPointer<UInt8>
        let original: String
        let hostStart: Int
        let hostEnd: Int
        let types: UInt16
        let thirdParty: Bool?
        let sourceHost: String?
        var lowercasedString: String?
        /// The hashes of the page's host and parent domains, made when a `$domain=` rule needs them.
        var sourceSuffixesMade: [UInt64]?
        var sourceSuffixes: [UInt64] {
            mutating get {
                if let made = sourceSuffixesMade { return made }
                let made = sourceHost.map { HostTable.suffixHashes($0) } ?? []
                sourceSuffixesMade = made
                return made
            }
        }
    }

    /// The index of the first list whose decision is "block", and the rule that decided.
    func match(_ request: FilterRequest, lists: [BlockList]) -> (list: Int, rule: String)? {
        var masks = Masks()
        hosts.lookup(request.host, into: &masks)
        guard hasNetworkFilters else {
            let decisive = masks.important | (masks.blocked & ~masks.allowed)
            guard decisive != 0 else { return nil }
            let list = decisive.trailingZeroBitCount
            let important = masks.important & (UInt64(1) << UInt64(list)) != 0
            return hostRule(request, list: list, important: important, lists: lists) ?? (list, "?")
        }
        let utf8 = request.url.utf8
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(utf8.count, 1)) { buffer in
            var n = 0
            for b in utf8 {
                buffer[n] = b >= 0x41 && b <= 0x5A ? b | 0x20 : b
                n += 1
            }
            let url = UnsafeBufferPointer(rebasing: buffer[0..<n])
            let (hostStart, hostEnd) = Self.hostRange(url)
            var subject = Subject(
                url: url, original: request.url, hostStart: hostStart, hostEnd: hostEnd, types: request.type.rawValue,
                thirdParty: request.thirdParty, sourceHost: request.sourceHost, lowercasedString: nil)
            // The first rule hit for the lowest list, kept so that a block needs no second scan to
            // name its rule.
            var firstBlocking: (list: UInt8, id: Int32) = (255, -1)
            var firstImportant: (list: UInt8, id: Int32) = (255, -1)
            scan(blocking, &subject, skip: 0) { id, c in
                let bit = UInt64(1) << UInt64(c.list)
                if c.flags.contains(.important) {
                    masks.important |= bit
                    if c.list < firstImportant.list { firstImportant = (c.list, id) }
                } else {
                    masks.blocked |= bit
                    if c.list < firstBlocking.list { firstBlocking = (c.list, id) }
                }
                return false
            }
            if masks.blocked & ~masks.important != 0 {
                if let source = request.sourceHost {
                    var page = Masks()
                    pageExceptions.lookup(source, into: &page)
                    masks.allowed |= page.allowed
                }
                let open = masks.blocked & ~masks.important & ~masks.allowed
                if open != 0 {
                    scan(exceptions, &subject, skip: ~open) { _, c in
                        masks.allowed |= UInt64(1) << UInt64(c.list)
                        return false
                    }
                }
            }
            let decisive = masks.important | (masks.blocked & ~masks.allowed)
            guard decisive != 0 else { return nil }
            let list = decisive.trailingZeroBitCount
            let bit = UInt64(1) << UInt64(list)
            let wantImportant = masks.important & bit != 0
            // A block is the rare case: find the rule that made it, host rules first.
            if let rule = hostRule(request, list: list, important: wantImportant, lists: lists) { return rule }
            let remembered = wantImportant ? firstImportant : firstBlocking
            if Int(remembered.list) == list { return (list, texts[Int(remembered.id)]) }
            var text: String?
            scan(blocking, &subject, skip: ~bit) { id, c in
                if wantImportant && !c.flags.contains(.important) { return false }
                text = texts[Int(id)]
                return true
            }
            return (list, text ?? "?")
        }
    }

    private func hostRule(_ request: FilterRequest, list: Int, important: Bool, lists: [BlockList]) -> (list: Int, rule: String)? {
        guard let host = hosts.firstName(request.host, bit: UInt64(1) << UInt64(list), important: important) else { return nil }
        return (list, lists[list].ruleText(host, important: important))
    }

    /// Calls `hit` for every rule of `index` that matches, skipping rules of lists whose bit is
    /// in `skip`; stops when `hit` returns true.
    private func scan(_ index: TokenIndex, _ s: inout Subject, skip: UInt64, _ hit: (Int32, Compiled) -> Bool) {
        let url = s.url
        filters.withUnsafeBufferPointer { filters in
            arena.withUnsafeBufferPointer { arena in
                func check(_ id: Int32, tokenAt: Int) -> Bool {
                    let c = filters[Int(id)]
                    if skip & (UInt64(1) << UInt64(c.list)) != 0 { return false }
                    if c.types & s.types == 0 { return false }
                    switch c.party {
                    case .any: break
                    case .third: if s.thirdParty != true { return false }
                    case .first: if s.thirdParty != false { return false }
                    }
                    // Page domains first: they are cheap and rule out most regular expressions.
                    if c.includeCount > 0 || c.excludeCount > 0, !domainsAllow(c, s.sourceSuffixes) { return false }
                    if c.flags.contains(.regex) {
                        if !regexMatches(c, &s) { return false }
                    } else {
                        let pattern = UnsafeBufferPointer(rebasing: arena[Int(c.patternStart)..<Int(c.patternStart + c.patternCount)])
                        // The token fixes where the pattern starts: one anchored try, no search.
                        let start = tokenAt >= 0 && c.tokenOffset >= 0 ? tokenAt - Int(c.tokenOffset) : -1
                        if tokenAt >= 0, c.tokenOffset >= 0, start < 0 { return false }
                        if c.flags.contains(.matchCase) {
                            let matched = s.original.utf8.withContiguousStorageIfAvailable { original in
                                Self.matches(pattern, c.flags, original, hostStart: s.hostStart, hostEnd: s.hostEnd, at: start)
                            }
                            if matched != true { return false }
                        } else if !Self.matches(pattern, c.flags, url, hostStart: s.hostStart, hostEnd: s.hostEnd, at: start) {
                            return false
                        }
                    }
                    return hit(id, c)
                }
                // One pass: the token's hash is made while its end is looked for (the hot loop of
                // matching; `NetworkFilter.nextToken` cuts the same way).
                var i = 0
                while i < url.count {
                    guard NetworkFilter.isTokenByte(url[i]) else {
                        i += 1
                        continue
                    }
                    let tokenStart = i
                    var h = TokenIndex.seed
                    while i < url.count, NetworkFilter.isTokenByte(url[i]) {
                        h = TokenIndex.stepLowercase(h, url[i])
                        i += 1
                    }
                    if let (start, count) = index.bucket(TokenIndex.finish(h)) {
                        for k in start..<start + count where check(index.ids[k], tokenAt: tokenStart) { return }
                    }
                }
                for id in index.untokenized where check(id, tokenAt: -1) { return }
                if !index.byPageDomain.isEmpty, s.sourceHost != nil {
                    for site in s.sourceSuffixes {
                        for id in index.byPageDomain[site] ?? [] where check(id, tokenAt: -1) { return }
                    }
                }
            }
        }
    }

    private func regexMatches(_ c: Compiled, _ s: inout Subject) -> Bool {
        let text: String
        if c.flags.contains(.matchCase) {
            text = s.original
        } else if let cached = s.lowercasedString {
            text = cached
        } else {
            text = String(decoding: s.url, as: UTF8.self)
            s.lowercasedString = text
        }
        return (try? regexes[Int(c.regex)].firstMatch(in: text)) != nil
    }

    /// `$domain=`: an excluded page's site never matches; with included sites, one must match.
    private func domainsAllow(_ c: Compiled, _ source: [UInt64]) -> Bool {
        if source.isEmpty { return c.includeCount == 0 }
        let start = Int(c.domainStart)
        let split = start + Int(c.includeCount)
        let end = split + Int(c.excludeCount)
        return domainHashes.withUnsafeBufferPointer { all in
            /// Whether `key` is in the sorted range `from..<to`.
            func contains(_ from: Int, _ to: Int, _ key: UInt64) -> Bool {
                var lo = from
                var hi = to
                while lo < hi {
                    let mid = (lo + hi) >> 1
                    if all[mid] < key { lo = mid + 1 } else { hi = mid }
                }
                return lo < to && all[lo] == key
            }
            if c.excludeCount > 0, source.contains(where: { contains(split, end, $0) }) { return false }
            return c.includeCount == 0 || source.contains { contains(start, split, $0) }
        }
    }

    /// Where the host is in `scheme://[userinfo@]host[:port]/…`.
    static func hostRange(_ url: UnsafeBufferPointer<UInt8>) -> (Int, Int) {
        var i = 0
        while i + 2 < url.count, !(url[i] == UInt8(ascii: ":") && url[i + 1] == UInt8(ascii: "/") && url[i + 2] == UInt8(ascii: "/")) { i += 1 }
        var start = i + 2 < url.count ? i + 3 : 0
        var end = start
        while end < url.count, url[end] != UInt8(ascii: "/"), url[end] != UInt8(ascii: "?"), url[end] != UInt8(ascii: "#") {
            if url[end] == UInt8(ascii: "@") { start = end + 1 }
            end += 1
        }
        // The port is not part of the host.
        var colon = end
        while colon > start, url[colon - 1] != UInt8(ascii: ":"), url[colon - 1] != UInt8(ascii: "]") { colon -= 1 }
        if colon > start, url[colon - 1] == UInt8(ascii: ":") { end = colon - 1 }
        return (start, end)
    }

    /// `^`: anything but a letter, a digit, or one of `_ - . %` (and the end of the URL).
    @inline(__always) static func isSeparator(_ b: UInt8) -> Bool {
        !(NetworkFilter.isTokenByte(b) || b == UInt8(ascii: "_") || b == UInt8(ascii: "-") || b == UInt8(ascii: "."))
    }

    /// The pattern against the URL, with its anchors. Wildcards backtrack to the last `*` only,
    /// which is exact for patterns whose other elements each match one byte.
    /// `at`: where the match must start, when the rule's token fixes it (-1: anywhere allowed).
    static func matches(_ p: UnsafeBufferPointer<UInt8>, _ flags: Flags, _ u: UnsafeBufferPointer<UInt8>, hostStart: Int, hostEnd: Int, at: Int = -1) -> Bool {
        let right = flags.contains(.rightAnchored)
        if at >= 0 {
            if flags.contains(.hostAnchored) {
                guard at >= hostStart, at < max(hostEnd, hostStart + 1), at == hostStart || u[at - 1] == UInt8(ascii: ".") else { return false }
            } else if flags.contains(.leftAnchored), at != 0 {
                return false
            }
            return glob(p, u, from: at, floating: false, rightAnchored: right)
        }
        if flags.contains(.hostAnchored) {
            var start = hostStart
            while start < max(hostEnd, hostStart + 1) {
                if start == hostStart || u[start - 1] == UInt8(ascii: ".") {
                    if glob(p, u, from: start, floating: false, rightAnchored: right) { return true }
                }
                start += 1
            }
            return false
        }
        return glob(p, u, from: 0, floating: !flags.contains(.leftAnchored), rightAnchored: right)
    }

    static func glob(_ p: UnsafeBufferPointer<UInt8>, _ u: UnsafeBufferPointer<UInt8>, from: Int, floating: Bool, rightAnchored: Bool) -> Bool {
        var pi = 0
        var ui = from
        // Where to resume after a mismatch: the pattern index after the last `*`, and the URL
        // index that star has consumed up to.
        var starP = floating ? 0 : -1
        var starU = from
        let star = UInt8(ascii: "*")
        let caret = UInt8(ascii: "^")
        while true {
            if pi < p.count {
                let c = p[pi]
                if c == star {
                    pi += 1
                    starP = pi
                    starU = ui
                    continue
                }
                if ui < u.count, c == caret ? isSeparator(u[ui]) : c == u[ui] {
                    pi += 1
                    ui += 1
                    continue
                }
                if c == caret, ui == u.count {
                    // `^` also matches the end of the URL.
                    pi += 1
                    continue
                }
            } else if !rightAnchored || ui == u.count {
                return true
            }
            guard starP >= 0, starU < u.count else { return false }
            starU += 1
            ui = starU
            pi = starP
        }
    }
}

/// Token hash → the rules filed under it, in one open-addressed table.
struct TokenIndex: Sendable {
    /// Key, start and count side by side: one cache line per probe.
    struct Slot: Sendable {
        var key: UInt32 = 0
        var start: Int32 = 0
        var count: Int32 = 0
    }
    var slots: [Slot] = [Slot()]
    /// One bit per token hash (its low bits): most URL tokens have no bucket, and this answers
    /// that from a table small enough to stay in the L1 cache, where the slots would miss.
    var present: [UInt64] = Array(repeating: 0, count: TokenIndex.presentWords)
    static let presentBits = 1 << 17
    static let presentWords = presentBits / 64
    var ids: [Int32] = []
    var untokenized: [Int32] = []
    /// Page site (hash) → rules filed under it.
    var byPageDomain: [UInt64: [Int32]] = [:]
    var mask = 0

    static let seed: UInt32 = 2_166_136_261
    @inline(__always) static func step(_ h: UInt32, _ b: UInt8) -> UInt32 { (h ^ UInt32(b | (b >= 0x41 && b <= 0x5A ? 0x20 : 0))) &* 16_777_619 }
    /// `step` for bytes already lowercase (the URL is lowercased once).
    @inline(__always) static func stepLowercase(_ h: UInt32, _ b: UInt8) -> UInt32 { (h ^ UInt32(b)) &* 16_777_619 }
    @inline(__always) static func finish(_ h: UInt32) -> UInt32 { h == 0 ? 1 : h }
    static func hash(_ token: [UInt8]) -> UInt32 { finish(token.reduce(seed, step)) }

    init() {}

    /// `entries`: each rule with the hash of the token it is filed under, or nil.
    init(_ entries: [(Int32, UInt32?)]) {
        var buckets: [UInt32: [Int32]] = [:]
        for (id, token) in entries {
            if let token { buckets[token, default: []].append(id) } else { untokenized.append(id) }
        }
        var size = 16
        while size < buckets.count * 2 { size <<= 1 }
        mask = size - 1
        slots = Array(repeating: Slot(), count: size)
        for (key, members) in buckets.sorted(by: { $0.key < $1.key }) {
            var slot = Int(key &* 2_654_435_761) & mask
            while slots[slot].key != 0 { slot = (slot + 1) & mask }
            slots[slot] = Slot(key: key, start: Int32(ids.count), count: Int32(members.count))
            let bit = Int(key) & (Self.presentBits - 1)
            present[bit >> 6] |= 1 << UInt64(bit & 63)
            ids += members
        }
    }

    @inline(__always) func bucket(_ key: UInt32) -> (Int, Int)? {
        let bit = Int(key) & (Self.presentBits - 1)
        guard present.withUnsafeBufferPointer({ $0[bit >> 6] & (1 << UInt64(bit & 63)) != 0 }) else { return nil }
        var slot = Int(key &* 2_654_435_761) & mask
        return slots.withUnsafeBufferPointer { slots in
            while true {
                let s = slots[slot]
                if s.key == key { return (Int(s.start), Int(s.count)) }
                if s.key == 0 { return nil }
                slot = (slot + 1) & mask
            }
        }
    }

    var bucketCount: Int { slots.filter { $0.count > 0 }.count }
}

/// Host name → a bit per list, hashed from the end of the name so that one pass over its bytes
/// yields the hash of every parent domain (`a.b.example` → `a.b.example`, `b.example`, `example`).
struct HostTable: Sendable {
    var keys: [UInt64] = [0]
    var names: [String] = [""]
    var masks: [FilterEngine.Masks] = [FilterEngine.Masks()]
    var mask = 0
    var isEmpty = true
    /// A bit per name hash (low bits), sized to stay in the L2 cache: most hosts and parent
    /// domains of a request are in no list, and this says so without touching `keys`.
    var present: [UInt64] = []
    var presentMask = 0

    init() {}

    init(_ entries: [String: FilterEngine.Masks]) {
        isEmpty = entries.isEmpty
        var size = 16
        while size < entries.count * 2 { size <<= 1 }
        mask = size - 1
        keys = Array(repeating: 0, count: size)
        names = Array(repeating: "", count: size)
        masks = Array(repeating: FilterEngine.Masks(), count: size)
        var bits = 1 << 12
        while bits < entries.count * 8 { bits <<= 1 }
        present = Array(repeating: 0, count: bits / 64)
        presentMask = bits - 1
        for (name, m) in entries {
            let key = Self.hash(Array(name.utf8)[...])
            var slot = Int(truncatingIfNeeded: key) & mask
            while keys[slot] != 0 { slot = (slot + 1) & mask }
            keys[slot] = key
            names[slot] = name
            masks[slot] = m
            let bit = Int(truncatingIfNeeded: key >> 32) & presentMask
            present[bit >> 6] |= 1 << UInt64(bit & 63)
        }
    }

    static let seed: UInt64 = 14_695_981_039_346_656_037
    @inline(__always) static func step(_ h: UInt64, _ b: UInt8) -> UInt64 { (h ^ UInt64(b)) &* 1_099_511_628_211 }

    /// The hash of a whole name (as `suffixHashes` computes it for the name's suffixes).
    static func hash(_ name: ArraySlice<UInt8>) -> UInt64 {
        var h = seed
        for b in name.reversed() { h = step(h, b) }
        return h == 0 ? 1 : h
    }

    /// The hashes of the name and of each of its parent domains.
    static func suffixHashes(_ name: String) -> [UInt64] {
        var result: [UInt64] = []
        let bytes = Array(name.utf8)
        var end = bytes.count
        if end > 0, bytes[end - 1] == UInt8(ascii: ".") { end -= 1 }
        var h = seed
        var i = end
        while i > 0 {
            i -= 1
            let b = bytes[i]
            h = step(h, b >= 0x41 && b <= 0x5A ? b | 0x20 : b)
            if i == 0 || bytes[i - 1] == UInt8(ascii: ".") { result.append(h == 0 ? 1 : h) }
        }
        return result
    }

    /// The most specific of `host` and its parent domains that has `bit` set (in `important`,
    /// or else in `blocked`).
    func firstName(_ host: String, bit: UInt64, important: Bool) -> String? {
        for key in Self.suffixHashes(host).reversed() {
            var slot = Int(truncatingIfNeeded: key) & mask
            while keys[slot] != 0 {
                if keys[slot] == key, host.utf8.reversed().starts(with: names[slot].utf8.reversed()) {
                    if (important ? masks[slot].important : masks[slot].blocked) & bit != 0 { return names[slot] }
                    break
                }
                slot = (slot + 1) & mask
            }
        }
        return nil
    }

    /// ORs in the masks of `host` and of every parent domain.
    func lookup(_ host: String, into result: inout FilterEngine.Masks) {
        guard !isEmpty else { return }
        var host = host
        host.withUTF8 { bytes in
            var end = bytes.count
            if end > 0, bytes[end - 1] == UInt8(ascii: ".") { end -= 1 }
            var h = Self.seed
            var i = end
            while i > 0 {
                i -= 1
                let b = bytes[i]
                h = Self.step(h, b >= 0x41 && b <= 0x5A ? b | 0x20 : b)
                guard i == 0 || bytes[i - 1] == UInt8(ascii: ".") else { continue }
                let key = h == 0 ? 1 : h
                let bit = Int(truncatingIfNeeded: key >> 32) & presentMask
                guard present[bit >> 6] & (1 << UInt64(bit & 63)) != 0 else { continue }
                var slot = Int(truncatingIfNeeded: key) & mask
                while keys[slot] != 0 {
                    if keys[slot] == key, names[slot].utf8.elementsEqual(UnsafeBufferPointer(rebasing: bytes[i..<end])) {
                        let m = masks[slot]
                        result.blocked |= m.blocked
                        result.important |= m.important
                        result.allowed |= m.allowed
                        break
                    }
                    slot = (slot + 1) & mask
                }
            }
        }
    }
}
