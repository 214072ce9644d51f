import NIOCore
import NIOSSL
import NIOTLS
import ProximaConfig
import ProximaPolicy

/// A TLS listener's certificates, loaded from their PEM files: one server context whose
/// handshake swaps in the chain the client's SNI names (nginx's `server_name` per certificate,
/// HAProxy's `crt-list`). Built at start and on every reload, so a reload picks up renewed
/// certificates; connections already open keep the context they were accepted with.
final class ListenerTLS: Sendable {
    let context: NIOSSLContext

    struct Chain: Sendable {
        let certificates: [NIOSSLCertificateSource]
        let key: NIOSSLPrivateKeySource
    }

    /// Chooses a certificate by SNI: exact names first, then `*.parent` wildcards (one label,
    /// as RFC 6125 allows); an unknown or absent name gets the first certificate.
    struct SNITable: Sendable {
        var exact: [String: Int] = [:]
        var wildcard: [String: Int] = [:]

        mutating func add(_ name: String, _ index: Int) {
            let n = name.lowercased()
            if n.hasPrefix("*.") {
                let parent = String(n.dropFirst(2))
                if wildcard[parent] == nil { wildcard[parent] = index }
            } else if exact[n] == nil {
                exact[n] = index
            }
        }

        func lookup(_ serverName: String?) -> Int {
            guard var name = serverName?.lowercased() else { return 0 }
            if name.hasSuffix(".") { name.removeLast() }
            if let i = exact[name] { return i }
            if let dot = name.firstIndex(of: "."), let i = wildcard[String(name[name.index(after: dot)...])] { return i }
            return 0
        }
    }

    init(_ config: ListenerTLSConfig, listener: String, http2: Bool) throws {
        var chains: [Chain] = []
        var table = SNITable()
        for (i, c) in config.certificates.enumerated() {
            let certificates: [NIOSSLCertificate]
            let key: NIOSSLPrivateKey
            do {
                certificates = try NIOSSLCertificate.fromPEMFile(c.certificate)
            } catch {
                throw ServerStartError(description: "listener '\(listener)': cannot load the certificate \(c.certificate): \(error)")
            }
            guard let leaf = certificates.first else {
                throw ServerStartError(description: "listener '\(listener)': \(c.certificate) holds no PEM certificate")
            }
            do {
                key = try NIOSSLPrivateKey(file: c.key, format: .pem)
            } catch {
                throw ServerStartError(description: "listener '\(listener)': cannot load the key \(c.key): \(error)")
            }
            let chain = Chain(certificates: certificates.map { .certificate($0) }, key: .privateKey(key))
            // A key that does not belong to its certificate fails here, at load, not in a handshake.
            do {
                _ = try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: chain.certificates, privateKey: chain.key))
            } catch {
                throw ServerStartError(description: "listener '\(listener)': \(c.key) is not the key of \(c.certificate): \(error)")
            }
            let certNames = c.names ?? Self.dnsNames(leaf)
            for n in certNames { table.add(n, i) }
            chains.append(chain)
        }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chains[0].certificates, privateKey: chains[0].key)
        tls.minimumTLSVersion = config.minVersion == .tls13 ? .tlsv13 : .tlsv12
        tls.applicationProtocols = http2 ? ["h2", "http/1.1"] : ["http/1.1"]
        if chains.count > 1 {
            let sni = table
            let all = chains
            tls.sslContextCallback = { values, promise in
                let i = sni.lookup(values.serverHostname)
                guard i != 0 else { return promise.succeed(.noChanges) }
                var change = NIOSSLContextConfigurationOverride()
                change.certificateChain = all[i].certificates
                change.privateKey = all[i].key
                promise.succeed(change)
            }
        }
        do {
            context = try NIOSSLContext(configuration: tls)
        } catch {
            throw ServerStartError(description: "listener '\(listener)': TLS setup failed: \(error)")
        }
    }

    /// The certificate's DNS subject alternative names.
    static func dnsNames(_ certificate: NIOSSLCertificate) -> [String] {
        certificate._subjectAlternativeNames().compactMap { san in
            guard san.nameType == .dnsName else { return nil }
            return san.contents.withUnsafeBufferPointer { String(decoding: $0, as: UTF8.self) }
        }
    }
}

/// TLS towards an upstream group's servers: verified against the system's (or the configured)
/// authorities, for the configured name or else the server's host (an IP address is checked
/// against the certificate's IP addresses), unless verification is explicitly turned off.
final class UpstreamTLS: Sendable {
    let context: NIOSSLContext
    let serverName: String?

    init(_ config: UpstreamTLSConfig, group: String) throws {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        tls.applicationProtocols = ["http/1.1"]
        if let ca = config.ca { tls.trustRoots = .file(ca) }
        if config.insecureSkipVerify { tls.certificateVerification = .none }
        do {
            context = try NIOSSLContext(configuration: tls)
        } catch {
            throw ServerStartError(description: "upstream '\(group)': TLS setup failed: \(error)")
        }
        serverName = config.serverName
    }

    /// The SNI name for a server: the configured one, else its host when that is a name (SNI
    /// must not carry an address).
    func sniName(host: String) -> String? {
        if let serverName { return serverName }
        return IPAddress(host) == nil ? host : nil
    }
}

struct UpstreamTLSError: Error {
    let underlying: Error

    var reason: String {
        if case ChannelError.connectTimeout? = underlying as? ChannelError { return "the handshake timed out" }
        if let e = underlying as? NIOSSLError, case .handshakeFailed(let inner) = e { return "handshake failed (\(inner))" }
        return "\(underlying)"
    }
}

/// Completes a promise when the TLS handshake on its channel ends, either way, then steps aside.
final class HandshakeWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let done: EventLoopPromise<Void>

    init(_ done: EventLoopPromise<Void>) { self.done = done }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSUserEvent, case .handshakeCompleted = e {
            done.succeed()
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        done.fail(error)
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        done.fail(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }
}
