package import NIOHTTP1

/// Why an HTTP request was not upgraded, and the response it gets.
package enum HandshakeRejection: Error, Equatable {
    /// 400: a malformed WebSocket handshake (§4.2.1).
    case badRequest(String)
    /// 426 with `Sec-WebSocket-Version: 13`: a version other than 13, or a
    /// plain request to a WebSocket path.
    case upgradeRequired(String)
    /// 404: no route at this path.
    case notFound
    /// 403: origin not allowed, or the application refused.
    case forbidden(String)
    /// 401: authentication failed.
    case unauthorized(String)
    /// 429: a limit on the client (too many connections for this user).
    case tooManyRequests(String)
    /// 503: the server is at its connection limit, or shutting down.
    case unavailable(String)

    package var status: HTTPResponseStatus {
        switch self {
        case .badRequest: return .badRequest
        case .upgradeRequired: return .upgradeRequired
        case .notFound: return .notFound
        case .forbidden: return .forbidden
        case .unauthorized: return .unauthorized
        case .tooManyRequests: return .tooManyRequests
        case .unavailable: return .serviceUnavailable
        }
    }

    /// The HTTP answer, in one place for every server path: the status, the
    /// reason as text, and for 426 the version this server speaks.
    package var response: PlainHTTPResponse {
        var response = PlainHTTPResponse.text(reason + "\n", status: status)
        if status == .upgradeRequired {
            response.headers.add(name: "Sec-WebSocket-Version", value: "13")
            response.headers.add(name: "Upgrade", value: "websocket")
        }
        return response
    }

    package var reason: String {
        switch self {
        case .badRequest(let why), .upgradeRequired(let why), .forbidden(let why), .unauthorized(let why),
             .tooManyRequests(let why), .unavailable(let why): return why
        case .notFound: return "no WebSocket route at this path"
        }
    }
}

/// The client's side of the opening handshake, checked against RFC 6455 §4.2.1.
package enum HandshakeValidator {
    /// `true` if the request asks for a WebSocket upgrade at all.
    static func isUpgradeAttempt(_ head: HTTPRequestHead) -> Bool {
        head.headers[canonicalForm: "upgrade"].contains { $0.lowercased() == "websocket" }
            || !head.headers["sec-websocket-key"].isEmpty
    }

    /// `nil` when `head` is a valid handshake; otherwise what to answer.
    package static func validate(_ head: HTTPRequestHead) -> HandshakeRejection? {
        guard head.method == .GET else { return .badRequest("the handshake must be a GET request") }
        guard head.version.major > 1 || (head.version.major == 1 && head.version.minor >= 1) else {
            return .badRequest("the handshake needs HTTP/1.1 or later")
        }
        guard head.headers["host"].count == 1 else { return .badRequest("missing Host header") }
        guard head.headers[canonicalForm: "upgrade"].contains(where: { $0.lowercased() == "websocket" }) else {
            return .badRequest("missing 'Upgrade: websocket'")
        }
        guard head.headers[canonicalForm: "connection"].contains(where: { $0.lowercased() == "upgrade" }) else {
            return .badRequest("missing 'Connection: Upgrade'")
        }
        let versions = head.headers["sec-websocket-version"]
        guard versions.count == 1, versions[0].trimmingSpaces == "13" else {
            return .upgradeRequired("only Sec-WebSocket-Version 13 is supported")
        }
        let keys = head.headers["sec-websocket-key"]
        guard keys.count == 1, isValidKey(keys[0].trimmingSpaces) else {
            return .badRequest("Sec-WebSocket-Key must be 16 base64-encoded bytes")
        }
        return nil
    }

    /// A base64 encoding of exactly 16 bytes: 22 alphabet characters and `==`.
    static func isValidKey(_ key: some StringProtocol) -> Bool {
        let bytes = Array(key.utf8)
        guard bytes.count == 24, bytes[22] == UInt8(ascii: "="), bytes[23] == UInt8(ascii: "=") else { return false }
        return bytes[..<22].allSatisfy { byte in
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "+") || byte == UInt8(ascii: "/")
        }
    }

    /// The request path without its query string.
    static func path(of uri: String) -> Substring {
        uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
    }
}

extension StringProtocol {
    var trimmingSpaces: Substring {
        var text = Substring(self)
        while text.first == " " || text.first == "\t" { text.removeFirst() }
        while text.last == " " || text.last == "\t" { text.removeLast() }
        return text
    }
}
