import ClusterWS
import ClusterWSPublishAPI
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Prometheus

/// One demo node: a ClusterNode with the demo's WebSocket protocol (JSON
/// commands), its page, and a few JSON endpoints for the page.
struct DemoNode: Sendable {
    let node: ClusterNode
    let namespace: String
    let metrics: PrometheusCollectorRegistry

    /// A command from the page.
    struct Command: Decodable {
        var action: String          // send | join | leave | room | all
        var to: [String]?           // uids, for send
        var room: String?
        var text: String?
        var opcode: String?         // text | binary
    }

    /// What a client receives for every message (as text or binary, as sent).
    struct Delivery: Codable {
        var from: String
        var via: String
        var to: String
        var text: String
    }

    init(id: String, host: String, port: Int, redisURL: String, namespace: String,
         metrics: PrometheusCollectorRegistry, logger: Logger) throws {
        self.metrics = metrics
        var configuration = ClusterConfiguration(
            redisURL: .init(redisURL), serverID: id, namespace: namespace,
            webSocket: WebSocketServerConfiguration(host: host, port: port))
        configuration.heartbeatInterval = .seconds(1)
        configuration.livenessWindow = .seconds(3)
        // Names (uids, rooms) up to 64 bytes: the node refuses longer ones with a typed error,
        // which the page shows as an error event (at the handshake: HTTP 400).
        configuration.limits.maxNameBytes = 64
        // History of every user's and room's messages: the page (clusterws.v1 through
        // /clusterws.js) shows offsets and recovers what it missed after a reconnect.
        configuration.history.users = true
        configuration.history.rooms = true
        // Room members and their joins/leaves, sent to the room's members too (the page lists them).
        configuration.presence.rooms = true
        configuration.presence.notifyMembers = true
        let node = try ClusterNode(configuration: configuration, logger: logger)
        self.node = node
        self.namespace = namespace
        let demo = self
        let uidFromQuery = node.insecureUIDFromQuery("uid")  // logs a warning: demo only
        node.webSocket("/ws", authenticate: { request in
            guard let uid = try await uidFromQuery(request), !uid.isEmpty else { throw DemoError.missingUID }
            return uid  // checked by the node: at most 64 bytes, no control characters
        }) { client in
            await demo.serve(client)
        }
        // The HTTP publish API (POST /api/publish, GET /api/presence, GET /api/online), with the demo's key.
        let api = try PublishAPI(node: node, configuration: .init(apiKeys: [Self.apiKey]))
        node.setHTTPResponder { request in
            if let answer = await api.respond(to: request) { return answer }
            return await demo.respond(to: request)
        }
    }

    /// The publish API's key: `CLUSTERWS_API_KEY`, or `demo-key`.
    static let apiKey = ProcessInfo.processInfo.environment["CLUSTERWS_API_KEY"].flatMap { $0.isEmpty ? nil : $0 } ?? "demo-key"

    /// The JavaScript client (a resource of this target), read once.
    static let clientScript: String? = Bundle.module.url(forResource: "clusterws", withExtension: "js")
        .flatMap { try? String(contentsOf: $0, encoding: .utf8) }

    /// Records where this node listens, for the page's node list.
    func announce(port: Int) async throws {
        _ = try await node.redis.send(RedisCommand("HSET", .string("\(namespace):demo:nodes"), .string(node.id), .integer(port)))
    }

    private func serve(_ client: ClusterSocket) async {
        let uid = client.uid ?? "?"
        _ = try? await node.redis.send(RedisCommand("SADD", .string("\(namespace):demo:users"), .string(uid)))
        try? await client.socket.send(.text(json(["event": "welcome", "uid": uid, "node": node.id, "fd": client.fd.description])))
        for await message in client.messages {
            guard let command = try? JSONDecoder().decode(Command.self, from: Data(message.data.readableBytesView)) else {
                try? await client.socket.send(.text(json(["event": "error", "error": "not a command"])))
                continue
            }
            do {
                let reply = try await execute(command, from: client)
                try? await client.socket.send(.text(json(reply)))
            } catch {
                try? await client.socket.send(.text(json(["event": "error", "error": "\(error)"])))
            }
        }
    }

    private func execute(_ command: Command, from client: ClusterSocket) async throws -> [String: String] {
        let text = command.text ?? ""
        let kind: WebSocketMessage.Kind = command.opcode == "binary" ? .binary : .text
        func message(to target: String) throws -> WebSocketMessage {
            let body = try JSONEncoder().encode(Delivery(from: client.uid ?? "?", via: node.id, to: target, text: text))
            return WebSocketMessage(kind: kind, data: ByteBuffer(bytes: body))
        }
        switch command.action {
        case "send":
            let uids = (command.to ?? []).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !uids.isEmpty else { return ["event": "error", "error": "no recipient"] }
            if uids.count == 1 {
                let nodes = try await node.sender.send(uid: uids[0], try message(to: "user \(uids[0])"))
                return ["event": "sent", "to": uids[0], "nodes": String(nodes)]
            }
            let counts = try await node.sender.sendMulti(uids: uids, try message(to: "users " + uids.joined(separator: ", ")))
            let reached = counts.filter { $0.value > 0 }.keys.sorted().joined(separator: ", ")
            return ["event": "sent", "to": uids.joined(separator: ", "), "reached": reached]
        case "join", "leave":
            guard let room = command.room, !room.isEmpty else { return ["event": "error", "error": "no room"] }
            if command.action == "join" { try await node.join(client.fd, room: room) } else { try await node.leave(client.fd, room: room) }
            return ["event": command.action == "join" ? "joined" : "left", "room": room]
        case "room":
            guard let room = command.room, !room.isEmpty else { return ["event": "error", "error": "no room"] }
            let nodes = try await node.sender.send(room: room, try message(to: "room \(room)"))
            return ["event": "sent", "to": "room \(room)", "nodes": String(nodes)]
        case "all":
            let nodes = try await node.sender.sendAll(try message(to: "everyone"))
            return ["event": "sent", "to": "everyone", "nodes": String(nodes)]
        default:
            return ["event": "error", "error": "unknown action \(command.action)"]
        }
    }

