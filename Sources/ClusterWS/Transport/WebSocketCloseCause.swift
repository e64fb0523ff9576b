/// Why a WebSocket connection closed. The transport decides it where the
/// close starts, and it travels with the close (``WebSocket/closeCause``),
/// so a rate-limit close and a slow-consumer close — both 1008 on the wire —
/// are told apart in metrics and logs.
public enum WebSocketCloseCause: String, Sendable, Hashable {
    /// The client started the close handshake.
    case peerClosed = "peer_closed"
    /// The client broke the protocol (1002).
    case protocolError = "protocol_error"
    /// Invalid UTF-8 in a text message or close reason (1007).
    case invalidPayload = "invalid_payload"
    /// A frame or message over the size limit (1009).
    case messageTooBig = "message_too_big"
    /// More messages per second than allowed (1008).
    case rateLimited = "rate_limited"
    /// More bytes per second than allowed (1008).
    case byteRateLimited = "byte_rate_limited"
    /// No answer to a keepalive ping (1008).
    case keepaliveTimeout = "keepalive_timeout"
    /// Reads too slowly: too much queued for it (1008).
    case slowConsumer = "slow_consumer"
    /// The application or the server closed it (`close(code:reason:)`, shutdown).
    case closedByServer = "closed_by_server"
    /// The TCP connection went away without a close handshake.
    case connectionLost = "connection_lost"

    /// The drop it is counted as, for the causes that police a client.
    var dropReason: DropReason? {
        switch self {
        case .rateLimited: .rateLimit
        case .byteRateLimited: .byteRateLimit
        case .keepaliveTimeout: .keepaliveTimeout
        case .slowConsumer: .slowConsumer
        default: nil
        }
    }
}
