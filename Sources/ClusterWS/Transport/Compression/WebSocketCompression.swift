/// permessage-deflate (RFC 7692): whether and how a server compresses the
/// messages of connections whose client offers it (every browser does).
///
/// ```swift
/// var configuration = WebSocketServerConfiguration(port: 9502)
/// configuration.compression = .noContextTakeover       // the default
/// configuration.compression.minimumSize = 256           // smaller messages go out as they are
/// configuration.compression = .off                      // decline every offer
/// ```
///
/// - ``Mode-swift.enum/noContextTakeover`` compresses each message on its own.
///   The server keeps no compression state per connection (a compressor and
///   a decompressor per event loop), and a message sent to many connections
///   (a broadcast, a room, several users) is compressed once and the same
///   bytes are written to all of them.
/// - ``Mode-swift.enum/contextTakeover`` keeps a zlib stream per connection
///   in each direction, so a message can refer back to earlier ones: a better
///   ratio for many small similar messages, at the cost of memory per
///   connection and a deflate per receiver. At most
///   ``maxContextTakeoverConnections`` connections get it; the ones past it
///   are downgraded to no context takeover.
public struct WebSocketCompression: Sendable, Hashable {
    /// Which of the RFC's modes the server offers.
    public enum Mode: Sendable, Hashable {
        /// Decline permessage-deflate: messages travel as they are.
        case off
        /// Compress each message alone (`server_no_context_takeover` and
        /// `client_no_context_takeover`): no state per connection, one deflate per fan-out.
        case noContextTakeover
        /// A compression context per connection, kept across messages.
        case contextTakeover
    }

    /// Which mode the server negotiates.
    public var mode: Mode
    /// Payloads smaller than this go out uncompressed (their frame's RSV1 clear):
    /// deflate saves nothing on a few bytes and costs a call.
    public var minimumSize: Int
    /// zlib's compression level, 1 (fastest) to 9 (smallest); out-of-range values are clamped.
    public var level: Int
    /// In ``Mode-swift.enum/contextTakeover``: the base-2 log of the window
    /// each connection's compressor and decompressor keeps (9...15; 15 is
    /// zlib's 32 KiB, 12 a 4 KiB window at about a sixth of the memory).
    /// The client is asked to keep its window to this size when it offers
    /// `client_max_window_bits`.
    public var contextTakeoverWindowBits: Int
    /// In ``Mode-swift.enum/contextTakeover``: connections that may hold a
    /// compression context at once (each holds about 40 KiB at 12 window
    /// bits, see the README). Connections past it negotiate no context
    /// takeover instead, so memory stays bounded whatever the clients ask.
    public var maxContextTakeoverConnections: Int

    /// A configuration; the defaults compress messages of 128 bytes or more,
    /// each on its own, at zlib's default level.
    public init(mode: Mode = .noContextTakeover, minimumSize: Int = 128, level: Int = 6,
                contextTakeoverWindowBits: Int = 12, maxContextTakeoverConnections: Int = 1_000) {
        self.mode = mode
        self.minimumSize = minimumSize
        self.level = level
        self.contextTakeoverWindowBits = contextTakeoverWindowBits
        self.maxContextTakeoverConnections = maxContextTakeoverConnections
    }

    /// Compression declined: no connection negotiates permessage-deflate.
    public static let off = WebSocketCompression(mode: .off)
    /// Each message compressed alone; no state per connection (the default).
    public static let noContextTakeover = WebSocketCompression(mode: .noContextTakeover)
    /// A compression context per connection (up to ``maxContextTakeoverConnections``).
    public static let contextTakeover = WebSocketCompression(mode: .contextTakeover)

    /// `level` within zlib's range.
    var zlibLevel: Int32 { Int32(min(9, max(1, level))) }
    /// `contextTakeoverWindowBits` within the RFC's range.
    var windowBits: Int { min(15, max(9, contextTakeoverWindowBits)) }
}
