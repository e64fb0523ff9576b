/// A connection of this node, as the application's `onOpen` sees it.
public struct ClusterSocket: Sendable {
    /// Its cluster-wide address.
    public let fd: DistributedFD
    /// The WebSocket itself: `messages`, `send`, `close`.
    public let socket: WebSocket
    /// The uid `authenticate` bound it to, if any.
    public let uid: String?

    /// Every message the client sends, until the connection closes.
    public var messages: WebSocketMessages { socket.messages }

    /// The callback form of ``messages``: `handler` gets every message, in
    /// order, in a task that exists only while messages wait (see
    /// ``WebSocket/handleMessages(_:)``). Returns at once, so `onOpen` can
    /// return and the connection holds no task while idle.
    public func handleMessages(_ handler: @escaping @Sendable (WebSocketMessage) async -> Void) {
        socket.handleMessages(handler)
    }
}
