import Testing

@testable import ProximaServer

@Suite("Request ids: format")
struct RequestIDFormatTests {
    @Test func sixteenHexDigitsADashAndACounter() {
        let a = RequestIDs.next()
        let b = RequestIDs.next()
        for id in [a, b] {
            let parts = id.split(separator: "-")
            #expect(parts.count == 2 && parts[0].count == 16 && parts[1].count >= 12, "\(id)")
            #expect(id.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) || $0 == 0x2D }, "\(id)")
            #expect(RequestIDs.acceptable(id))
        }
        #expect(a.prefix(17) == b.prefix(17))
        #expect(UInt64(a.dropFirst(17), radix: 16)! < UInt64(b.dropFirst(17), radix: 16)!)
    }
}
