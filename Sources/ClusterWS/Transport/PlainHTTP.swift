public import NIOCore
public import NIOHTTP1

/// A plain HTTP request that was not a WebSocket upgrade.
public struct PlainHTTPRequest: Sendable {
    /// Method, URI, version and headers.
    public var head: HTTPRequestHead
    /// The request body (at most `maxRequestBodyBytes`, 1 MiB by default).
    public var body: ByteBuffer
}

/// The answer to a ``PlainHTTPRequest``.
public struct PlainHTTPResponse: Sendable {
    /// Status code.
    public var status: HTTPResponseStatus
    /// Headers; `Content-Length` is set for you.
    public var headers: HTTPHeaders
    /// Body bytes.
    public var body: ByteBuffer

    /// Creates a response.
    public init(status: HTTPResponseStatus = .ok, headers: HTTPHeaders = [:], body: ByteBuffer = ByteBuffer()) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A text response with `Content-Type: text/plain; charset=utf-8`.
    public static func text(_ text: String, status: HTTPResponseStatus = .ok) -> PlainHTTPResponse {
        PlainHTTPResponse(status: status, headers: ["Content-Type": "text/plain; charset=utf-8"], body: ByteBuffer(string: text))
    }
}
