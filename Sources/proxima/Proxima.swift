import ArgumentParser
import Logging
import Metrics
import NIOCore
import NIOPosix
import ProximaConfig
import Prometheus
import ProximaServer
import UnixSignals

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@main
struct Proxima: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxima",
        abstract: "A forward proxy (HTTP and CONNECT) that is fast, safe by default and easy to watch.",
        discussion: """
            With no arguments, Proxima serves its built-in default: a forward proxy on 127.0.0.1:3128
            that accepts clients from loopback and private networks only, tunnels CONNECT to port 443
            only, and writes an access log line per request to stdout (Squid's format).

            Examples:
              proxima                                   # built-in default on 127.0.0.1:3128
              proxima serve --config /etc/proxima.yaml  # run with a configuration file
              proxima check --config /etc/proxima.yaml  # validate a file, list every problem
              curl -x http://127.0.0.1:3128 http://example.com/

            Signals: SIGTERM/SIGINT drain and exit, SIGHUP reloads the configuration file,
            SIGUSR1 reopens the access-log files (for logrotate).
            """,
        version: proximaVersion,
        subcommands: [Serve.self, Check.self],
        defaultSubcommand: Serve.self
    )
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the proxy (the default command).",
        discussion: """
            Examples:
              proxima serve                          # built-in default
              proxima serve --config proxima.yaml
            """
    )

    @Option(name: .shortAndLong, help: "YAML configuration file. Without it, the built-in default is used.")
    var config: String?

    func run() async throws {
        let configuration: ProximaConfiguration
        if let config {
            switch ConfigLoader.load(path: config) {
            case .success(let c): configuration = c
            case .failure(let errors):
                printError("proxima: \(config) has \(errors.issues.count) problem(s):")
                for issue in errors.issues { printError("  \(issue)") }
                throw ExitCode(2)
            }
        } else {
            configuration = .builtInDefault
        }
        let level = Logger.Level(rawValue: configuration.logging.level.rawValue) ?? .info
        let diagnostics = configuration.logging.diagnostics
        LoggingSystem.bootstrap { label in
            if diagnostics == .json {
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "proxima")

        // Trap signals before binding, so a signal that arrives during start-up is not lost.
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup, .sigusr1)
        signal(SIGPIPE, SIG_IGN)

        let server: ProximaServer
        let group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.workers ?? availableCPUCount())
        do {
            server = try ProximaServer(configuration: configuration, group: group, logger: logger)
            try await server.start()
        } catch {
            printError("proxima: \(error)")
            throw ExitCode(1)
        }
        // Metrics that libraries report through swift-metrics land in the same registry as the
        // proxy's own, so /metrics shows them all.
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: server.metrics.registry))
        let listeners = server.configuration.listeners
        let where_ = server.boundAddresses.map { bound -> String in
            let l = listeners.first { $0.name == bound.name }
            let kind = l.map { ($0.tls != nil ? "https " : "") + $0.role.rawValue } ?? "?"
            return "\(bound.name) (\(kind)) on \(bound.address.ipAddress ?? "?"):\(bound.address.port ?? 0)"
        }
        let admin = server.adminAddress.map { "; admin API on \($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? ""
        printError("proxima \(proximaVersion): listening: \(where_.joined(separator: ", "))\(admin)\(config == nil ? " (built-in default)" : "")")

        reportBlockLists(configuration, logger)
        let reloader = Reloader(path: config, started: configuration, server: server, logger: logger)
        server.setReloadAction { await reloader.reload() }
        for await sig in signals {
            if sig == .sighup {
                _ = await reloader.reload()
                continue
            }
            if sig == .sigusr1 {
                server.reopenAccessLogs()
                logger.notice("SIGUSR1: access-log files reopened")
                continue
            }
            logger.notice("\(sig == .sigterm ? "SIGTERM" : "SIGINT"): draining, then exiting")
            await server.shutdown()
            try? await group.shutdownGracefully()
            break
        }
    }
}

/// Re-reads the configuration file (SIGHUP or POST /reload), one reload at a time.
actor Reloader {
    let path: String?
    let started: ProximaConfiguration
    let server: ProximaServer
    let logger: Logger

    init(path: String?, started: ProximaConfiguration, server: ProximaServer, logger: Logger) {
        self.path = path
        self.started = started
        self.server = server
        self.logger = logger
    }

    func reload() async -> ReloadOutcome {
        guard let path else {
            logger.notice("reload: no configuration file to reload (running the built-in default)")
            return ReloadOutcome(.unavailable, "running the built-in default: there is no configuration file to reload")
        }
        switch ConfigLoader.load(path: path) {
        case .failure(let errors):
            server.recordRefusedReload()
            logger.error("reload refused, keeping the running configuration: \(errors.issues.count) problem(s)")
            for issue in errors.issues { logger.error("  \(issue)") }
            return ReloadOutcome(.refused, "\(path) has \(errors.issues.count) problem(s): " + errors.issues.map(\.description).joined(separator: "; "))
        case .success(let newConfig):
            // These are fixed when the server starts; say so rather than ignore them silently.
            var notes: [String] = []
            if newConfig.workers != started.workers {
                notes.append("workers changes need a restart; keeping \(started.workers.map(String.init) ?? "auto")")
            }
            if newConfig.dns != started.dns { notes.append("dns changes need a restart; keeping the running DNS cache settings") }
            if newConfig.admin?.address != started.admin?.address {
                notes.append("admin.address changes need a restart; the admin API stays where it is")
            }
            for n in notes { logger.warning("\(n)") }
            do {
                try await server.reload(newConfig)
                reportBlockLists(newConfig, logger)
                logger.notice("configuration reloaded from \(path)")
                return ReloadOutcome(.reloaded, (["reloaded from \(path)"] + notes).joined(separator: "; "))
            } catch {
                logger.error("reload failed, keeping the running configuration: \(error)")
                return ReloadOutcome(.refused, "reload failed, keeping the running configuration: \(error)")
            }
        }
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate a configuration file and print every problem with its key path and line.",
        discussion: """
            Exits 0 when the file is valid, 2 when it is not.

            Example:
              proxima check --config proxima.yaml
            """
    )

    @Option(name: .shortAndLong, help: "YAML configuration file to validate.")
    var config: String

    func run() throws {
        switch ConfigLoader.load(path: config) {
        case .success(let c):
            print("\(config): OK (\(c.listeners.count) listener(s), \(c.access.rules.count) access rule(s))")
        case .failure(let errors):
            printError("\(config): \(errors.issues.count) problem(s):")
            for issue in errors.issues { printError("  \(issue)") }
            throw ExitCode(2)
        }
    }
}

/// What each block list applied and what it had to leave out (never fatal).
func reportBlockLists(_ config: ProximaConfiguration, _ logger: Logger) {
    for list in config.blocklists {
        let skipped = list.skipped.sorted { $0.value > $1.value }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
        logger.notice("block list '\(list.name)' (\(list.source)): \(list.hostRuleCount) host rules, \(list.networkRuleCount) URL rules, \(list.cosmeticRuleCount) element-hiding rules\(skipped.isEmpty ? "" : "; not applied: \(skipped)")")
    }
}

func printError(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { buf in _ = write(2, buf.baseAddress, buf.count) }
}
