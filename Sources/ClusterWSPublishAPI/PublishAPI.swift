public import ClusterWS
import Foundation
public import NIOCore
import NIOHTTP1

/// The HTTP API for backends in any language, on a node's own port (or in a
/// Hummingbird application through ``respond(method:uri:headers:body:)``):
///
/// - `POST <prefix>/publish` — a JSON body with exactly one target (`uid`,
///   `uids`, `fd`, `room` or `"all": true`), exactly one payload (`text`, or
///   `binary` in base64) and an optional `idempotency_key`; answers
///   `{"reached":N}` (and `"per_user"` for `uids`, `"duplicate":true` for a
///   repeated key), the counts the Swift `send…` calls return.
/// - `GET <prefix>/presence?room=R` — the room's members (with `presence.rooms` on).
/// - `GET <prefix>/online?uid=U` — whether the user is connected, and where.
///
/// Every request is authenticated (401 otherwise): an API key
/// (`Authorization: Bearer <key>` or `X-API-Key`), or an HMAC-SHA256
/// signature (``RequestSignature``). Errors are JSON: `{"error":"…"}` with
/// 400 (a bad body or name), 401, 404, 405, 503 (Redis unreachable). The
/// body size is bounded by the transport (`maxRequestBodyBytes`: 413).
public struct PublishAPI: Sendable {
    /// Who may call, and where the API lives.
    public struct Configuration: Sendable {
        /// Accepted API keys.
        public var apiKeys: Set<String>
        /// Accepted signing secrets (``RequestSignature``).
        public var signingSecrets: [String]
        /// How old a signed request's timestamp may be (either way).
        public var maxSignatureAge: Duration
        /// The path the routes are under.
        public var pathPrefix: String

        /// A configuration; at least one API key or signing secret is required.
        public init(apiKeys: Set<String> = [], signingSecrets: [String] = [], maxSignatureAge: Duration = .seconds(300),
                    pathPrefix: String = "/api") {
            self.apiKeys = apiKeys
            self.signingSecrets = signingSecrets
            self.maxSignatureAge = maxSignatureAge
            self.pathPrefix = pathPrefix
        }
    }

    let node: ClusterNode
    let configuration: Configuration

    /// The API of `node`.
    /// - Throws: ``ClusterError/invalidConfiguration(_:)`` without any API key or
    ///   signing secret (an API nobody can call, or everybody, is refused), or with an empty one.
    public init(node: ClusterNode, configuration: Configuration) throws {
        guard !configuration.apiKeys.isEmpty || !configuration.signingSecrets.isEmpty else {
            throw ClusterError.invalidConfiguration("the publish API needs an API key or a signing secret")
        }
        guard !configuration.apiKeys.contains(""), !configuration.signingSecrets.contains("") else {
            throw ClusterError.invalidConfiguration("an empty API key or signing secret")
        }
        self.node = node
        self.configuration = configuration
    }

    /// Answers a request to the node's own port; `nil` when its path is not the API's
    /// (for the application's other routes).
    public func respond(to request: PlainHTTPRequest) async -> PlainHTTPResponse? {
        guard let answer = await respond(method: request.head.method.rawValue, uri: request.head.uri,
                                         headers: request.head.headers.map { ($0.name, $0.value) }, body: request.body)
        else { return nil }
        var headers = HTTPHeaders()
        for (name, value) in answer.headers { headers.add(name: name, value: value) }
        return PlainHTTPResponse(status: HTTPResponseStatus(statusCode: answer.status), headers: headers, body: answer.body)
    }

    /// The same for any HTTP server (a Hummingbird route, for one): `nil`
    /// when the path is not the API's.
    public func respond(method: String, uri: String, headers: [(String, String)], body: ByteBuffer) async
        -> (status: Int, headers: [(String, String)], body: ByteBuffer)? {
        let path = String(uri.prefix { $0 != "?" })
        guard path.hasPrefix(configuration.pathPrefix + "/") else { return nil }
        let route = String(path.dropFirst(configuration.pathPrefix.count))
        let query = Self.query(of: uri)
        do {
            try authenticate(method: method, uri: uri, headers: headers, body: body)
            switch (method, route) {
            case ("POST", "/publish"): return try await publish(body)
            case ("GET", "/presence"): return try await presence(query)
            case ("GET", "/online"): return try await online(query)
            case (_, "/publish"), (_, "/presence"), (_, "/online"): throw APIError(405, "method \(method) not allowed here")
            default: throw APIError(404, "no route \(route)")
            }
        } catch let error as APIError {
            return Self.json(["error": error.message], status: error.status)
        } catch let error as ClusterError {
            return Self.json(["error": error.description], status: 400)
        } catch {
            return Self.json(["error": "\(error)"], status: 503)
        }
    }

