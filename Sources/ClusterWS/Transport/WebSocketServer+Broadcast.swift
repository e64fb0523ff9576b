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

    /// Like ``broadcast(_:except:)-([WebSocketMessage],_)``, but paced: it
    /// returns at once while each event loop has less than
    /// ``WebSocketServerConfiguration/fanOutPacingBytes`` of broadcasts not yet
    /// flushed to all its connections, and otherwise once this broadcast was
    /// flushed to every connection (handed to the sockets, not yet read by the
    /// clients). A sender that awaits each broadcast therefore never outruns
    /// the writes by more than that budget and never meets the fan-out queue's
    /// drop limit, while its broadcasts still share one write per connection.
    public func broadcastAndWait(_ messages: [WebSocketMessage], except: Set<UInt64> = []) async {
        for future in enqueue(messages, except: except, notify: true) { try? await future.get() }
    }

    /// Queues a broadcast; with `notify`, returns a future per event loop that
    /// is over its pacing budget (none while every loop is under it).
    func enqueue(_ messages: [WebSocketMessage], except: Set<UInt64>, notify: Bool) -> [EventLoopFuture<Void>] {
        guard !messages.isEmpty else { return [] }
        let size = messages.reduce(0) { $0 + $1.data.readableBytes }
        let pacing = configuration.fanOutPacingBytes
        var written: [EventLoopFuture<Void>] = []
        for share in connections.loops {
            let (schedule, fits, promise) = share.outbox.withLock { outbox -> (Bool, Bool, EventLoopPromise<Void>?) in
                guard outbox.bytes + size <= configuration.fanOutQueueBytes || outbox.messages.isEmpty else {
                    return (false, false, nil)
                }
                outbox.bytes += size
                outbox.unflushed += size
                for message in messages { outbox.messages.append(.init(message: message, except: except, targets: nil)) }
                var promise: EventLoopPromise<Void>?
                if notify, outbox.unflushed > pacing {
                    promise = share.eventLoop.makePromise(of: Void.self)
                    outbox.written.append(promise!)
                }
                defer { outbox.scheduled = true }
                return (!outbox.scheduled, true, promise)
            }
            guard fits else {
                overflowed(share, messages: messages.count)
                continue
            }
            if let promise { written.append(promise.futureResult) }
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
        guard let first = sockets.first else { return }
        // Usually every target is on one loop (a user's one or two devices): queue the array as it is.
        if sockets.allSatisfy({ $0.eventLoop === first.eventLoop }) {
            return queue(message, to: sockets, on: connections.loop(of: first.eventLoop), framed: framed)
        }
        var perLoop: [ObjectIdentifier: [WebSocket]] = [:]
        for socket in sockets { perLoop[ObjectIdentifier(socket.eventLoop), default: []].append(socket) }
        for (_, targets) in perLoop {
            queue(message, to: targets, on: connections.loop(of: targets[0].eventLoop), framed: framed)
        }
    }

    private func queue(_ message: WebSocketMessage, to targets: [WebSocket], on share: ConnectionTable.LoopConnections,
                       framed: Bool) {
        let size = message.data.readableBytes
        let (schedule, fits) = share.outbox.withLock { outbox -> (Bool, Bool) in
            guard outbox.bytes + size <= configuration.fanOutQueueBytes || outbox.messages.isEmpty else {
                return (false, false)
            }
            outbox.bytes += size
            outbox.messages.append(.init(message: message, except: [], targets: targets, framed: framed))
            defer { outbox.scheduled = true }
            return (!outbox.scheduled, true)
        }
        guard fits else { return overflowed(share, messages: 1) }
        if schedule { share.eventLoop.execute { Self.drain(share) } }
    }

    /// Sends one message to every open connection; see ``broadcast(_:except:)-([WebSocketMessage],_)``.
    public func broadcast(_ message: WebSocketMessage, except: Set<UInt64> = []) {
        broadcast([message], except: except)
    }

    private static func drain(_ share: ConnectionTable.LoopConnections) {
        let (queued, written) = share.outbox.withLock { outbox in
            defer { outbox = .init(unflushed: outbox.unflushed) }
            return (outbox.messages, outbox.written)
        }
        guard !queued.isEmpty else { return }
        // The targeted messages' frames, encoded into one buffer (one allocation per drain,
        // not per message); each is written as a slice of it.
        let allocator = ByteBufferAllocator()
        let targeted = queued.lazy.filter { $0.targets != nil }
        let targetedBytes = targeted.reduce(0) {
            $0 + WebSocketFrameEncoding.headerLength(payload: $1.message.data.readableBytes) + $1.message.data.readableBytes
        }
        var frames = allocator.buffer(capacity: targetedBytes)
        for item in targeted where targetedBytes > 0 {
            WebSocketFrameEncoding.writeHeader(opcode: item.message.kind.rawValue, payloadLength: item.message.data.readableBytes,
                                               into: &frames)
            frames.writeImmutableBuffer(item.message.data)
        }
        // In order; consecutive broadcasts with the same exclusions go out as one burst.
        var touched: [ObjectIdentifier: WebSocket] = [:]
        var broadcasted = false
        var broadcastBytes = 0
        var start = 0
        while start < queued.count {
            if let targets = queued[start].targets {
                let message = queued[start].message
                let length = WebSocketFrameEncoding.headerLength(payload: message.data.readableBytes) + message.data.readableBytes
                let frame = frames.readSlice(length: length) ?? WebSocketFrameEncoding.frame(message, allocator: allocator)
                // A subprotocol connection gets the message wrapped (unless the caller wrapped it),
                // a compressed one gets it deflated: once per kind of receiver.
                var shared = SharedFrames([message], plain: frame, framed: queued[start].framed)
                for socket in targets {
                    _ = socket.writeWithoutFlush(shared.bytes(for: socket))
                    touched[ObjectIdentifier(socket)] = socket
                }
                start += 1
                continue
            }
            var end = start + 1
            while end < queued.count, queued[end].targets == nil, queued[end].except == queued[start].except { end += 1 }
            let messages = queued[start..<end].map(\.message)
            broadcasted = true
            broadcastBytes += messages.reduce(0) { $0 + $1.data.readableBytes }
            let except = queued[start].except
            // Encoded once per kind of receiver (plain, per subprotocol, per deflate parameters).
            var shared = SharedFrames(messages, plain: WebSocketFrameEncoding.burst(messages))
            for (id, socket) in share.sockets where !except.contains(id) {
                _ = socket.writeWithoutFlush(shared.bytes(for: socket))
            }
            start = end
        }
        // Targeted messages are flushed now; after a broadcast every connection is,
        // a slice at a time (see FlushPass), so Redis replies are not kept waiting.
        for socket in touched.values { socket.channel.flush() }
        if broadcasted || !written.isEmpty {
            share.flushPass.written(bytes: broadcastBytes, promises: written, share: share)
        }
    }
}
