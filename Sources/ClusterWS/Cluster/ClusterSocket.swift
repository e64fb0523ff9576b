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
}
