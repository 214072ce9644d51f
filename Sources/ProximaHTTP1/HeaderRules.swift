import NIOCore

/// A rule on the header fields of requests (to the origin) or responses (to the client), as
/// Squid's `request_header_access` / `reply_header_access` (remove) and `header_replace` (set),
/// with a pattern replacement on values besides.
public struct HeaderRule: Sendable, Equatable, CustomStringConvertible {
    public enum Direction: String, Sendable, Equatable, CaseIterable { case request, response }

    public enum Action: Sendable, Equatable {
        /// Drop every field of that name.
        case remove
        /// Drop every field of that name and send one with this value instead.
        case set(String)
        /// Send one more field with this value, keeping those received (nginx's `add_header`).
        case add(String)
        /// In every field of that name, replace what the pattern matches (all occurrences).
        case replace(HeaderValuePattern, with: String)
    }

    public var direction: Direction
    /// Lowercase; a trailing `*` makes it a prefix (`sec-ch-*`).
    public var name: String
    public var action: Action

    public init(direction: Direction, name: String, action: Action) {
        self.direction = direction
        self.name = name.lowercased()
        self.action = action
    }

    func applies(to lowercasedName: String) -> Bool {
        if name.hasSuffix("*") { return lowercasedName.hasPrefix(name.dropLast()) }
        return lowercasedName == name
    }

    public var description: String {
        switch action {
        case .remove: return "\(direction.rawValue) remove \(name)"
        case .set(let v): return "\(direction.rawValue) set \(name): \(v)"
        case .add(let v): return "\(direction.rawValue) add \(name): \(v)"
        case .replace(let p, let w): return "\(direction.rawValue) replace \(name) /\(p.source)/ → \(w)"
        }
    }
}

/// A regular expression on header values (Swift Regex syntax).
public struct HeaderValuePattern: Sendable, Equatable {
    public let source: String
    nonisolated(unsafe) let regex: Regex<AnyRegexOutput>

    public init(_ source: String) throws {
        self.source = source
        self.regex = try Regex(source)
    }

    public static func == (a: HeaderValuePattern, b: HeaderValuePattern) -> Bool { a.source == b.source }
}

/// The rules of one direction, applied to one head: which received fields are not copied, and
/// which lines are written after the copied ones instead.
public struct HeaderEdit: Sendable {
    /// Received fields to leave out (by where their line starts in the head).
    var dropped: Set<Int> = []
    /// `Name: value` lines (without CRLF) to write after the copied fields.
    var lines: [String] = []

    public init() {}

    /// One more field line written after the copied ones (the proxy's own, e.g. `Age`); CR and
    /// LF are removed from the value.
    public mutating func append(name: String, value: String) {
        lines.append(name + ": " + Self.clean(value))
    }

    /// Received fields of these (lowercase) names are not copied.
    public mutating func drop(_ lowercasedNames: Set<String>, bytes: ByteBuffer, fields: [FieldRange]) {
        for f in fields where lowercasedNames.contains(bytes.string(at: f.nameStart, length: f.nameLength).lowercased()) {
            dropped.insert(f.lineStart)
        }
    }

    /// Whether a rule writes a field of this (lowercase) name.
    func writes(_ lowercasedName: String) -> Bool {
        lines.contains { $0.lowercased().hasPrefix(lowercasedName + ":") }
    }

    func drops(_ f: FieldRange) -> Bool { !dropped.isEmpty && dropped.contains(f.lineStart) }

    func write(into w: inout BoundedWriter) {
        for line in lines {
            w.append(line)
            w.append("\r\n")
        }
    }
    var extraBytes: Int { lines.reduce(0) { $0 + $1.utf8.count + 2 } }

    /// `rules` in order; a later rule sees what an earlier one left (a `set` after a `replace`
    /// wins). `extraRemovals` are lowercase names dropped besides (for the proxy's own needs).
    public init(rules: [HeaderRule], bytes: ByteBuffer, fields: [FieldRange], extraRemovals: [String] = []) {
        guard !rules.isEmpty || !extraRemovals.isEmpty else { return }
        // name (as received), lowercase name, value; nil once removed.
        var current: [(name: String, lower: String, value: String)?] = fields.map { f in
            let name = bytes.string(at: f.nameStart, length: f.nameLength)
            return (name, name.lowercased(), bytes.string(at: f.valueStart, length: f.valueLength))
        }
        var changed: Set<Int> = []
        var added: [(String, String)] = []
        for (i, field) in current.enumerated() where field.map({ extraRemovals.contains($0.lower) }) == true {
            current[i] = nil
            changed.insert(i)
        }
        for rule in rules {
            switch rule.action {
            case .remove, .set:
                for (i, field) in current.enumerated() where field.map({ rule.applies(to: $0.lower) }) == true {
                    current[i] = nil
                    changed.insert(i)
                }
                added.removeAll { rule.applies(to: $0.0.lowercased()) }
                if case .set(let value) = rule.action, !rule.name.hasSuffix("*") {
                    added.append((Self.displayName(rule.name), Self.clean(value)))
                }
            case .add(let value):
                added.append((Self.displayName(rule.name), Self.clean(value)))
            case .replace(let pattern, let replacement):
                for (i, field) in current.enumerated() {
                    guard let f = field, rule.applies(to: f.lower) else { continue }
                    let value = Self.clean(f.value.replacing(pattern.regex, with: replacement))
                    if value != f.value {
                        current[i] = (f.name, f.lower, value)
                        changed.insert(i)
                    }
                }
                for j in added.indices where rule.applies(to: added[j].0.lowercased()) {
                    added[j].1 = Self.clean(added[j].1.replacing(pattern.regex, with: replacement))
                }
            }
        }
        dropped = Set(changed.map { fields[$0].lineStart })
        for i in changed.sorted() {
            if let f = current[i], !f.value.isEmpty { lines.append("\(f.name): \(f.value)") }
        }
        lines += added.map { "\($0.0): \($0.1)" }
    }

    /// A value written by a rule cannot start a new field: CR and LF are removed.
    static func clean(_ value: String) -> String {
        String(value.unicodeScalars.filter { $0 != "\r" && $0 != "\n" && $0 != "\0" })
    }

    /// `x-forwarded-proto` → `X-Forwarded-Proto`.
    static func displayName(_ lower: String) -> String {
        lower.split(separator: "-", omittingEmptySubsequences: false).map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined(separator: "-")
    }
}
