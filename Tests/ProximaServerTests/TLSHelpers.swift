import Foundation
import ProximaTesting

/// A certificate authority and leaf certificates made with the openssl command for one test,
/// in a fresh directory: nothing is shared between tests or kept afterwards.
struct TestPKI {
    let directory: String
    var caCertificate: String { directory + "/ca.pem" }

    /// A new CA named `name` (two CAs made in one test are different authorities).
    static func make(_ name: String = "Proxima Test CA") throws -> TestPKI {
        let dir = makeTempPath("proxima-pki", "")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", "/CN=\(name)", "-keyout", dir + "/ca.key", "-out", dir + "/ca.pem",
        ])
        return TestPKI(directory: dir)
    }

    /// A leaf certificate for `names` (DNS names, and IP addresses written as `IP:…`), signed by
    /// this CA; returns the certificate and key paths. `tag` keeps several leaves apart.
    @discardableResult
    func leaf(_ tag: String, names: [String]) throws -> (certificate: String, key: String) {
        let cert = "\(directory)/\(tag).pem"
        let key = "\(directory)/\(tag).key"
        let csr = "\(directory)/\(tag).csr"
        let san = names.map { $0.hasPrefix("IP:") ? $0 : "DNS:\($0)" }.joined(separator: ",")
        try Self.openssl([
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=\(names[0])",
            "-addext", "subjectAltName=\(san)", "-keyout", key, "-out", csr,
        ])
        try Self.openssl([
            "x509", "-req", "-in", csr, "-CA", caCertificate, "-CAkey", directory + "/ca.key", "-CAcreateserial",
            "-days", "2", "-copy_extensions", "copy", "-out", cert,
        ])
        return (cert, key)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }

    static func openssl(_ arguments: [String]) throws {
        let result = try runBlocking("/usr/bin/openssl", arguments)
        if result.status != 0 {
            throw ServerTestError("openssl \(arguments.first ?? "") failed: \(result.error)")
        }
    }
}

struct ServerTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
