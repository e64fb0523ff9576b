public import NIOHTTP1

/// A route's answer to an upgrade request.
public struct WebSocketUpgradeDecision: Sendable {
    enum Outcome: Sendable {
        case accept(attributes: [String: String], headers: HTTPHeaders)
        case reject(status: HTTPResponseStatus, reason: String)
    }

    let outcome: Outcome

    /// Upgrade. `attributes` travel with the connection (``WebSocket/attributes``),
    /// `headers` are added to the 101 response.
    public static func accept(attributes: [String: String] = [:], headers: HTTPHeaders = [:]) -> WebSocketUpgradeDecision {
        WebSocketUpgradeDecision(outcome: .accept(attributes: attributes, headers: headers))
    }

    /// Refuse with HTTP 401 (authentication failed). The connection never opens.
    public static func unauthorized(_ reason: String = "authentication failed") -> WebSocketUpgradeDecision {
        WebSocketUpgradeDecision(outcome: .reject(status: .unauthorized, reason: reason))
    }

    /// Refuse with HTTP 429: the client is over a limit (e.g. connections per user).
    public static func tooManyRequests(_ reason: String = "too many connections") -> WebSocketUpgradeDecision {
        WebSocketUpgradeDecision(outcome: .reject(status: .tooManyRequests, reason: reason))
    }

    /// Refuse with HTTP 400: the request is malformed for this route (for
    /// example a uid that breaks the naming rules).
    public static func badRequest(_ reason: String = "bad request") -> WebSocketUpgradeDecision {
        WebSocketUpgradeDecision(outcome: .reject(status: .badRequest, reason: reason))
    }

    /// Refuse with HTTP 403.
    public static func forbidden(_ reason: String = "forbidden") -> WebSocketUpgradeDecision {
        WebSocketUpgradeDecision(outcome: .reject(status: .forbidden, reason: reason))
    }
}
