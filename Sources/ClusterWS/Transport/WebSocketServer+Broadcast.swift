import NIOCore

extension WebSocketServer {
    /// Sends `messages` to every open connection of this server.
    ///
    /// Each event loop gets one job: it encodes the burst of frames once into
    /// one buffer (server frames are unmasked, so the bytes are the same for
    /// every client), writes that buffer to each of its connections and
    /// flushes each connection once. Other loops' jobs are queued before the
    /// caller's own loop runs its share, so both cores work at once.
    /// - Parameter except: connection ids to skip.
    public func broadcast(_ messages: [WebSocketMessage], except: Set<Int> = []) {
        guard !messages.isEmpty else { return }
        let local = connections.shares.first { $0.eventLoop.inEventLoop }
        for share in connections.shares where share !== local {
            share.eventLoop.execute { Self.deliver(messages, to: share, except: except) }
        }
        if let local { Self.deliver(messages, to: local, except: except) }
    }

    /// Sends one message to every open connection; see ``broadcast(_:except:)-([WebSocketMessage],_)``.
    public func broadcast(_ message: WebSocketMessage, except: Set<Int> = []) {
        broadcast([message], except: except)
    }

    private static func deliver(_ messages: [WebSocketMessage], to share: ConnectionTable.LoopShare, except: Set<Int>) {
        guard !share.sockets.isEmpty else { return }
        let burst = FanOut.encode(messages)
        for (id, socket) in share.sockets where !except.contains(id) {
            socket.assumeIsolated { socket in
                if socket.writeWithoutFlush(burst) { socket.channel.flush() }
            }
        }
    }
}

/// Encoding shared by every fan-out path.
enum FanOut {
    private static let allocator = ByteBufferAllocator()

    /// All `messages` as consecutive frames in one buffer.
    static func encode(_ messages: [WebSocketMessage]) -> ByteBuffer {
        if messages.count == 1 { return WebSocketFrameEncoding.frame(messages[0], allocator: allocator) }
        let size = messages.reduce(0) { $0 + WebSocketFrameEncoding.headerLength(payload: $1.data.readableBytes) + $1.data.readableBytes }
        var buffer = allocator.buffer(capacity: size)
        for message in messages {
            WebSocketFrameEncoding.writeHeader(opcode: message.kind.rawValue, payloadLength: message.data.readableBytes, into: &buffer)
            buffer.writeImmutableBuffer(message.data)
        }
        return buffer
    }
}
