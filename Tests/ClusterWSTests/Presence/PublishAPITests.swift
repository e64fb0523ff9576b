@testable import ClusterWS
import ClusterWSPublishAPI
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Testing

/// One HTTP/1.1 request over a real socket; the status and the JSON body.
func httpJSON(_ port: Int, _ method: String, _ path: String, body: String = "", headers: [String: String] = [:])
    async throws -> (status: Int, json: [String: Any]) {
    let client = try await RawClient.connect(port: port)
    defer { client.close() }
    var request = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nContent-Length: \(body.utf8.count)\r\n"
    for (name, value) in headers { request += "\(name): \(value)\r\n" }
    try await client.send(request + "\r\n" + body)
    let response = try await within(.seconds(10), "an HTTP response") { try await client.readHTTPResponse() }
    let json = (try? JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]) ?? [:]
    return (response.status, json)
}

@Suite("The HTTP publish API: auth, bodies, counts, presence, idempotency", .serialized, .timeLimit(.minutes(3)))
struct PublishAPITests {
    static let key = "test-key"
    static let secret = "test-secret"

    /// Both nodes serve the API (API key and signing secret accepted).
    static func serveAPI(_ cluster: TestCluster) throws -> [String: Int] {
        var ports: [String: Int] = [:]
        for id in ["a", "b"] {
            let api = try PublishAPI(node: cluster[id], configuration: .init(apiKeys: [key], signingSecrets: [secret]))
            cluster[id].setHTTPResponder { request in await api.respond(to: request) ?? .text("not here\n", status: .notFound) }
        }
        return ports
    }

