import NIOCore

/// A server frame as read off the wire.
struct WireFrame: Equatable {
    var fin: Bool
    var rsv: UInt8
    var opcode: UInt8
    var masked: Bool
    var payload: [UInt8]

    var text: String { String(decoding: payload, as: UTF8.self) }
    /// For close frames: the status code (nil when the payload is empty).
    var closeCode: UInt16? { payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil }
    var closeReason: String { payload.count > 2 ? String(decoding: payload[2...], as: UTF8.self) : "" }
}

/// Client frames built byte by byte, so tests can break every rule.
enum Wire {
    static let text: UInt8 = 0x1, binary: UInt8 = 0x2, continuation: UInt8 = 0x0
    static let close: UInt8 = 0x8, ping: UInt8 = 0x9, pong: UInt8 = 0xA

    static func frame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, rsv: UInt8 = 0, masked: Bool = true,
                      lengthOverride: UInt64? = nil) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode]
        let length = lengthOverride ?? UInt64(payload.count)
        let maskBit: UInt8 = masked ? 0x80 : 0
        if length < 126 {
            bytes.append(maskBit | UInt8(length))
        } else if length <= 0xFFFF {
            bytes.append(maskBit | 126)
            bytes += [UInt8(length >> 8), UInt8(length & 0xFF)]
        } else {
            bytes.append(maskBit | 127)
            bytes += (0..<8).reversed().map { UInt8(truncatingIfNeeded: length >> (8 * UInt64($0))) }
        }
        guard masked else { return bytes + payload }
        let key: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
        bytes += key
        bytes += payload.enumerated().map { $0.element ^ key[$0.offset % 4] }
        return bytes
    }

    static func frame(_ opcode: UInt8, _ text: String, fin: Bool = true) -> [UInt8] {
        frame(opcode, Array(text.utf8), fin: fin)
    }

    static func closeFrame(code: UInt16?, reason: [UInt8] = []) -> [UInt8] {
        var payload: [UInt8] = []
        if let code { payload = [UInt8(code >> 8), UInt8(code & 0xFF)] + reason }
        return frame(close, payload)
    }

    static func handshake(path: String = "/ws", key: String = "dGhlIHNhbXBsZSBub25jZQ==", version: String = "13",
                          extra: [String] = [], method: String = "GET", httpVersion: String = "1.1") -> String {
        var lines = ["\(method) \(path) HTTP/\(httpVersion)", "Host: localhost", "Upgrade: websocket", "Connection: Upgrade"]
        if !key.isEmpty { lines.append("Sec-WebSocket-Key: \(key)") }
        if !version.isEmpty { lines.append("Sec-WebSocket-Version: \(version)") }
        lines += extra
        return lines.joined(separator: "\r\n") + "\r\n\r\n"
    }
}

extension RawClient {
    /// Reads one server frame.
    func readFrame() async throws -> WireFrame {
        let head = try await read(2)
        var length = UInt64(head[1] & 0x7F)
        if length == 126 {
            let ext = try await read(2)
            length = UInt64(ext[0]) << 8 | UInt64(ext[1])
        } else if length == 127 {
            length = try await read(8).reduce(0) { $0 << 8 | UInt64($1) }
        }
        let masked = head[1] & 0x80 != 0
        if masked { _ = try await read(4) }
        let payload = length > 0 ? try await read(Int(length)) : []
        return WireFrame(fin: head[0] & 0x80 != 0, rsv: (head[0] >> 4) & 0x7, opcode: head[0] & 0x0F,
                         masked: masked, payload: payload)
    }

    /// Performs a valid handshake and checks the 101.
    func upgrade(path: String = "/ws", extra: [String] = []) async throws -> [String: String] {
        try await send(Wire.handshake(path: path, extra: extra))
        let response = try await readHTTPResponse()
        guard response.status == 101 else { throw UpgradeFailed(status: response.status, body: response.body) }
        return response.headers
    }

    /// Reads frames until a close frame; returns it.
    func readUntilClose() async throws -> WireFrame {
        while true {
            let frame = try await readFrame()
            if frame.opcode == Wire.close { return frame }
        }
    }
}

struct UpgradeFailed: Error { var status: Int; var body: String }
