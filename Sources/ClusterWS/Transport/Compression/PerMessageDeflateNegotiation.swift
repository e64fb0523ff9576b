package import NIOHTTP1

/// What one connection agreed on for permessage-deflate (RFC 7692 §7.1).
package struct PerMessageDeflateParameters: Sendable, Hashable {
    /// The server compresses each message alone (its compressor is reset
    /// after every message), so the bytes can be shared between connections.
    package var serverNoContextTakeover: Bool
    /// The client compresses each message alone: one decompressor per event
    /// loop serves every such connection.
    package var clientNoContextTakeover: Bool
    /// The window of the server's compressor (9...15; a client's 8 is served with 9,
    /// whose matches never reach further back than 250 bytes).
    package var serverWindowBits: Int
    /// The window the client may use: what our decompressor must keep (8...15).
    package var clientWindowBits: Int
    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    package var responseHeader: String
}

/// Reads a client's `Sec-WebSocket-Extensions` offers and picks the first
/// acceptable permessage-deflate offer. Malformed or unacceptable offers are
/// skipped; if none is acceptable the extension is declined (the handshake
/// still succeeds, uncompressed).
package enum PerMessageDeflateNegotiation {
    package static let name = "permessage-deflate"

    /// One offer: its parameters in order, a value where one was given (quotes removed).
    package typealias Offer = [(name: String, value: String?)]

    /// Every permessage-deflate offer in the request's `Sec-WebSocket-Extensions` headers, in order.
    /// An extension element that cannot be parsed is left out.
    package static func offers(in headers: HTTPHeaders) -> [Offer] {
        var offers: [Offer] = []
        for line in headers["sec-websocket-extensions"] {
            for element in split(line[...], on: ",") {
                let parts = split(element, on: ";").map(\.trimmingSpaces)
                guard let first = parts.first, first.lowercased() == name else { continue }
                var offer: Offer = []
                var valid = true
                for parameter in parts.dropFirst() {
                    if let equals = parameter.firstIndex(of: "=") {
                        let key = String(parameter[..<equals]).trimmingSpaces.lowercased()
                        var value = String(parameter[parameter.index(after: equals)...].trimmingSpaces)
                        if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                            value = String(value.dropFirst().dropLast())
                        }
                        if key.isEmpty || value.isEmpty { valid = false }
                        offer.append((key, value))
                    } else if parameter.isEmpty {
                        valid = false
                    } else {
                        offer.append((parameter.lowercased(), nil))
                    }
                }
                if valid { offers.append(offer) }
            }
        }
        return offers
    }

    /// The parameters of the first acceptable offer under `configuration`,
    /// or `nil` (declined). `admitContext` is asked, once, whether this
    /// connection may hold a compression context (context takeover mode);
    /// when it answers `false` the connection gets no context takeover.
    package static func negotiate(_ headers: HTTPHeaders, configuration: WebSocketCompression,
                                  admitContext: () -> Bool) -> PerMessageDeflateParameters? {
        guard configuration.mode != .off else { return nil }
        var asked: Bool?
        for offer in offers(in: headers) {
            guard let request = Request(offer) else { continue }
            let wantsContext = configuration.mode == .contextTakeover
                && !(request.serverNoContextTakeover && request.clientNoContextTakeover)
            if asked == nil, wantsContext { asked = admitContext() }
            return accept(request, configuration: configuration, withContext: wantsContext && asked == true)
        }
        return nil
    }

    /// What an offer asks for, once its parameters were checked (§7.1: each at
    /// most once, known names, window bits 8...15 written as plain decimals).
    struct Request {
        var serverNoContextTakeover = false
        var clientNoContextTakeover = false
        var serverMaxWindowBits: Int?
        /// `client_max_window_bits` was offered: the client accepts a limit (the value, if any, is its own).
        var clientMaxWindowBits: Int??

        init?(_ offer: Offer) {
            var seen = Set<String>()
            for (name, value) in offer {
                guard seen.insert(name).inserted else { return nil }
                switch name {
                case "server_no_context_takeover":
                    guard value == nil else { return nil }
                    serverNoContextTakeover = true
                case "client_no_context_takeover":
                    guard value == nil else { return nil }
                    clientNoContextTakeover = true
                case "server_max_window_bits":
                    guard let bits = value.flatMap(Self.windowBits) else { return nil }
                    serverMaxWindowBits = bits
                case "client_max_window_bits":
                    if let value {
                        guard let bits = Self.windowBits(value) else { return nil }
                        clientMaxWindowBits = .some(bits)
                    } else {
                        clientMaxWindowBits = .some(nil)
                    }
                default:
                    return nil
                }
            }
        }

        /// 8...15 written as one or two digits without a leading zero.
        static func windowBits(_ text: String) -> Int? {
            guard (1...2).contains(text.count), text.allSatisfy(\.isASCII), !text.hasPrefix("0"),
                  let bits = Int(text), (8...15).contains(bits) else { return nil }
            return bits
        }
    }

    private static func accept(_ request: Request, configuration: WebSocketCompression,
                               withContext: Bool) -> PerMessageDeflateParameters {
        var response = [name]
        // Our side: each message alone unless this connection holds a context and the client allows it.
        let serverNoContext = !withContext || request.serverNoContextTakeover
        if serverNoContext { response.append("server_no_context_takeover") }
        var serverBits = withContext ? configuration.windowBits : 15
        if let offered = request.serverMaxWindowBits {
            serverBits = min(serverBits, offered)
            response.append("server_max_window_bits=\(offered)")
        }
        // The client's side: without a context of ours it compresses each message alone.
        let clientNoContext = !withContext || request.clientNoContextTakeover
        if clientNoContext { response.append("client_no_context_takeover") }
        var clientBits = 15
        if case .some(let offered) = request.clientMaxWindowBits {
            clientBits = min(offered ?? 15, withContext ? configuration.windowBits : 15)
            if withContext { response.append("client_max_window_bits=\(clientBits)") }
        }
        return PerMessageDeflateParameters(
            serverNoContextTakeover: serverNoContext, clientNoContextTakeover: clientNoContext,
            serverWindowBits: max(9, serverBits), clientWindowBits: clientBits,
            responseHeader: response.joined(separator: "; "))
    }

    /// Splits on `separator` outside double quotes.
    private static func split(_ text: Substring, on separator: Character) -> [Substring] {
        var parts: [Substring] = []
        var start = text.startIndex
        var quoted = false
        var index = text.startIndex
        while index < text.endIndex {
            let character = text[index]
            if character == "\"" { quoted.toggle() }
            if character == separator, !quoted {
                parts.append(text[start..<index])
                start = text.index(after: index)
            }
            index = text.index(after: index)
        }
        parts.append(text[start...])
        return parts
    }
}
