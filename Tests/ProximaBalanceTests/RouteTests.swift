import Testing

@testable import ProximaBalance

@Suite("Routes")
struct RouteTests {
    static func route(_ name: String, hosts: [String] = [], path: Route.PathMatch = .any, methods: Set<String>? = nil) -> Route {
        var r = Route(name: name, action: .upstream(name))
        r.hosts = hosts
        r.path = path
        r.methods = methods
        return r
    }

    @Test func firstMatchByHostPathAndMethod() throws {
        let table = RouteTable([
            Self.route("api-write", hosts: ["api.example.com"], path: .prefix("/v1"), methods: ["POST", "PUT"]),
            Self.route("api", hosts: ["api.example.com"], path: .prefix("/v1")),
            Self.route("ping", path: .exact("/ping")),
            Self.route("images", path: .regex(try PathPattern(#"/img/[0-9]+\.(png|jpg)"#))),
            Self.route("tenants", hosts: ["*.shop.example"]),
            Self.route("default"),
        ])
        func name(_ host: String, _ path: String, _ method: String = "GET") -> String? {
            table.route(host: host, pathAndQuery: path, method: method)?.name
        }
        #expect(name("api.example.com", "/v1/users", "POST") == "api-write")
        #expect(name("api.example.com", "/v1/users") == "api")
        #expect(name("api.example.com", "/v1") == "api")
        #expect(name("api.example.com", "/v1?x=1") == "api")
        // A prefix ends at a segment boundary.
        #expect(name("api.example.com", "/v10/users") == "default")
        #expect(name("other.example", "/ping") == "ping")
        #expect(name("other.example", "/ping/x") == "default")
        #expect(name("x", "/img/42.png") == "images")
        #expect(name("x", "/img/42.png.exe") == "default")
        #expect(name("a.shop.example", "/") == "tenants")
        #expect(name("a.b.shop.example", "/") == "tenants")
        #expect(name("shop.example", "/") == "default")
        #expect(RouteTable([Self.route("only", hosts: ["a.example"])]).route(host: "b.example", pathAndQuery: "/", method: "GET") == nil)
    }

    @Test func redirectLocations() {
        var r = Route(name: "r", action: .redirect(to: "https://new.example/", status: 301, keepPath: true))
        r.path = .prefix("/old/")
        #expect(r.location("/old/a/b?c=1") == "https://new.example/a/b?c=1")
        r.path = .any
        #expect(r.location("/x?y") == "https://new.example/x?y")
        r.action = .redirect(to: "https://new.example/landing", status: 302, keepPath: false)
        #expect(r.location("/x?y") == "https://new.example/landing")
    }

    @Test(arguments: [
        ("/api/", "/", "/api/users?x=1", "/users?x=1"),
        ("/api/", "/", "/api/", "/"),
        ("/api", "/v2", "/api/users", "/v2/users"),
        ("/api", "", "/api/users", "/users"),
        ("/api/", "/internal/", "/api/a/b", "/internal/a/b"),
        ("/old", "/new", "/old?q", "/new?q"),
    ])
    func prefixRewrite(_ prefix: String, _ replacement: String, _ path: String, _ expected: String) {
        var r = Route(name: "r", action: .upstream("u"))
        r.path = .prefix(prefix)
        r.replacePrefix = replacement
        #expect(r.rewrite(path) == expected)
        r.replacePrefix = nil
        #expect(r.rewrite(path) == path)
    }
}
