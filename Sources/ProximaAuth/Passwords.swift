import CCrypt

/// Password files as Apache's `htpasswd` writes them (`user:hash` a line), verified with the
/// system's `crypt(3)`: bcrypt (`$2y$`, `$2b$`, `$2a$`), yescrypt (`$y$`), SHA-512 and SHA-256
/// crypt (`$6$`, `$5$`). Plain-text passwords and weak schemes are refused when the file is read.
public struct PasswordFile: Sendable, Equatable {
    public let path: String
    public let hashes: [String: String]

    public struct Problem: Error, Equatable, CustomStringConvertible {
        public var line: Int
        public var message: String
        public var description: String { "line \(line): \(message)" }
    }

    public struct Problems: Error, Equatable {
        public var list: [Problem]
    }

    public static let acceptedPrefixes = ["$2y$", "$2b$", "$2a$", "$y$", "$gy$", "$7$", "$6$", "$5$"]

    /// Parses the file's text; every problem is reported with its line.
    public static func parse(_ text: String, path: String) -> Result<PasswordFile, Problems> {
        var hashes: [String: String] = [:]
        var problems: [Problem] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                problems.append(Problem(line: i + 1, message: "not 'user:hash'"))
                continue
            }
            let user = String(line[..<colon])
            let hash = String(line[line.index(after: colon)...])
            if hashes[user] != nil {
                problems.append(Problem(line: i + 1, message: "user '\(user)' appears twice"))
                continue
            }
            guard acceptedPrefixes.contains(where: { hash.hasPrefix($0) }) else {
                let why: String
                if hash.hasPrefix("$apr1$") || hash.hasPrefix("$1$") {
                    why = "MD5 hashes are not accepted; write the file with htpasswd -B (bcrypt)"
                } else if hash.hasPrefix("{SHA}") {
                    why = "unsalted SHA-1 is not accepted; write the file with htpasswd -B (bcrypt)"
                } else {
                    why = "plain-text or unknown password hashes are refused; use htpasswd -B (bcrypt), or $6$/$y$ crypt hashes"
                }
                problems.append(Problem(line: i + 1, message: "user '\(user)': \(why)"))
                continue
            }
            hashes[user] = hash
        }
        return problems.isEmpty ? .success(PasswordFile(path: path, hashes: hashes)) : .failure(Problems(list: problems))
    }

    public init(path: String, hashes: [String: String]) {
        self.path = path
        self.hashes = hashes
    }

    /// Whether `password` is `user`'s. Slow on purpose (bcrypt, yescrypt): never call it on an
    /// event loop. An unknown user costs the same as a wrong password.
    public func verify(user: String, password: String) -> Bool {
        guard let hash = hashes[user] else {
            _ = Self.crypt(password, setting: Self.decoy)
            return false
        }
        guard let computed = Self.crypt(password, setting: hash) else { return false }
        return constantTimeEquals(Array(computed.utf8), Array(hash.utf8))
    }

    /// A bcrypt setting used to spend the same time on unknown users.
    static let decoy = "$2b$10$abcdefghijklmnopqrstuu5G5ZJvbv.8F8Qq6mpu1NZc/3QP6CDCa"

    /// crypt_rn with its own state buffer, so concurrent calls are safe.
    static func crypt(_ phrase: String, setting: String) -> String? {
        let size = MemoryLayout<crypt_data>.size
        let data = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer {
            data.initializeMemory(as: UInt8.self, repeating: 0, count: size)  // wipe the phrase
            data.deallocate()
        }
        data.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        guard let out = crypt_rn(phrase, setting, data, Int32(size)) else { return nil }
        let result = String(cString: out)
        return result.hasPrefix("*") ? nil : result
    }
}

/// Equality whose time does not depend on where the inputs differ (secrets, tokens).
public func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var diff = UInt8(a.count == b.count ? 0 : 1)
    for i in 0..<max(a.count, b.count) { diff |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0) }
    return diff == 0
}

/// Groups as Apache's AuthGroupFile: `group: user1 user2` a line.
public struct GroupFile: Sendable, Equatable {
    public let path: String
    public let groupsByUser: [String: Set<String>]

    public init(path: String, groupsByUser: [String: Set<String>]) {
        self.path = path
        self.groupsByUser = groupsByUser
    }

    public static func parse(_ text: String, path: String) -> Result<GroupFile, PasswordFile.Problems> {
        var byUser: [String: Set<String>] = [:]
        var problems: [PasswordFile.Problem] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters()
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                problems.append(.init(line: i + 1, message: "not 'group: user1 user2'"))
                continue
            }
            let group = String(line[..<colon]).trimmingCharacters()
            for user in line[line.index(after: colon)...].split(whereSeparator: { $0 == " " || $0 == "\t" }) {
                byUser[String(user), default: []].insert(group)
            }
        }
        return problems.isEmpty ? .success(GroupFile(path: path, groupsByUser: byUser)) : .failure(PasswordFile.Problems(list: problems))
    }
}

/// `Basic base64(user:password)` from a Proxy-Authorization value.
public func basicCredentials(_ headerValue: String) -> (user: String, password: String)? {
    let parts = headerValue.split(separator: " ", maxSplits: 1)
    guard parts.count == 2, parts[0].lowercased() == "basic", let decoded = base64Decode(parts[1].trimmingCharacters()) else { return nil }
    let text = String(decoding: decoded, as: UTF8.self)
    guard let colon = text.firstIndex(of: ":") else { return nil }
    let user = String(text[..<colon])
    guard !user.isEmpty else { return nil }
    return (user, String(text[text.index(after: colon)...]))
}

func base64Decode(_ s: String) -> [UInt8]? {
    var table = [UInt8](repeating: 255, count: 256)
    for (i, c) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8.enumerated() { table[Int(c)] = UInt8(i) }
    var out: [UInt8] = []
    var acc: UInt32 = 0
    var bits = 0
    var padding = 0
    for c in s.utf8 {
        if c == UInt8(ascii: "=") {
            padding += 1
            continue
        }
        guard padding == 0 else { return nil }
        let v = table[Int(c)]
        guard v != 255 else { return nil }
        acc = acc << 6 | UInt32(v)
        bits += 6
        if bits >= 8 {
            bits -= 8
            out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
        }
    }
    guard padding <= 2, (s.utf8.count % 4 == 0) else { return nil }
    return out
}

extension StringProtocol {
    func trimmingCharacters() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\r" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s = s.dropLast() }
        return String(s)
    }
}
