/// Incremental UTF-8 validation (RFC 3629), fed frame by frame so a text
/// message is rejected as soon as an invalid byte arrives, even when a code
/// point is split across fragments.
///
/// Rejects overlong forms, surrogates (U+D800–U+DFFF), code points above
/// U+10FFFF, stray continuation bytes and truncated sequences.
struct UTF8Validator: Sendable {
    /// Continuation bytes still expected for the current code point.
    private var remaining: UInt8 = 0
    /// Allowed range for the next byte (narrower right after E0, ED, F0, F4).
    private var lower: UInt8 = 0x80
    private var upper: UInt8 = 0xBF

    /// `true` when no code point is half-read.
    var isComplete: Bool { remaining == 0 }

    /// Feeds more bytes; returns `false` at the first invalid byte.
    mutating func feed(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        let count = bytes.count
        while index < count {
            let byte = bytes[index]
            index += 1
            if remaining == 0 {
                if byte < 0x80 {
                    // ASCII fast path: skip 8 bytes at a time while they are all ASCII.
                    while index + 8 <= count,
                          bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
                        index += 8
                    }
                    continue
                }
                switch byte {
                case 0xC2...0xDF: remaining = 1; lower = 0x80; upper = 0xBF
                case 0xE0: remaining = 2; lower = 0xA0; upper = 0xBF
                case 0xE1...0xEC, 0xEE...0xEF: remaining = 2; lower = 0x80; upper = 0xBF
                case 0xED: remaining = 2; lower = 0x80; upper = 0x9F
                case 0xF0: remaining = 3; lower = 0x90; upper = 0xBF
                case 0xF1...0xF3: remaining = 3; lower = 0x80; upper = 0xBF
                case 0xF4: remaining = 3; lower = 0x80; upper = 0x8F
                default: return false  // 0x80–0xC1 (stray continuation, overlong lead), 0xF5–0xFF
                }
            } else {
                guard byte >= lower && byte <= upper else { return false }
                remaining -= 1
                lower = 0x80
                upper = 0xBF
            }
        }
        return true
    }

    /// Validates a whole buffer at once.
    static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var validator = UTF8Validator()
        return validator.feed(bytes) && validator.isComplete
    }
}
