import CompressNIO
package import NIOCore

/// Compresses message payloads for permessage-deflate: raw deflate, each
/// message ended with a sync flush whose 4-byte tail (`00 00 ff ff`) is
/// removed (RFC 7692 §7.2.1). Loop-confined: one caller at a time.
package final class MessageDeflater {
    private let compressor: ZlibCompressor
    /// Reset after every message (no context takeover): the output depends on
    /// the message alone, so it can be shared between connections.
    private let resetsPerMessage: Bool
    /// Messages compressed so far (a fan-out compresses once per parameter set: tests count this).
    package private(set) var messagesDeflated = 0

    /// A compressor with a window of `windowBits` (9...15) at `level` (1...9).
    /// `memoryLevel` (1...9) sizes zlib's hash tables: 8 is zlib's default, lower values cost less per connection.
    package init(windowBits: Int, level: Int32, memoryLevel: Int32 = 8, resetsPerMessage: Bool) throws {
        let configuration = ZlibConfiguration(windowSize: Int32(min(15, max(9, windowBits))), compressionLevel: level,
                                              memoryLevel: memoryLevel, strategy: .default)
        compressor = try ZlibCompressor(algorithm: .deflate, configuration: configuration)
        self.resetsPerMessage = resetsPerMessage
    }

    /// The compressed payload (the frame's payload with RSV1 set), or `nil` if
    /// zlib failed; then the message must go out uncompressed, and the
    /// compressor was reset so the peer's context stays in step with ours.
    package func deflate(_ payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer? {
        var input = payload
        messagesDeflated += 1
        var output = allocator.buffer(capacity: compressor.maxSize(from: input) + 16)
        defer { if resetsPerMessage { try? compressor.reset() } }
        do {
            // deflateBound leaves room for the whole message and the flush; grow if it ever does not.
            for _ in 0..<8 {
                try compressor.deflate(from: &input, to: &output, flush: .sync)
                if output.writableBytes > 0, input.readableBytes == 0 { break }
                output.reserveCapacity(minimumWritableBytes: max(256, output.readableBytes))
            }
        } catch {
            try? compressor.reset()
            return nil
        }
        // A complete sync flush ends with an empty stored block: 00 00 ff ff.
        guard input.readableBytes == 0, output.readableBytes >= 4,
              output.getInteger(at: output.writerIndex - 4, as: UInt32.self) == 0x0000_FFFF else {
            try? compressor.reset()
            return nil
        }
        output.moveWriterIndex(to: output.writerIndex - 4)
        return output
    }
}

/// Decompresses permessage-deflate messages with a byte budget enforced
/// while inflating: a message that would inflate past `limit` stops after at
/// most `limit + 1` bytes were produced. Loop-confined: one caller at a time.
package final class MessageInflater {
    /// Why a message could not be inflated.
    package enum Failure: Error, Equatable {
        /// It inflates to more than the limit (a deflate bomb, or just too big): 1009.
        case tooBig
        /// Not a valid deflate stream (or one using a context it may not use): 1007.
        case corrupt
        /// zlib could not start (out of memory): 1011.
        case unavailable
    }

    private let decompressor: ZlibDecompressor
    private let resetsPerMessage: Bool

    /// A decompressor for a peer whose window is at most `windowBits` (8...15).
    package init(windowBits: Int, resetsPerMessage: Bool) throws {
        decompressor = try ZlibDecompressor(algorithm: .deflate, windowSize: Int32(min(15, max(8, windowBits))))
        self.resetsPerMessage = resetsPerMessage
    }

    /// The message's payload, from its compressed bytes (all frames joined).
    package func inflate(_ compressed: ByteBuffer, limit: Int, allocator: ByteBufferAllocator) -> Result<ByteBuffer, Failure> {
        var input = allocator.buffer(capacity: compressed.readableBytes + 4)
        input.writeImmutableBuffer(compressed)
        input.writeInteger(UInt32(0x0000_FFFF))  // the tail the sender removed (§7.2.2)
        var output = allocator.buffer(capacity: max(64, min(limit + 1, compressed.readableBytes * 4)))
        var streamEnded = false
        defer { if resetsPerMessage || streamEnded { try? decompressor.reset() } }
        while true {
            if output.writableBytes == 0 {
                guard output.readableBytes <= limit else { return failed(.tooBig) }
                output.reserveCapacity(minimumWritableBytes: max(1, min(output.readableBytes, limit + 1 - output.readableBytes)))
            }
            let before = (input.readableBytes, output.readableBytes)
            var outputFull = false
            do {
                try decompressor.inflate(from: &input, to: &output)
            } catch let error as CompressNIOError where error == .bufferOverflow {
                outputFull = true
            } catch let error as CompressNIOError where error == .inputBufferOverflow {
                break  // every byte read, nothing more to produce
            } catch {
                return failed(.corrupt)
            }
            guard output.readableBytes <= limit else { return failed(.tooBig) }
            if outputFull {
                // zlib said it could not go on although there is room: a stream it cannot read.
                guard output.writableBytes == 0 || (input.readableBytes, output.readableBytes) != before else {
                    return failed(.corrupt)
                }
                continue
            }
            if input.readableBytes == 0 { break }
            if (input.readableBytes, output.readableBytes) == before {
                // The stream ended (a block with BFINAL, §7.2.3.3): what follows it (our tail,
                // padding) is not part of the message. The next message starts a new stream.
                streamEnded = true
                break
            }
        }
        return .success(output)
    }

    private func failed(_ failure: Failure) -> Result<ByteBuffer, Failure> {
        try? decompressor.reset()
        return .failure(failure)
    }
}
