import ClusterWS
import NIOCore

extension FuzzTarget {
    /// Whatever decodes re-encodes to the same bytes (the current version;
    /// version 1 re-encodes as the current one) and decodes to the same value.
    static func envelope(_ bytes: UnsafeRawBufferPointer) {
        let buffer = ByteBuffer(bytes: bytes)
        guard let envelope = try? Envelope(decoding: buffer) else { return }
        guard let again = try? envelope.encoded() else { finding("a decoded envelope does not encode") }
        let current = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt8.self) != 1
        guard !current || again == buffer else { finding("re-encoding changed the bytes") }
        guard (try? Envelope(decoding: again)) == envelope else { finding("round trip changed the envelope") }
    }

    /// A `DistributedFD` that parses prints back to the same text.
    static func distributedFD(_ bytes: UnsafeRawBufferPointer) {
        let text = String(decoding: bytes, as: UTF8.self)
        guard let fd = DistributedFD(text) else { return }
        guard fd.description == text else { finding("\(text) parsed but prints as \(fd)") }
    }
}
