import NIOCore

/// The ClusterWS client protocol, version 1: what a client that offers
/// `Sec-WebSocket-Protocol: clusterws.v1` gets instead of raw frames.
///
/// **Server → client**: every frame is a text frame holding one JSON object.
///
/// ```
/// {"type":"message","data":"hi"}                                         a message without history
/// {"type":"message","stream":"user:alice","offset":12,"epoch":"k3f9","data":"hi"}
/// {"type":"message",…,"binary":true,"data":"AAEC"}                       binary: data is base64
/// {"type":"position","stream":"user:alice","offset":12,"epoch":"k3f9"}    subscribed; history goes on after 12
/// {"type":"recovered","stream":"user:alice","recovered":true,"replayed":3,"offset":15,"epoch":"k3f9"}
/// {"type":"recovered","stream":"user:alice","recovered":false,"reason":"trimmed","offset":15,"epoch":"k3f9"}
/// ```
///
/// **Client → server**: the application's frames, raw. What the client last
/// saw goes in the upgrade request, one query parameter per stream:
/// `clusterws-position=<offset>.<epoch>.<stream>` (percent-encoded), for
/// example `clusterws-position=12.k3f9.user%3Aalice`.
///
/// See the README ("Client protocol") for the full specification.
enum ClusterProtocol {
    /// The `Sec-WebSocket-Protocol` value.
    static let subprotocol = "clusterws.v1"
    /// The query parameter carrying a last-seen position.
    static let positionParameter = "clusterws-position"
    /// Most positions one upgrade request may carry.
    static let maxPositions = 64

    /// Why a stream could not be recovered.
    enum Reason: String, Sendable {
        /// Messages after the client's offset were trimmed (`history.maxLength`).
        case trimmed
        /// The stream's messages expired (`history.maxAge` without a new one).
        case expired
        /// The stream is not the one the client saw: Redis lost it, or it
        /// expired entirely and was started again.
        case epochChanged = "epoch_changed"
        /// The client's offset is past the stream's last one.
        case invalidOffset = "invalid_offset"
        /// Redis could not be read; the client should reload.
        case unavailable
    }

    /// The frame of an application message, with its stream position when it has one.
    static func message(_ message: WebSocketMessage, stream: HistoryStream? = nil, at position: StreamPosition? = nil)
        -> WebSocketMessage {
        var json = JSONWriter()
        json.field("type", "message")
        if let stream, let position { json.position(stream, position) }
        if message.kind == .binary {
            json.field("binary", true)
            json.field("data", SHA1.base64(Array(message.data.readableBytesView)))
        } else {
            json.field("data", String(buffer: message.data))
        }
        return json.message()
    }

    /// "Subscribed to `stream`; its history goes on after `position`."
    static func position(_ stream: HistoryStream, _ position: StreamPosition) -> WebSocketMessage {
        var json = JSONWriter()
        json.field("type", "position")
        json.position(stream, position)
        return json.message()
    }

    /// The outcome of a recovery: `replayed` messages followed (or, with a
    /// `reason`, none: the client starts again from `position`).
    static func recovered(_ stream: HistoryStream, replayed: Int, reason: Reason?, at position: StreamPosition)
        -> WebSocketMessage {
        var json = JSONWriter()
        json.field("type", "recovered")
        json.field("stream", stream.description)
        json.field("recovered", reason == nil)
        if let reason { json.field("reason", reason.rawValue) } else { json.field("replayed", replayed) }
        json.field("offset", position.offset)
        json.field("epoch", position.epoch)
        return json.message()
    }

    /// The positions a client sent in its upgrade request (at most
    /// ``maxPositions``; malformed ones are skipped).
    static func positions(in request: WebSocketRequest) -> [HistoryStream: StreamPosition] {
        guard let query = request.uri.split(separator: "?", maxSplits: 1).dropFirst().first else { return [:] }
        var positions: [HistoryStream: StreamPosition] = [:]
        for pair in query.split(separator: "&") where positions.count < maxPositions {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, parts[0] == positionParameter[...],
                  let value = PercentDecoding.decode(parts[1], plusAsSpace: true),
                  let (stream, position) = parsePosition(value) else { continue }
            positions[stream] = position
        }
        return positions
    }

    /// `<offset>.<epoch>.<stream>`.
    static func parsePosition(_ value: String) -> (HistoryStream, StreamPosition)? {
        let parts = value.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, let offset = UInt64(parts[0]), !parts[1].isEmpty, parts[1].utf8.count <= 64,
              let stream = HistoryStream(String(parts[2])) else { return nil }
        return (stream, StreamPosition(offset: offset, epoch: String(parts[1])))
    }
}

/// A flat JSON object, written by hand (no Foundation in this module).
struct JSONWriter {
    private var buffer = ByteBuffer()
    private var first = true

    init() { buffer.writeStaticString("{") }

    mutating func field(_ name: StaticString, _ value: String) {
        key(name)
        buffer.writeStaticString("\"")
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
            case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
            case UInt8(ascii: "\n"): buffer.writeStaticString("\\n")
            case UInt8(ascii: "\r"): buffer.writeStaticString("\\r")
            case UInt8(ascii: "\t"): buffer.writeStaticString("\\t")
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                buffer.writeStaticString("\\u00")
                buffer.writeInteger(hex[Int(byte >> 4)])
                buffer.writeInteger(hex[Int(byte & 0xF)])
            default: buffer.writeInteger(byte)
            }
        }
        buffer.writeStaticString("\"")
    }

    mutating func field(_ name: StaticString, _ value: Bool) {
        key(name)
        if value { buffer.writeStaticString("true") } else { buffer.writeStaticString("false") }
    }

    mutating func field(_ name: StaticString, _ value: some BinaryInteger) {
        key(name)
        buffer.writeString(String(value))
    }

    mutating func position(_ stream: HistoryStream, _ position: StreamPosition) {
        field("stream", stream.description)
        field("offset", position.offset)
        field("epoch", position.epoch)
    }

    private mutating func key(_ name: StaticString) {
        if !first { buffer.writeStaticString(",") }
        first = false
        buffer.writeStaticString("\"")
        buffer.writeStaticString(name)
        buffer.writeStaticString("\":")
    }

    /// The object as a text message.
    mutating func message() -> WebSocketMessage {
        buffer.writeStaticString("}")
        return WebSocketMessage(kind: .text, data: buffer)
    }
}
