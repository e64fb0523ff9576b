/// How a subprotocol wraps the application's messages on their way out: a
/// connection that negotiated it gets `frame(message)` instead of `message`
/// from every send path (a direct ``WebSocket/send(_:)``, a targeted send, a
/// broadcast). A message already wrapped by the caller is sent as it is.
package struct OutboundFraming: Sendable {
    /// The `Sec-WebSocket-Protocol` value the connection agreed on.
    package let subprotocol: String
    package let frame: @Sendable (WebSocketMessage) -> WebSocketMessage

    package init(subprotocol: String, frame: @escaping @Sendable (WebSocketMessage) -> WebSocketMessage) {
        self.subprotocol = subprotocol
        self.frame = frame
    }
}
