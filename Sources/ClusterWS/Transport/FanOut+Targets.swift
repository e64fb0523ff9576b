import NIOCore

extension FanOut {
    /// Sends `message` to `sockets`, wherever they live: one job per event
    /// loop, which encodes the frame once (a per-loop copy, so loops never
    /// share a buffer's reference count) and writes it to each of its sockets.
    /// Other loops' jobs are queued before the caller's own loop runs its share.
    static func send(_ message: WebSocketMessage, to sockets: [WebSocket]) {
        guard !sockets.isEmpty else { return }
        var groups: [ObjectIdentifier: (loop: any EventLoop, sockets: [WebSocket])] = [:]
        for socket in sockets {
            groups[ObjectIdentifier(socket.eventLoop), default: (socket.eventLoop, [])].sockets.append(socket)
        }
        var local: [WebSocket]?
        for (_, group) in groups {
            if group.loop.inEventLoop {
                local = group.sockets
            } else {
                let targets = group.sockets
                group.loop.execute { write(message, to: targets) }
            }
        }
        if let local { write(message, to: local) }
    }

    private static func write(_ message: WebSocketMessage, to sockets: [WebSocket]) {
        let frame = encode([message])
        for socket in sockets {
            socket.assumeIsolated { $0.write(frame) }
        }
    }
}
