import NIOCore
import NIOPosix
import Synchronization

/// A loopback TCP proxy that a test can cut and restore, to put one node
/// (and only that node) out of Redis's reach.
final class TCPProxy: Sendable {
    let port: Int
    private let target: (host: String, port: Int)
    private let server: any Channel
    private let state: Mutex<(cut: Bool, links: [any Channel])>

    private init(port: Int, target: (String, Int), server: any Channel) {
        self.port = port
        self.target = target
        self.server = server
        self.state = Mutex((false, []))
    }

    static func start(to targetPort: Int, host: String = "127.0.0.1") async throws -> TCPProxy {
        let box = Mutex<TCPProxy?>(nil)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { inbound in
                inbound.eventLoop.makeSucceededVoidFuture().map {
                    box.withLock { $0 }?.accept(inbound)
                }
            }
            .bind(host: host, port: 0).get()
        let proxy = TCPProxy(port: server.localAddress!.port!, target: (host, targetPort), server: server)
        box.withLock { $0 = proxy }
        return proxy
    }

    private func accept(_ inbound: any Channel) {
        let refused = state.withLock { state -> Bool in
            if !state.cut { state.links.append(inbound) }
            return state.cut
        }
        if refused { return inbound.close(promise: nil) }
        ClientBootstrap(group: inbound.eventLoop)
            .connect(host: target.host, port: target.port)
            .whenComplete { result in
                switch result {
                case .success(let outbound):
                    self.state.withLock { $0.links.append(outbound) }
                    _ = try? inbound.pipeline.syncOperations.addHandler(Relay(peer: outbound))
                    _ = try? outbound.pipeline.syncOperations.addHandler(Relay(peer: inbound))
                    inbound.setOption(.autoRead, value: true).whenComplete { _ in inbound.read() }
                case .failure:
                    inbound.close(promise: nil)
                }
            }
    }

    /// Closes every proxied connection and refuses new ones until ``restore()``.
    func cut() {
        let links = state.withLock { state -> [any Channel] in
            state.cut = true
            defer { state.links = [] }
            return state.links
        }
        for link in links { link.close(promise: nil) }
    }

    /// Accepts connections again.
    func restore() {
        state.withLock { $0.cut = false }
    }

    func stop() {
        cut()
        server.close(promise: nil)
    }
}

/// Copies bytes to the peer channel; closes the peer when this side closes.
private final class Relay: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let peer: any Channel
    init(peer: any Channel) { self.peer = peer }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        peer.writeAndFlush(unwrapInboundIn(data), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        peer.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
