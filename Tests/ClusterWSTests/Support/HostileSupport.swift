import NIOCore
import NIOPosix
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Samples this process's resident set size while an attack runs, to check a
/// byte budget. Run hostile suites on their own (`make unit` does), so other
/// tests' allocations do not blur the figure.
final class RSSMeter: Sendable {
    private let state = Mutex<(baseline: Int, peak: Int)>((0, 0))
    private let sampler = Mutex<Task<Void, Never>?>(nil)

    /// Current RSS in bytes, from /proc/self/statm.
    static func current() -> Int {
        guard let file = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(file) }
        var size = 0, resident = 0
        guard withUnsafeMutablePointer(to: &size, { sizePointer in
            withUnsafeMutablePointer(to: &resident) { residentPointer in
                fscanfTwo(file, sizePointer, residentPointer)
            }
        }) else { return 0 }
        return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    private static func fscanfTwo(_ file: UnsafeMutablePointer<FILE>, _ a: UnsafeMutablePointer<Int>,
                                  _ b: UnsafeMutablePointer<Int>) -> Bool {
        var line = [CChar](repeating: 0, count: 256)
        guard fgets(&line, 256, file) != nil else { return false }
        let fields = String(cString: line).split(separator: " ").compactMap { Int($0) }
        guard fields.count >= 2 else { return false }
        a.pointee = fields[0]
        b.pointee = fields[1]
        return true
    }

    /// Starts sampling every 5 ms from the current RSS.
    static func start() -> RSSMeter {
        let meter = RSSMeter()
        let now = current()
        meter.state.withLock { $0 = (now, now) }
        meter.sampler.withLock {
            $0 = Task {
                while !Task.isCancelled {
                    let sample = RSSMeter.current()
                    meter.state.withLock { $0.peak = max($0.peak, sample) }
                    try? await Task.sleep(for: .milliseconds(5))
                }
            }
        }
        return meter
    }

    /// Stops sampling; the peak growth over the baseline, in bytes.
    func stop() -> Int {
        sampler.withLock { $0?.cancel() }
        let last = RSSMeter.current()
        return state.withLock { max($0.peak, last) - $0.baseline }
    }
}

/// A TCP proxy on loopback that can make its current links go silent without
/// closing them, as a dead host or a NAT that forgot the flow would: no FIN,
/// no RST, bytes just stop. Connections made after that are forwarded again.
final class BlackholeProxy: Sendable {
    let port: Int
    private let server: any Channel
    private let links = Mutex<[Link]>([])
    /// While set, new connections are closed at once (the far end is unreachable).
    private let refusing = Atomic<Bool>(false)

    private final class Link: Sendable {
        let dead = Atomic<Bool>(false)
    }

    private init(server: any Channel, port: Int) {
        self.server = server
        self.port = port
    }

    /// Forwards loopback connections on a free port to `targetPort`.
    static func start(to targetPort: Int) async throws -> BlackholeProxy {
        let box = Mutex<BlackholeProxy?>(nil)
        let group = MultiThreadedEventLoopGroup.singleton
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { inbound in
                if box.withLock({ $0 })?.refusing.load(ordering: .relaxed) == true {
                    return inbound.close()
                }
                let link = Link()
                box.withLock { $0 }?.links.withLock { $0.append(link) }
                return ClientBootstrap(group: inbound.eventLoop)
                    .channelInitializer { outbound in
                        outbound.eventLoop.makeCompletedFuture {
                            try outbound.pipeline.syncOperations.addHandler(Forwarder(peer: inbound, link: link))
                        }
                    }
                    .connect(host: "127.0.0.1", port: targetPort)
                    .flatMap { outbound in
                        inbound.eventLoop.makeCompletedFuture {
                            try inbound.pipeline.syncOperations.addHandler(Forwarder(peer: outbound, link: link))
                            try inbound.syncOptions?.setOption(.autoRead, value: true)
                        }
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let proxy = BlackholeProxy(server: server, port: server.localAddress?.port ?? 0)
        box.withLock { $0 = proxy }
        return proxy
    }

    /// Every link open now stops forwarding, silently.
    func blackholeCurrentLinks() {
        for link in links.withLock({ $0 }) { link.dead.store(true, ordering: .relaxed) }
    }

    /// New connections are closed at once (`true`) or forwarded again (`false`).
    func refuseNewConnections(_ refuse: Bool) {
        refusing.store(refuse, ordering: .relaxed)
    }

    func stop() { server.close(promise: nil) }

    private final class Forwarder: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let peer: any Channel
        let link: Link
        init(peer: any Channel, link: Link) {
            self.peer = peer
            self.link = link
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !link.dead.load(ordering: .relaxed) else { return }  // swallowed
            peer.writeAndFlush(unwrapInboundIn(data), promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            if !link.dead.load(ordering: .relaxed) { peer.close(promise: nil) }
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
