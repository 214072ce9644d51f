import Foundation
import Testing

@testable import ProximaAuth

/// Written by `htpasswd -nbB` (Apache 2.4), `mkpasswd -m yescrypt` and `mkpasswd -m sha-512`.
let sampleFile = """
    # comment
    alice:$2y$05$ZvosaoewX4al0./kmIgiROifv7Psh6Zh4sf.owuehd0wXlzPHDFdW
    bob:$2y$05$dZP/dDIRDFIm1oLB/khN6.9e1gMoBzMFoD6Bw0n2b8dbyDG7o6OjW
    carol:$y$j9T$b92lOFHkoYKuMdUrJiNi11$mOCsxgvtaNq1Gs8y4VP35HsTmrxjRZpN6VPxCn9XRC/
    dave:$6$VY2RZMRYHf/MpKga$MGJXM3GLTY6LOlsUaU7ScT5eymL9bGEh6SErHAc2gYBZT6X4A/gtWiPHqS1xiuJvbufIkPNUlMeoIYihbxbOO.

    """

@Suite("htpasswd and group files, Basic credentials")
struct PasswordTests {
    @Test func verifiesEverySupportedScheme() throws {
        let f = try PasswordFile.parse(sampleFile, path: "t").get()
        #expect(f.hashes.count == 4)
        #expect(f.verify(user: "alice", password: "s3cret pass"))
        #expect(f.verify(user: "bob", password: "hunter2"))
        #expect(f.verify(user: "carol", password: "hunter3"))
        #expect(f.verify(user: "dave", password: "hunter4"))
        #expect(!f.verify(user: "alice", password: "s3cret pas"))
        #expect(!f.verify(user: "bob", password: "hunter3"))
        #expect(!f.verify(user: "mallory", password: "hunter2"))
        #expect(!f.verify(user: "dave", password: ""))
    }

    @Test func weakAndPlainEntriesAreRefusedWithTheirLines() {
        let text = "ok:$2y$05$ZvosaoewX4al0./kmIgiROifv7Psh6Zh4sf.owuehd0wXlzPHDFdW\nplain:secret\nmd5:$apr1$VQpJiac/$M2As3i9nFfu7WeFdME1fu0\nsha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\nnocolon\nok:$2y$05$dZP/dDIRDFIm1oLB/khN6.9e1gMoBzMFoD6Bw0n2b8dbyDG7o6OjW\n"
        guard case .failure(let all) = PasswordFile.parse(text, path: "t") else {
            Issue.record("accepted a weak file")
            return
        }
        let problems = all.list
        #expect(problems.map(\.line) == [2, 3, 4, 5, 6])
        #expect(problems[0].message.contains("plain-text"))
        #expect(problems[1].message.contains("MD5"))
        #expect(problems[2].message.contains("SHA-1"))
        #expect(problems[4].message.contains("twice"))
    }

    /// The file format is what the real tool writes (when it is installed: .ci/run installs it).
    @Test func filesWrittenByHtpasswdVerify() throws {
        let htpasswd = try #require(["/usr/bin/htpasswd", "/usr/sbin/htpasswd"].first { FileManager.default.isExecutableFile(atPath: $0) },
                                    "htpasswd is needed (apt-get install apache2-utils)")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: htpasswd)
        p.arguments = ["-nbB", "erin", "pässwörd:with colon"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        let f = try PasswordFile.parse(text, path: "t").get()
        #expect(f.verify(user: "erin", password: "pässwörd:with colon"))
        #expect(!f.verify(user: "erin", password: "pässwörd"))
    }

    /// Hashes made by `mkpasswd` (Debian's whois package) in the test, for the crypt(3) schemes.
    @Test(arguments: ["sha-512", "yescrypt", "sha-256", "bcrypt"])
    func hashesMadeByMkpasswdVerify(_ method: String) throws {
        let mkpasswd = try #require(["/usr/bin/mkpasswd"].first { FileManager.default.isExecutableFile(atPath: $0) },
                                    "mkpasswd is needed (apt-get install whois)")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: mkpasswd)
        p.arguments = ["-m", method, "--stdin"]
        let input = Pipe()
        let out = Pipe()
        p.standardInput = input
        p.standardOutput = out
        try p.run()
        input.fileHandleForWriting.write(Data("correct horse".utf8))
        try input.fileHandleForWriting.close()
        let hash = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        p.waitUntilExit()
        try #require(p.terminationStatus == 0 && hash.hasPrefix("$"), "mkpasswd -m \(method) gave '\(hash)'")
        let f = try PasswordFile.parse("frank:\(hash)\n", path: "t").get()
        #expect(f.verify(user: "frank", password: "correct horse"))
        #expect(!f.verify(user: "frank", password: "correct horse "))
    }

    @Test func groupsAndCredentials() throws {
        let g = try GroupFile.parse("staff: alice bob\nadmins:alice\n# x\n", path: "g").get()
        #expect(g.groupsByUser["alice"] == ["staff", "admins"])
        #expect(g.groupsByUser["bob"] == ["staff"])
        #expect(basicCredentials("Basic YWxpY2U6czNjcmV0IHBhc3M=")! == ("alice", "s3cret pass"))
        #expect(basicCredentials("basic YTpiOmM=")! == ("a", "b:c"))
        #expect(basicCredentials("Bearer YWxpY2U6eA==") == nil)
        #expect(basicCredentials("Basic !!!") == nil)
        #expect(basicCredentials("Basic OnB3") == nil)  // ":pw", no user
        #expect(basicCredentials("Basic YWxpY2U") == nil)  // not a multiple of 4
    }
}
