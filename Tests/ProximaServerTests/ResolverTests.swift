import NIOCore
import NIOPosix
import Testing

@testable import ProximaServer

@Suite("DNS resolver")
struct ResolverTests {
    /// Long lifetimes unless a test is about expiry: a loaded machine can take seconds between
    /// two awaits (a 5 s negative lifetime once expired between two calls of one test).
    func makeResolver(ttl: TimeAmount = .seconds(600)) -> (DNSResolver, NIOThreadPool) {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        return (DNSResolver(threadPool: pool, ttl: ttl, negativeTTL: .seconds(600), maxEntries: 100), pool)
    }

    @Test func concurrentLookupsOfOneNameMakeOneCallAndAreCached() async throws {
        let (resolver, pool) = makeResolver()
        defer { pool.shutdownGracefully { _ in } }
        let group = MultiThreadedEventLoopGroup.singleton
        let futures = (0..<50).map { i in resolver.resolve(host: "localhost", port: 8000 + i, on: group.next()) }
        for (i, f) in futures.enumerated() {
            let addresses = try await f.get()
            #expect(!addresses.isEmpty)
            #expect(addresses.allSatisfy { $0.port == 8000 + i })
        }
        #expect(resolver.lookups.load(ordering: .relaxed) == 1)
        _ = try await resolver.resolve(host: "localhost", port: 1, on: group.next()).get()
        #expect(resolver.lookups.load(ordering: .relaxed) == 1)
    }

    @Test func ipLiteralsNeedNoLookupAndFailuresAreRemembered() async throws {
        let (resolver, pool) = makeResolver()
        defer { pool.shutdownGracefully { _ in } }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        #expect(try await resolver.resolve(host: "::1", port: 80, on: loop).get().first?.port == 80)
        #expect(resolver.lookups.load(ordering: .relaxed) == 0)
        await #expect(throws: ResolveError.self) { _ = try await resolver.resolve(host: "nothing.invalid", port: 80, on: loop).get() }
        await #expect(throws: ResolveError.self) { _ = try await resolver.resolve(host: "nothing.invalid", port: 80, on: loop).get() }
        #expect(resolver.lookups.load(ordering: .relaxed) == 1)
    }

    @Test func entriesExpire() async throws {
        let (resolver, pool) = makeResolver(ttl: .milliseconds(1))
        defer { pool.shutdownGracefully { _ in } }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        _ = try await resolver.resolve(host: "localhost", port: 80, on: loop).get()
        try await Task.sleep(for: .milliseconds(20))
        _ = try await resolver.resolve(host: "localhost", port: 80, on: loop).get()
        #expect(resolver.lookups.load(ordering: .relaxed) == 2)
    }
}
