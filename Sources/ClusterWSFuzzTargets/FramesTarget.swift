import ClusterWS
import NIOCore
import NIOEmbedded
import NIOWebSocket

extension FuzzTarget {
    /// Client bytes after the upgrade, in pieces as TCP may deliver them,
    /// through NIO's frame decoder into our protocol state machine (the
    /// handler's logic, without its socket), with small limits so every limit
    /// is reachable. Properties: nothing is delivered after the connection
    /// failed or closed; a delivered text message is valid UTF-8 and within
    /// the size limit; once closed, it stays closed.
    static func frames(_ bytes: UnsafeRawBufferPointer) {
        let maxMessageSize = 2_048
        var machine = WebSocketStateMachine(maxMessageSize: maxMessageSize)
        let channel = EmbeddedChannel()
        // Tears the pipeline down even after a close (else channel, pipeline and loop keep each other alive).
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        do {
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1_024)))
        } catch {
            return
        }
        var offset = 0
        var piece = 1
        while offset < bytes.count {
            let end = min(offset + piece, bytes.count)
            let chunk = ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: bytes[offset..<end]))
            offset = end
            piece = piece * 3 + 1
            do {
                try channel.writeInbound(chunk)
            } catch {
                // NIO's decoder refused the bytes (frame too long, bad control frame): the handler fails the connection.
                check(machine.fail(.protocolError, "decoder"), in: &machine, maxMessageSize: maxMessageSize)
                return
            }
            while let frame = try? channel.readInbound(as: WebSocketFrame.self) {
                let wasClosed = machine.state == .closed
                let action = machine.receive(frame)
                if wasClosed, action != .none { finding("a closed connection acted on a frame: \(action)") }
                check(action, in: &machine, maxMessageSize: maxMessageSize)
            }
        }
    }

    private static func check(_ action: WebSocketStateMachine.Action, in machine: inout WebSocketStateMachine,
                              maxMessageSize: Int) {
        guard case .deliver(let message) = action else { return }
        if machine.state != .open { finding("delivered a message while \(machine.state)") }
        if message.data.readableBytes > maxMessageSize { finding("delivered \(message.data.readableBytes) bytes") }
        if message.kind == .text, String(validating: message.data.readableBytesView, as: UTF8.self) == nil {
            finding("delivered invalid UTF-8 as text")
        }
    }
}