    @Test(arguments: [ClusterConfiguration.Driver.pubSub, .queue])
    func publishReachesEveryKindOfTargetAndAnswersTheCounts(driver: ClusterConfiguration.Driver) async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: driver, backend: .single)) { cluster in
            _ = try Self.serveAPI(cluster)
            let port = try await cluster["a"].waitUntilListening()
            let auth = ["Authorization": "Bearer \(Self.key)"]
            let alice = try await ClusterClient.connect(cluster["b"], uid: "alice")
            let bob = try await ClusterClient.connect(cluster["b"], uid: "bob")
            try await cluster["b"].join(bob.fd, room: "lobby")

            var answer = try await httpJSON(port, "POST", "/api/publish", body: #"{"uid":"alice","text":"hi alice"}"#, headers: auth)
            #expect(answer.status == 200 && answer.json["reached"] as? Int == 1, "\(answer)")
            #expect(try await alice.next().text == "hi alice")

            answer = try await httpJSON(port, "POST", "/api/publish", body: #"{"uids":["alice","bob","nobody"],"binary":"AAEC"}"#, headers: auth)
            #expect(answer.json["per_user"] as? [String: Int] == ["alice": 1, "bob": 1, "nobody": 0], "\(answer)")
            let binary = try await alice.next()
            #expect(binary.opcode == Wire.binary && binary.payload == [0, 1, 2])
            #expect(try await bob.next().payload == [0, 1, 2])

            answer = try await httpJSON(port, "POST", "/api/publish", body: #"{"room":"lobby","text":"to the room"}"#, headers: auth)
            #expect(answer.json["reached"] as? Int == 1)
            #expect(try await bob.next().text == "to the room")

            answer = try await httpJSON(port, "POST", "/api/publish", body: "{\"fd\":\"\(alice.fd)\",\"text\":\"just you\"}", headers: auth)
            #expect(answer.json["reached"] as? Int == 1)
            #expect(try await alice.next().text == "just you")

            answer = try await httpJSON(port, "POST", "/api/publish", body: #"{"all":true,"text":"everyone"}"#, headers: auth)
            #expect(answer.status == 200)
            #expect(try await alice.next().text == "everyone")
            #expect(try await bob.next().text == "everyone")

            answer = try await httpJSON(port, "GET", "/api/online?uid=alice", headers: auth)
            #expect(answer.json["online"] as? Bool == true && answer.json["connections"] as? [String] == [alice.fd.description])
            answer = try await httpJSON(port, "GET", "/api/online?uid=ghost", headers: auth)
            #expect(answer.json["online"] as? Bool == false)
        }
    }

    /// No credentials, a wrong key, a bad or stale signature: 401. A good
    /// signature: 200. Bad bodies and names: 400 with a message; wrong
    /// method 405; unknown route 404; other paths are the application's.
    @Test func refusalsAreTypedJSON() async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: .pubSub, backend: .single)) { cluster in
            _ = try Self.serveAPI(cluster)
            let port = try await cluster["a"].waitUntilListening()
            let body = #"{"uid":"alice","text":"x"}"#
            #expect(try await httpJSON(port, "POST", "/api/publish", body: body).status == 401)
            #expect(try await httpJSON(port, "POST", "/api/publish", body: body, headers: ["X-API-Key": "wrong"]).status == 401)
            let now = "\(Int(Date().timeIntervalSince1970))"
            let good = RequestSignature.sign(secret: Self.secret, timestamp: now, method: "POST", uri: "/api/publish",
                                             body: ByteBuffer(string: body))
            #expect(try await httpJSON(port, "POST", "/api/publish", body: body,
                                       headers: ["X-ClusterWS-Timestamp": now, "X-ClusterWS-Signature": good]).status == 200)
            let tampered = #"{"uid":"mallory","text":"x"}"#
            #expect(try await httpJSON(port, "POST", "/api/publish", body: tampered,
                                       headers: ["X-ClusterWS-Timestamp": now, "X-ClusterWS-Signature": good]).status == 401)
            let old = "\(Int(Date().timeIntervalSince1970) - 3_600)"
            let stale = RequestSignature.sign(secret: Self.secret, timestamp: old, method: "POST", uri: "/api/publish",
                                              body: ByteBuffer(string: body))
            #expect(try await httpJSON(port, "POST", "/api/publish", body: body,
                                       headers: ["X-ClusterWS-Timestamp": old, "X-ClusterWS-Signature": stale]).status == 401)

            let auth = ["X-API-Key": Self.key]
            for bad in ["not json", "[]", #"{"text":"no target"}"#, #"{"uid":"a","room":"r","text":"two targets"}"#,
                        #"{"uid":"a"}"#, #"{"uid":"a","text":"t","binary":"AA=="}"#, #"{"uid":"a","binary":"%%%"}"#,
                        #"{"uid":7,"text":"t"}"#, #"{"fd":"nonsense","text":"t"}"#, #"{"all":false,"text":"t"}"#,
                        #"{"uid":"","text":"t"}"#, "{\"uid\":\"a\\u0001b\",\"text\":\"t\"}"] {
                let answer = try await httpJSON(port, "POST", "/api/publish", body: bad, headers: auth)
                #expect(answer.status == 400 && !((answer.json["error"] as? String) ?? "").isEmpty, "\(bad): \(answer)")
            }
            #expect(try await httpJSON(port, "GET", "/api/publish", headers: auth).status == 405)
            #expect(try await httpJSON(port, "GET", "/api/nothing", headers: auth).status == 404)
            #expect(try await httpJSON(port, "GET", "/api/presence?room=lobby", headers: auth).status == 400)  // presence off
            #expect(try await httpJSON(port, "GET", "/elsewhere").status == 404)
            #expect(throws: ClusterError.self) { try PublishAPI(node: cluster["a"], configuration: .init()) }
        }
    }

    @Test func presenceOverHTTP() async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: .pubSub, backend: .single),
                              configure: { $0.presence.rooms = true }) { cluster in
            _ = try Self.serveAPI(cluster)
            let port = try await cluster["a"].waitUntilListening()
            let carol = try await ClusterClient.connect(cluster["b"], uid: "carol")
            try await cluster["b"].join(carol.fd, room: "lobby", metadata: "Carol")
            let answer = try await httpJSON(port, "GET", "/api/presence?room=lobby", headers: ["X-API-Key": Self.key])
            let members = answer.json["members"] as? [[String: String]]
            #expect(members == [["uid": "carol", "fd": carol.fd.description, "node": "b", "metadata": "Carol"]], "\(answer)")
        }
    }

    /// The same idempotency key published 8 times at once, half through
    /// each node: delivered once; every answer carries the first result.
    @Test(arguments: [ClusterConfiguration.Driver.pubSub, .queue])
    func concurrentDuplicatesOnTwoNodesAreDeliveredOnce(driver: ClusterConfiguration.Driver) async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: driver, backend: .single)) { cluster in
            _ = try Self.serveAPI(cluster)
            let portA = try await cluster["a"].waitUntilListening()
            let portB = try await cluster["b"].waitUntilListening()
            let dave = try await ClusterClient.connect(cluster["b"], uid: "dave")
            let body = #"{"uid":"dave","text":"once","idempotency_key":"order-42"}"#
            // Per answer: status, reached, duplicate.
            let answers = try await withThrowingTaskGroup(of: (Int, Int?, Bool).self) { group in
                for index in 0..<8 {
                    group.addTask {
                        let answer = try await httpJSON(index % 2 == 0 ? portA : portB, "POST", "/api/publish", body: body,
                                                        headers: ["X-API-Key": Self.key])
                        return (answer.status, answer.json["reached"] as? Int, answer.json["duplicate"] as? Bool ?? false)
                    }
                }
                var all: [(Int, Int?, Bool)] = []
                for try await answer in group { all.append(answer) }
                return all
            }
            #expect(answers.allSatisfy { $0.0 == 200 && $0.1 == 1 }, "\(answers)")
            #expect(answers.filter { $0.2 }.count == 7)
            #expect(try await dave.next().text == "once")
            // A different key is delivered; the Swift API shares the keys.
            let swift = try await cluster["a"].sender.publish(.text("twice?"), to: .user("dave"), idempotencyKey: "order-42")
            #expect(swift.duplicate && swift.reached == 1)
            let other = try await cluster["a"].sender.publish(.text("another"), to: .user("dave"), idempotencyKey: "order-43")
            #expect(!other.duplicate)
            #expect(try await dave.next().text == "another")
            await #expect(throws: ClusterError.self) {
                try await cluster["a"].sender.publish(.text("x"), to: .user("dave"), idempotencyKey: "")
            }
        }
    }
}

