import Crypto
import Foundation
public import NIOCore

/// Signed requests, for callers that should not send a bearer key: the
/// hex HMAC-SHA256, with a shared secret, of
/// `<timestamp>.<METHOD> <path and query>.<body>`, sent as
/// `X-ClusterWS-Signature`, with the Unix time in seconds as
/// `X-ClusterWS-Timestamp` (requests older than `maxSignatureAge` are refused).
///
/// ```sh
/// ts=$(date +%s); body='{"uid":"alice","text":"hi"}'
/// sig=$(printf '%s' "$ts.POST /api/publish.$body" | openssl dgst -sha256 -hmac "$SECRET" -hex | cut -d' ' -f2)
/// curl -H "X-ClusterWS-Timestamp: $ts" -H "X-ClusterWS-Signature: $sig" -d "$body" http://node:8080/api/publish
/// ```
public enum RequestSignature {
    public static let signatureHeader = "X-ClusterWS-Signature"
    public static let timestampHeader = "X-ClusterWS-Timestamp"

    /// The signature of a request.
    public static func sign(secret: String, timestamp: String, method: String, uri: String, body: ByteBuffer) -> String {
        var message = Data("\(timestamp).\(method) \(uri).".utf8)
        message.append(contentsOf: body.readableBytesView)
        let code = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Data(secret.utf8)))
        return code.map { String(format: "%02x", $0) }.joined()
    }

    /// Compares without stopping at the first difference.
    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var difference = UInt8(x.count == y.count ? 0 : 1)
        for index in 0..<max(x.count, y.count) {
            difference |= (index < x.count ? x[index] : 0) ^ (index < y.count ? y[index] : 0)
        }
        return difference == 0
    }
}