    // MARK: Routes

    private func publish(_ body: ByteBuffer) async throws -> (status: Int, headers: [(String, String)], body: ByteBuffer) {
        let request = try PublishRequest(json: Data(body.readableBytesView))
        let result = try await node.sender.publish(request.message, to: request.target, idempotencyKey: request.idempotencyKey)
        var answer: [String: Any] = ["reached": result.reached]
        if let perUser = result.perUser { answer["per_user"] = perUser }
        if result.duplicate { answer["duplicate"] = true }
        return Self.json(answer)
    }

    private func presence(_ query: [String: String]) async throws -> (status: Int, headers: [(String, String)], body: ByteBuffer) {
        guard let room = query["room"] else { throw APIError(400, "the query needs room=") }
        let members = try await node.presence(room: room).map { member -> [String: Any] in
            var entry: [String: Any] = ["uid": member.uid, "fd": member.fd.description, "node": member.node]
            if let metadata = member.metadata { entry["metadata"] = metadata }
            return entry
        }
        return Self.json(["room": room, "members": members])
    }

    private func online(_ query: [String: String]) async throws -> (status: Int, headers: [(String, String)], body: ByteBuffer) {
        guard let uid = query["uid"] else { throw APIError(400, "the query needs uid=") }
        let fds = try await node.relations.findUserFDs(uid: uid)
        return Self.json(["uid": uid, "online": !fds.isEmpty, "connections": fds.map(\.description).sorted()])
    }

    // MARK: Authentication

    private func authenticate(method: String, uri: String, headers: [(String, String)], body: ByteBuffer) throws {
        func header(_ name: String) -> String? {
            headers.first { $0.0.caseInsensitiveCompare(name) == .orderedSame }?.1.trimmingCharacters(in: .whitespaces)
        }
        var presented: String?
        if let authorization = header("Authorization"), authorization.lowercased().hasPrefix("bearer ") {
            presented = String(authorization.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        } else if let key = header("X-API-Key") {
            presented = key
        }
        if let presented {
            guard configuration.apiKeys.contains(where: { RequestSignature.constantTimeEqual($0, presented) }) else {
                throw APIError(401, "unknown API key")
            }
            return
        }
        if let signature = header(RequestSignature.signatureHeader), let timestamp = header(RequestSignature.timestampHeader) {
            guard let seconds = Int64(timestamp),
                  abs(Int64(Date().timeIntervalSince1970) - seconds) <= configuration.maxSignatureAge.components.seconds else {
                throw APIError(401, "the signature's timestamp is missing or too old")
            }
            let valid = configuration.signingSecrets.contains { secret in
                RequestSignature.constantTimeEqual(
                    RequestSignature.sign(secret: secret, timestamp: timestamp, method: method, uri: uri, body: body), signature)
            }
            guard valid else { throw APIError(401, "bad signature") }
            return
        }
        throw APIError(401, "an API key (Authorization: Bearer …) or a signature (\(RequestSignature.signatureHeader)) is required")
    }

    // MARK: Helpers

    struct APIError: Error {
        var status: Int
        var message: String
        init(_ status: Int, _ message: String) {
            self.status = status
            self.message = message
        }
    }

    static func json(_ object: [String: Any], status: Int = 200) -> (status: Int, headers: [(String, String)], body: ByteBuffer) {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return (status, [("Content-Type", "application/json")], ByteBuffer(bytes: data))
    }

    static func query(of uri: String) -> [String: String] {
        guard let components = URLComponents(string: uri) else { return [:] }
        var query: [String: String] = [:]
        for item in components.queryItems ?? [] where query[item.name] == nil { query[item.name] = item.value ?? "" }
        return query
    }
}