    private func respond(to request: PlainHTTPRequest) async -> PlainHTTPResponse {
        let path = request.head.uri.split(separator: "?").first.map(String.init) ?? "/"
        switch path {
        case "/", "/index.html":
            return PlainHTTPResponse(headers: ["Content-Type": "text/html; charset=utf-8"], body: ByteBuffer(string: DemoPage.html))
        case "/clusterws.js":
            guard let script = Self.clientScript else { return .text("client script missing\n", status: .notFound) }
            return PlainHTTPResponse(headers: ["Content-Type": "text/javascript; charset=utf-8"], body: ByteBuffer(string: script))
        case "/demo/online":
            return (try? await online()) ?? .text("redis unavailable\n", status: .serviceUnavailable)
        case "/demo/nodes":
            return (try? await nodes()) ?? .text("redis unavailable\n", status: .serviceUnavailable)
        case "/demo/presence":
            let room = URLComponents(string: request.head.uri)?.queryItems?.first { $0.name == "room" }?.value ?? ""
            guard let members = try? await node.presence(room: room) else { return .text("bad room or redis unavailable\n", status: .badRequest) }
            return PlainHTTPResponse(headers: ["Content-Type": "application/json"], body: ByteBuffer(bytes: (try? JSONSerialization.data(
                withJSONObject: ["room": room, "members": members.map { ["uid": $0.uid, "node": $0.node, "fd": $0.fd.description] }],
                options: [.sortedKeys])) ?? Data()))
        case "/health":
            let health = await node.health()
            return jsonResponse(["status": health.isHealthy ? "ok" : "degraded", "redis": health.redis ? "up" : "down",
                                 "subscriber": health.subscriber ? "up" : "down", "connections": String(health.connections),
                                 "shardsDown": String(health.shardsDown), "node": node.id])
                .with(status: health.isHealthy ? .ok : .serviceUnavailable)
        case "/metrics":
            return PlainHTTPResponse(headers: ["Content-Type": "text/plain; version=0.0.4"],
                                     body: ByteBuffer(bytes: metrics.emitToBuffer()))
        default:
            return .text("not found\n", status: .notFound)
        }
    }

    /// Every user seen by the demo who is online now, with where.
    private func online() async throws -> PlainHTTPResponse {
        let users = try await node.redis.send(RedisCommand("SMEMBERS", .string("\(namespace):demo:users"))).array?
            .compactMap(\.string) ?? []
        var rows: [[String: [String]]] = []
        for uid in users.sorted() {
            let fds = try await node.relations.findUserFDs(uid: uid)
            if fds.isEmpty {
                _ = try? await node.redis.send(RedisCommand("SREM", .string("\(namespace):demo:users"), .string(uid)))
                continue
            }
            rows.append(["uid": [uid], "nodes": fds.map(\.node).sorted(), "fds": fds.map(\.description).sorted()])
        }
        return jsonResponse(["users": rows])
    }

    private func nodes() async throws -> PlainHTTPResponse {
        let all = try await node.redis.send(RedisCommand("HGETALL", .string("\(namespace):demo:nodes"))).array ?? []
        var list: [[String: String]] = []
        for index in stride(from: 0, to: all.count - 1, by: 2) {
            if let id = all[index].string, let port = all[index + 1].string { list.append(["id": id, "port": port]) }
        }
        return jsonResponse(["self": [["id": node.id]], "nodes": list.sorted { ($0["id"] ?? "") < ($1["id"] ?? "") }])
    }

    private func jsonResponse(_ value: some Encodable) -> PlainHTTPResponse {
        let data = (try? JSONEncoder().encode(value)) ?? Data("{}".utf8)
        return PlainHTTPResponse(headers: ["Content-Type": "application/json", "Cache-Control": "no-store"],
                                 body: ByteBuffer(bytes: data))
    }

    private func json(_ value: [String: String]) -> String {
        String(decoding: (try? JSONEncoder().encode(value)) ?? Data(), as: UTF8.self)
    }
}

enum DemoError: Error {
    case missingUID
}

extension PlainHTTPResponse {
    func with(status: HTTPResponseStatus) -> PlainHTTPResponse {
        var copy = self
        copy.status = status
        return copy
    }
}
