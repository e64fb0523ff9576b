import ClusterWS
import NIOCore
import NIOEmbedded
import NIOHTTP1

extension FuzzTarget {
    /// Bytes as they come off a fresh TCP connection: through our head limit
    /// and NIO's HTTP decoder; every complete head is validated as a
    /// handshake. A valid one must have exactly one well-formed key.
    static func handshake(_ bytes: UnsafeRawBufferPointer) {
        let channel = EmbeddedChannel()
        // Tears the pipeline down even after a close (else channel, pipeline and loop keep each other alive).
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        do {
            try channel.pipeline.syncOperations.addHandler(HTTPHeadLimitHandler(maxBytes: 4_096, counters: NodeCounters()))
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder()))
            try channel.writeInbound(ByteBuffer(bytes: bytes))
        } catch {
            return  // a parse error: NIO answers 400 and we close
        }
        while let part = try? channel.readInbound(as: HTTPServerRequestPart.self) {
            guard case .head(let head) = part else { continue }
            if HandshakeValidator.validate(head) == nil {
                let keys = head.headers["sec-websocket-key"]
                guard keys.count == 1 else { finding("a valid handshake without exactly one key") }
            }
        }
    }
}
