public import NIOHTTP1

/// The HTTP request that opened a WebSocket connection.
public struct WebSocketRequest: Sendable {
    /// The request path, without the query string.
    public var path: String
    /// The full request URI, with the query string.
    public var uri: String
    /// The request headers.
    public var headers: HTTPHeaders
    /// The peer's address, as text.
    public var remoteAddress: String?
    /// The number the connection gets if it is accepted (its ``WebSocket/id``).
    public var connectionID: UInt64

    package init(path: String, uri: String, headers: HTTPHeaders, remoteAddress: String?, connectionID: UInt64 = 0) {
        self.path = path
        self.uri = uri
        self.headers = headers
        self.remoteAddress = remoteAddress
        self.connectionID = connectionID
    }

    /// The first value of header `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        headers[name].first
    }

    /// The value of query parameter `name`, percent-decoded (`+` is a space);
    /// `nil` when it is missing or its escapes are malformed.
    public func decodedQueryParameter(_ name: String) -> String? {
        queryParameter(name).flatMap { PercentDecoding.decode($0, plusAsSpace: true) }
    }

    /// The value of query parameter `name` (percent-decoding is not applied).
    public func queryParameter(_ name: String) -> String? {
        guard let query = uri.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if parts.first.map(String.init) == name { return parts.count > 1 ? String(parts[1]) : "" }
        }
        return nil
    }
}
