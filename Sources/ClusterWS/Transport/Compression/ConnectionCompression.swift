package import NIOCore

/// One event loop's shared zlib streams for connections without context
/// takeover: created on first use, only touched on the loop. A connection
/// that compresses each message alone needs no state of its own.
package final class LoopCodecs: @unchecked Sendable {
    private let level: Int32
    private var deflaters: [Int: MessageDeflater] = [:]
    private var sharedInflater: MessageInflater?

    package init(level: Int32) {
        self.level = level
    }

    /// The loop's compressor for `windowBits`, reset after every message.
    package func deflater(windowBits: Int) -> MessageDeflater? {
        if let deflater = deflaters[windowBits] { return deflater }
        let deflater = try? MessageDeflater(windowBits: windowBits, level: level, resetsPerMessage: true)
        deflaters[windowBits] = deflater
        return deflater
    }

    /// Messages the loop's shared compressors have compressed.
    package var messagesDeflated: Int { deflaters.values.reduce(0) { $0 + $1.messagesDeflated } }

    /// The loop's decompressor (a 32 KiB window reads any client window), reset after every message.
    package var inflater: MessageInflater? {
        if let sharedInflater { return sharedInflater }
        sharedInflater = try? MessageInflater(windowBits: 15, resetsPerMessage: true)
        return sharedInflater
    }
}

/// What a connection that negotiated permessage-deflate compresses and
/// decompresses with: the loop's shared streams, or (context takeover) its
/// own, created on first use. Only touched on the connection's event loop.
package final class ConnectionCompression: @unchecked Sendable {
    package let parameters: PerMessageDeflateParameters
    /// Payloads smaller than this are sent uncompressed.
    let minimumSize: Int
    private let codecs: LoopCodecs
    private let level: Int32
    private let memoryLevel: Int32
    private var ownDeflater: MessageDeflater?
    private var ownInflater: MessageInflater?

    package init(parameters: PerMessageDeflateParameters, configuration: WebSocketCompression, codecs: LoopCodecs) {
        self.parameters = parameters
        self.minimumSize = configuration.minimumSize
        self.codecs = codecs
        self.level = configuration.zlibLevel
        // A context per connection is kept small: zlib's hash tables sized to the window.
        self.memoryLevel = Int32(max(1, min(8, parameters.serverWindowBits - 7)))
    }

    /// Connections with the same key get the same compressed bytes for the
    /// same message (`nil`: this one compresses with its own context).
    package var shareKey: Int? { parameters.serverNoContextTakeover ? parameters.serverWindowBits : nil }

    /// Whether `payload` goes out compressed.
    func compresses(_ payload: ByteBuffer) -> Bool { payload.readableBytes >= minimumSize }

    /// The compressed payload, or `nil` (send it uncompressed).
    func deflate(_ payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer? {
        if parameters.serverNoContextTakeover {
            return codecs.deflater(windowBits: parameters.serverWindowBits)?.deflate(payload, allocator: allocator)
        }
        if ownDeflater == nil {
            ownDeflater = try? MessageDeflater(windowBits: parameters.serverWindowBits, level: level,
                                               memoryLevel: memoryLevel, resetsPerMessage: false)
        }
        return ownDeflater?.deflate(payload, allocator: allocator)
    }

    /// A received compressed message's payload, inflated within `limit` bytes.
    func inflate(_ compressed: ByteBuffer, limit: Int, allocator: ByteBufferAllocator)
        -> Result<ByteBuffer, MessageInflater.Failure>
    {
        let inflater: MessageInflater?
        if parameters.clientNoContextTakeover {
            inflater = codecs.inflater
        } else {
            if ownInflater == nil {
                ownInflater = try? MessageInflater(windowBits: parameters.clientWindowBits, resetsPerMessage: false)
            }
            inflater = ownInflater
        }
        guard let inflater else { return .failure(.unavailable) }
        return inflater.inflate(compressed, limit: limit, allocator: allocator)
    }
}
