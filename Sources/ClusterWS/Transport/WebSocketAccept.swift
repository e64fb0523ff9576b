/// `Sec-WebSocket-Accept` (RFC 6455 §4.2.2): base64(SHA-1(key + GUID)).
///
/// SHA-1 here only proves the server read the handshake; it is not used for
/// security, so a small local implementation (``SHA1``) avoids a crypto dependency.
enum WebSocketAccept {
    static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    static func value(forKey key: some StringProtocol) -> String {
        SHA1.base64(SHA1.digest(Array(key.utf8) + Array(guid.utf8)))
    }
}