/// The publish API behind a Hummingbird route (a backend service that
/// embeds it): a POST through the application reaches a user on a node.
@Suite("The publish API in a Hummingbird application", .timeLimit(.minutes(1)))
struct PublishAPIInHummingbirdTests {
    @Test func aHummingbirdRouteServesThePublishAPI() async throws {
        try await withCluster(["a", "b"], RoutingCase(driver: .pubSub, backend: .single)) { cluster in
            let api = try PublishAPI(node: cluster["a"], configuration: .init(apiKeys: ["hb-key"]))
            let router = Router()
            router.post("/api/publish") { request, _ -> Response in
                let body = try await request.body.collect(upTo: 1 << 20)
                guard let answer = await api.respond(method: "POST", uri: request.uri.description,
                                                     headers: request.headers.map { ($0.name.rawName, $0.value) }, body: body)
                else { return Response(status: .notFound) }
                var headers = HTTPFields()
                for (name, value) in answer.headers { if let field = HTTPField.Name(name) { headers[field] = value } }
                return Response(status: .init(code: answer.status), headers: headers, body: .init(byteBuffer: answer.body))
            }
            let portBox = Recorder<Int>()
            var logger = Logger(label: "test.hummingbird")
            logger.logLevel = .warning
            let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                                  onServerRunning: { channel in portBox.append(channel.localAddress?.port ?? 0) }, logger: logger)
            let harness = ServiceGroupHarness(app)
            try await harness.start()
            await portBox.wait(for: 1)
            let erin = try await ClusterClient.connect(cluster["b"], uid: "erin")
            let answer = try await httpJSON(portBox.all[0], "POST", "/api/publish", body: #"{"uid":"erin","text":"via hummingbird"}"#,
                                            headers: ["Authorization": "Bearer hb-key"])
            #expect(answer.status == 200 && answer.json["reached"] as? Int == 1, "\(answer)")
            #expect(try await erin.next().text == "via hummingbird")
            #expect(try await httpJSON(portBox.all[0], "POST", "/api/publish", body: "{}").status == 401)
            try await harness.shutdownGracefully()
        }
    }
}
