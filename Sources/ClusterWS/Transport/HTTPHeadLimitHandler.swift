package import NIOCore

/// Bounds the HTTP request head (request line and headers) before NIO's HTTP
/// decoder sees it: a head longer than `maxBytes` gets `431 Request Header
/// Fields Too Large` and the connection is closed.
///
/// It only counts: bytes pass through unchanged, and once the first head is
/// complete (`CRLF CRLF`) the handler removes itself, so the body, a
/// WebSocket's frames or anything else that follows are never looked at.
package final class HTTPHeadLimitHandler: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = ByteBuffer

    private let maxBytes: Int
    private let counters: NodeCounters
    private var seen = 0
    /// The last bytes of the previous chunk, to find a terminator split across chunks.
    private var tail: UInt32 = 0
    private var refused = false

    package init(maxBytes: Int, counters: NodeCounters) {
        self.maxBytes = maxBytes
        self.counters = counters
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        let buffer = unwrapInboundIn(data)
        var complete = false
        var index = 0
        for byte in buffer.readableBytesView {
            index += 1
            tail = tail << 8 | UInt32(byte)
            if tail == 0x0D0A_0D0A {  // "\r\n\r\n"
                complete = true
                break
            }
        }
        seen += index  // up to and including the terminator, if it came
        if seen > maxBytes {
            return refuse(context: context)
        }
        context.fireChannelRead(data)
        if complete {
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    private func refuse(context: ChannelHandlerContext) {
        refused = true
        counters.hit(.requestHead)
        let body = "request header fields too large\n"
        let response = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
            + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        context.writeAndFlush(NIOAny(ByteBuffer(string: response))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
