import Logging
import NIOCore
import Synchronization

extension WebSocketServer {
    /// Sends `messages` to every open connection of this server.
    ///
    /// Broadcasts are queued per event loop and drained by one job per loop:
    /// the drain encodes everything queued since the last drain into one
    /// buffer (server frames are unmasked, so the bytes are the same for every
    /// client), writes that buffer to each of its connections and flushes
    /// each connection once. Under load, many broadcasts share one write and
    /// one flush per connection; when idle, a broadcast costs one loop hop.
    /// Other loops' drains are queued before the caller's own loop runs its
    /// share, so both cores work at once. Order is preserved per connection.
    /// - Parameter except: connection ids to skip.
    public func broadcast(_ messages: [WebSocketMessage], except: Set<UInt64> = []) {
        _ = enqueue(messages, except: except, notify: false)
    }

    /// Like ``broadcast(_:except:)-([WebSocketMessage],_)``, but returns once
    /// every event loop has written the messages to its connections (handed
    /// to the sockets, not yet read by the clients). Awaiting each broadcast
    /// paces a sender to what the server can write.
    public func broadcastAndWait(_ messages: [WebSocketMessage], except: Set<UInt64> = []) async {
        let written = enqueue(messages, except: except, notify: true)
        for future in written { try? await future.get() }
    }

    private func enqueue(_ messages: [WebSocketMessage], except: Set<UInt64>, notify: Bool) -> [EventLoopFuture<Void>] {
        guard !messages.isEmpty else { return [] }
        let size = messages.reduce(0) { $0 + $1.data.readableBytes }
        var written: [EventLoopFuture<Void>] = []
        for share in connections.loops {
            let promise = notify ? share.eventLoop.makePromise(of: Void.self) : nil
            if let promise { written.append(promise.futureResult) }
            let (schedule, fits) = share.outbox.withLock { outbox -> (Bool, Bool) in
                guard outbox.bytes + size <= configuration.fanOutQueueBytes || outbox.messages.isEmpty else {
                    return (false, false)
                }
                outbox.bytes += size
                for message in messages { outbox.messages.append(.init(message: message, except: except, targets: nil)) }
                if let promise { outbox.written.append(promise) }
                defer { outbox.scheduled = true }
                return (!outbox.scheduled, true)
            }
            guard fits else {
                overflowed(share, messages: messages.count)
                promise?.succeed()
                continue
            }
            if schedule { share.eventLoop.execute { Self.drain(share) } }
        }
        return written
    }

    /// A loop's fan-out queue is over its byte budget: its loop is starved
    /// (something blocks it) or fed faster than it can write. Newer messages
    /// for it are dropped and counted rather than queued without bound.
    private func overflowed(_ share: ConnectionTable.LoopConnections, messages: Int) {
        counters.drop(.fanOutOverflow, count: messages, metadata: ["limit": "\(configuration.fanOutQueueBytes)"])
    }

    /// Sends `message` to `sockets` through the same per-loop queue as
    /// broadcasts, so a targeted message and a broadcast keep the order they
    /// were sent in on every connection, and a burst shares one flush per
    /// connection.
    /// - Parameter framed: `message` is already wrapped for the sockets'
    ///   subprotocol (the cluster protocol's positioned messages).
    func send(_ message: WebSocketMessage, to sockets: [WebSocket], framed: Bool = false) {
        guard !sockets.isEmpty else { return }
        var perLoop: [ObjectIdentifier: [WebSocket]] = [:]
        for socket in sockets { perLoop[ObjectIdentifier(socket.eventLoop), default: []].append(socket) }
        let size = message.data.readableBytes
        for (_, targets) in perLoop {
            let share = connections.loop(of: targets[0].eventLoop)
            let (schedule, fits) = share.outbox.withLock { outbox -> (Bool, Bool) in
                guard outbox.bytes + size <= configuration.fanOutQueueBytes || outbox.messages.isEmpty else {
                    return (false, false)
                }
                outbox.bytes += size
                outbox.messages.append(.init(message: message, except: [], targets: targets, framed: framed))
                defer { outbox.scheduled = true }
                return (!outbox.scheduled, true)
            }
            guard fits else {
                overflowed(share, messages: 1)
                continue
            }
            if schedule { share.eventLoop.execute { Self.drain(share) } }
        }
    }

    /// Sends one message to every open connection; see ``broadcast(_:except:)-([WebSocketMessage],_)``.
    public func broadcast(_ message: WebSocketMessage, except: Set<UInt64> = []) {
        broadcast([message], except: except)
    }

    private static func drain(_ share: ConnectionTable.LoopConnections) {
        let (queued, written) = share.outbox.withLock { outbox in
            defer { outbox = .init() }
            return (outbox.messages, outbox.written)
        }
        defer { for promise in written { promise.succeed() } }
        guard !queued.isEmpty else { return }
        // In order; consecutive broadcasts with the same exclusions go out as one burst.
        var touched: [ObjectIdentifier: WebSocket] = [:]
        var broadcasted = false
        var start = 0
        while start < queued.count {
            if let targets = queued[start].targets {
                let message = queued[start].message
                let frame = WebSocketFrameEncoding.burst([message])
                let framed = queued[start].framed
                for socket in targets {
                    // A subprotocol connection gets the message wrapped (unless the caller wrapped it).
                    let bytes = framed ? frame : socket.framing.map { WebSocketFrameEncoding.burst([$0.frame(message)]) } ?? frame
                    socket.assumeIsolated { socket in _ = socket.writeWithoutFlush(bytes) }
                    touched[ObjectIdentifier(socket)] = socket
                }
                start += 1
                continue
            }
            var end = start + 1
            while end < queued.count, queued[end].targets == nil, queued[end].except == queued[start].except { end += 1 }
            broadcasted = true
            let messages = queued[start..<end].map(\.message)
            let burst = WebSocketFrameEncoding.burst(messages)
            let except = queued[start].except
            var wrapped: [String: ByteBuffer] = [:]  // per subprotocol, encoded once
            for (id, socket) in share.sockets where !except.contains(id) {
                var bytes = burst
                if let framing = socket.framing {
                    bytes = wrapped[framing.subprotocol] ?? WebSocketFrameEncoding.burst(messages.map(framing.frame))
                    wrapped[framing.subprotocol] = bytes
                }
                socket.assumeIsolated { socket in _ = socket.writeWithoutFlush(bytes) }
            }
            start = end
        }
        // One flush per connection written to: every one after a broadcast, else just the targets.
        if broadcasted {
            for socket in share.sockets.values { socket.assumeIsolated { socket in socket.channel.flush() } }
        }
        for socket in touched.values where !broadcasted || share.sockets[socket.id] == nil {
            socket.assumeIsolated { socket in socket.channel.flush() }
        }
    }
}
