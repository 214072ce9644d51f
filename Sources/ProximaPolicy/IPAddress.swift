/// An IPv4 or IPv6 address as 16 bytes (IPv4 mapped into ::ffff:0:0/96), so one CIDR type
/// matches both families.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64
    public var isIPv4: Bool

    public init(high: UInt64, low: UInt64, isIPv4: Bool) {
        self.high = high
        self.low = low
        self.isIPv4 = isIPv4
    }

    public init(ipv4 value: UInt32) {
        self.init(high: 0, low: 0x0000_FFFF_0000_0000 | UInt64(value), isIPv4: true)
    }

    /// Parses dotted IPv4 (`192.168.0.1`) or IPv6 text (`::1`, `fe80::1`, `::ffff:10.0.0.1`),
    /// without brackets or zone.
    public init?(_ text: some StringProtocol) {
        if let v4 = IPAddress.parseIPv4(Substring(text)) {
            self.init(ipv4: v4)
        } else if let (h, l) = IPAddress.parseIPv6(Substring(text)) {
            // An IPv4-mapped IPv6 address is the same client as its IPv4 form.
            let mapped = h == 0 && (l >> 32) == 0xFFFF
            self.init(high: h, low: l, isIPv4: mapped)
        } else {
            return nil
        }
    }

    static func parseIPv4(_ s: Substring) -> UInt32? {
        var value: UInt32 = 0
        var parts = 0
        var current: UInt32 = 0
        var digits = 0
        for b in s.utf8 {
            if b == UInt8(ascii: ".") {
                guard digits > 0, parts < 3 else { return nil }
                value = value << 8 | current
                parts += 1
                current = 0
                digits = 0
            } else if b >= 0x30, b <= 0x39 {
                // No leading zeros: "010" is octal to some parsers and decimal to others.
                if digits == 1, current == 0 { return nil }
                current = current * 10 + UInt32(b - 0x30)
                digits += 1
                guard current <= 255, digits <= 3 else { return nil }
            } else {
                return nil
            }
        }
        guard parts == 3, digits > 0 else { return nil }
        return value << 8 | current
    }

    static func parseIPv6(_ s: Substring) -> (UInt64, UInt64)? {
        guard s.contains(":") else { return nil }
        var groups: [UInt16] = []
        var doubleColonAt: Int?
        var rest = s[...]
        if rest.hasPrefix("::") {
            doubleColonAt = 0
            rest = rest.dropFirst(2)
        }
        while !rest.isEmpty {
            let end = rest.firstIndex(of: ":") ?? rest.endIndex
            let part = rest[..<end]
            if part.contains(".") {
                // Embedded IPv4 must be last.
                guard end == rest.endIndex, let v4 = parseIPv4(part) else { return nil }
                groups.append(UInt16(v4 >> 16))
                groups.append(UInt16(v4 & 0xFFFF))
                rest = rest[end...]
                break
            }
            guard !part.isEmpty, part.count <= 4, let g = UInt16(part, radix: 16) else { return nil }
            groups.append(g)
            rest = rest[end...]
            if rest.hasPrefix("::") {
                guard doubleColonAt == nil else { return nil }
                doubleColonAt = groups.count
                rest = rest.dropFirst(2)
            } else if rest.hasPrefix(":") {
                rest = rest.dropFirst()
                if rest.isEmpty { return nil }
            }
        }
        if let at = doubleColonAt {
            guard groups.count < 8 else { return nil }
            groups.insert(contentsOf: [UInt16](repeating: 0, count: 8 - groups.count), at: at)
        }
        guard groups.count == 8 else { return nil }
        var h: UInt64 = 0
        var l: UInt64 = 0
        for i in 0..<4 { h = h << 16 | UInt64(groups[i]) }
        for i in 4..<8 { l = l << 16 | UInt64(groups[i]) }
        return (h, l)
    }

    public var description: String {
        if isIPv4 {
            let v = UInt32(truncatingIfNeeded: low)
            return "\(v >> 24).\(v >> 16 & 0xFF).\(v >> 8 & 0xFF).\(v & 0xFF)"
        }
        var groups: [UInt16] = []
        for i in (0..<4).reversed() { groups.append(UInt16(truncatingIfNeeded: high >> (UInt64(i) * 16))) }
        for i in (0..<4).reversed() { groups.append(UInt16(truncatingIfNeeded: low >> (UInt64(i) * 16))) }
        // Compress the longest run of zero groups (RFC 5952).
        var bestStart = -1
        var bestLen = 0
        var i = 0
        while i < 8 {
            if groups[i] == 0 {
                var j = i
                while j < 8, groups[j] == 0 { j += 1 }
                if j - i > bestLen, j - i >= 2 { bestStart = i; bestLen = j - i }
                i = j
            } else {
                i += 1
            }
        }
        func hex(_ range: Range<Int>) -> String { range.map { String(groups[$0], radix: 16) }.joined(separator: ":") }
        if bestStart < 0 { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLen)..<8)
    }
}

/// A network in CIDR notation (`10.0.0.0/8`, `fc00::/7`); a bare address is a single host.
public struct CIDR: Sendable, Hashable, CustomStringConvertible {
    public var address: IPAddress
    /// Prefix length in the 128-bit space (IPv4 prefixes are stored plus 96).
    public var prefix: Int

    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let addr = IPAddress(parts[0]) else { return nil }
        let maxLen = addr.isIPv4 && !parts[0].contains(":") ? 32 : 128
        var len = maxLen
        if parts.count == 2 {
            guard let n = Int(parts[1]), n >= 0, n <= maxLen, parts[1].utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            len = n
        }
        self.prefix = maxLen == 32 ? len + 96 : len
        self.address = CIDR.masked(addr, prefix: self.prefix)
    }

    static func masked(_ a: IPAddress, prefix: Int) -> IPAddress {
        let hm: UInt64 = prefix >= 64 ? .max : (prefix == 0 ? 0 : ~0 << (64 - UInt64(prefix)))
        let lm: UInt64 = prefix <= 64 ? 0 : (prefix >= 128 ? .max : ~0 << (128 - UInt64(prefix)))
        return IPAddress(high: a.high & hm, low: a.low & lm, isIPv4: a.isIPv4)
    }

    public func contains(_ ip: IPAddress) -> Bool {
        let m = CIDR.masked(ip, prefix: prefix)
        return m.high == address.high && m.low == address.low
    }

    public var description: String {
        address.isIPv4 ? "\(address)/\(prefix - 96)" : "\(address)/\(prefix)"
    }

    /// Loopback and private ranges: who may use the default forward proxy.
    public static let localAndPrivate: [CIDR] = [
        "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
        "::1/128", "fc00::/7", "fe80::/10",
    ].map { CIDR($0)! }
}
