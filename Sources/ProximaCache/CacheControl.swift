/// The `Cache-Control` directives of a request or a response (RFC 9111 section 5.2), parsed
/// from every field line of that name. Names are case-insensitive; arguments are tokens or
/// quoted strings; unknown directives are ignored (section 5.2.3).
public struct CacheControl: Sendable, Equatable {
    /// RFC 9111 section 1.2.2: a delta-seconds too large to represent is taken as 2^31.
    public static let deltaCap = 2_147_483_648

    // Response directives (section 5.2.2).
    public var maxAge: Int?
    public var sMaxAge: Int?
    public var noStore = false
    /// `no-cache` without field names: never served without validation.
    public var noCache = false
    /// `no-cache="a, b"`: those fields must not be sent from the stored response without
    /// validation (a cache may strip them instead).
    public var noCacheFields: [String] = []
    /// `private` without field names: a shared cache must not store the response.
    public var isPrivate = false
    public var privateFields: [String] = []
    public var isPublic = false
    public var mustRevalidate = false
    public var proxyRevalidate = false
    public var immutable = false
    public var mustUnderstand = false
    public var noTransform = false
    /// RFC 5861.
    public var staleWhileRevalidate: Int?
    public var staleIfError: Int?

    // Request directives (section 5.2.1).
    /// `max-stale` without a value accepts any staleness (`deltaCap`).
    public var maxStale: Int?
    public var minFresh: Int?
    public var onlyIfCached = false

    /// A freshness directive (`max-age`, `s-maxage`) had an argument that is not delta-seconds,
    /// or appeared twice with different values: section 4.2.1 says to consider the response
    /// stale.
    public var invalidFreshness = false

    public init() {}

    /// Parses the values of every `Cache-Control` field line, in order.
    public init(_ fieldValues: [String]) {
        for value in fieldValues {
            for (name, argument) in Self.directives(value) { apply(name, argument) }
        }
    }

    public var isEmpty: Bool { self == CacheControl() }

    private mutating func apply(_ name: String, _ argument: String?) {
        switch name {
        case "max-age": maxAge = freshness(maxAge, argument)
        case "s-maxage": sMaxAge = freshness(sMaxAge, argument)
        case "no-store": noStore = true
        case "no-cache":
            if let argument, !argument.isEmpty { noCacheFields += Self.fieldNames(argument) } else { noCache = true }
        case "private":
            if let argument, !argument.isEmpty { privateFields += Self.fieldNames(argument) } else { isPrivate = true }
        case "public": isPublic = true
        case "must-revalidate": mustRevalidate = true
        case "proxy-revalidate": proxyRevalidate = true
        case "immutable": immutable = true
        case "must-understand": mustUnderstand = true
        case "no-transform": noTransform = true
        case "stale-while-revalidate": if let v = argument.flatMap(Self.deltaSeconds) { staleWhileRevalidate = v }
        case "stale-if-error": if let v = argument.flatMap(Self.deltaSeconds) { staleIfError = v }
        case "max-stale":
            if let argument {
                if let v = Self.deltaSeconds(argument) { maxStale = v }
            } else {
                maxStale = Self.deltaCap
            }
        case "min-fresh": if let v = argument.flatMap(Self.deltaSeconds) { minFresh = v }
        case "only-if-cached": onlyIfCached = true
        default: break
        }
    }

    /// The value a freshness directive keeps: the first valid one; a bad or a conflicting one
    /// marks the response stale.
    private mutating func freshness(_ old: Int?, _ argument: String?) -> Int? {
        guard let argument, let v = Self.deltaSeconds(argument) else {
            invalidFreshness = true
            return old
        }
        if let old {
            if old != v { invalidFreshness = true }
            return old
        }
        return v
    }

    /// `1*DIGIT`; larger than representable: 2^31 (section 1.2.2).
    public static func deltaSeconds(_ s: String) -> Int? {
        guard !s.isEmpty, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        if s.utf8.count > 10 { return deltaCap }
        return min(Int(s) ?? deltaCap, deltaCap)
    }

    static func fieldNames(_ s: String) -> [String] {
        s.split(separator: ",").map { $0.trimmingOWS().lowercased() }.filter { !$0.isEmpty }
    }

    /// The directives of one field value: `name[=token|quoted-string]`, comma-separated, with
    /// optional whitespace; a comma inside a quoted string does not separate.
    static func directives(_ value: String) -> [(String, String?)] {
        var result: [(String, String?)] = []
        let bytes = Array(value.utf8)
        var i = 0
        func skipOWS() { while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 { i += 1 } }
        while i < bytes.count {
            skipOWS()
            let nameStart = i
            while i < bytes.count, bytes[i] != UInt8(ascii: "="), bytes[i] != UInt8(ascii: ","), bytes[i] != 0x20, bytes[i] != 0x09 { i += 1 }
            let name = String(decoding: bytes[nameStart..<i], as: UTF8.self).lowercased()
            skipOWS()
            var argument: String?
            if i < bytes.count, bytes[i] == UInt8(ascii: "=") {
                i += 1
                skipOWS()
                if i < bytes.count, bytes[i] == UInt8(ascii: "\"") {
                    i += 1
                    var arg: [UInt8] = []
                    while i < bytes.count, bytes[i] != UInt8(ascii: "\"") {
                        if bytes[i] == UInt8(ascii: "\\"), i + 1 < bytes.count { i += 1 }
                        arg.append(bytes[i])
                        i += 1
                    }
                    i += 1
                    argument = String(decoding: arg, as: UTF8.self)
                } else {
                    let argStart = i
                    while i < bytes.count, bytes[i] != UInt8(ascii: ","), bytes[i] != 0x20, bytes[i] != 0x09 { i += 1 }
                    argument = String(decoding: bytes[argStart..<i], as: UTF8.self)
                }
            }
            // Anything else up to the next comma is not part of a well-formed directive.
            while i < bytes.count, bytes[i] != UInt8(ascii: ",") { i += 1 }
            i += 1
            if !name.isEmpty { result.append((name, argument)) }
        }
        return result
    }
}

extension Substring {
    func trimmingOWS() -> Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return s
    }
}

extension String {
    func trimmingOWS() -> String { String(Substring(self).trimmingOWS()) }
}
