public import ClusterWS
public import HummingbirdCore

extension HTTPServerBuilder {
    /// Serves a ClusterWS ``WebSocketServer``'s routes beside a Hummingbird
    /// application's own routes, on the application's port.
    ///
    /// Upgrade requests to the WebSocket server's paths are handled by
    /// ClusterWS's transport (same validation, limits and per-connection cost
    /// as when it listens itself); every other request goes to the
    /// Hummingbird router. Give the WebSocket server `listen: false` and run
    /// it as a service beside the application, so its `onOpen` handlers and
    /// graceful shutdown run:
    ///
    /// ```swift
    /// let sockets = WebSocketServer(configuration: .init(listen: false))
    /// sockets.addRoute("/ws") { socket in ... }
    /// let app = Application(router: router, server: .clusterWS(sockets), services: [sockets])
    /// try await app.runService()
    /// ```
    public static func clusterWS(
        _ webSockets: WebSocketServer,
        http1: HTTP1Channel.Configuration = .init()
    ) -> HTTPServerBuilder {
        .init { responder in
            ClusterWSChildChannel(webSockets: webSockets, responder: responder, configuration: http1)
        }
    }
}
