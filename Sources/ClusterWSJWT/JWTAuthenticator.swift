public import ClusterWS
public import Foundation
public import JWTKit

/// Verifies a signed token (JWT, HS256 or RS256) at the WebSocket handshake
/// and returns its subject as the uid to bind.
///
/// The token is read from `Authorization: Bearer <token>` or, for browsers
/// (which cannot set headers on a WebSocket), from the `token` query
/// parameter. `exp` is required and honoured, `nbf` honoured when present,
/// `sub` is the uid. Anything else throws, which the node answers with
/// HTTP 401 before the upgrade: the connection never reaches the registry.
///
/// ```swift
/// let jwt = try await JWTAuthenticator.hs256(secret: secret)   // ≥ 32 bytes
/// node.webSocket("/ws", authenticate: jwt.authenticate) { client in ... }
/// ```
public struct JWTAuthenticator: Sendable {
    private let keys: JWTKeyCollection
    /// The query parameter a token may come in.
    public let queryParameter: String

    /// Uses the keys already in `keys`.
    public init(keys: JWTKeyCollection, queryParameter: String = "token") {
        self.keys = keys
        self.queryParameter = queryParameter
    }

    /// Tokens signed with HMAC-SHA256 and `secret`.
    /// - Throws: ``JWTAuthenticationError/weakSecret`` for a secret shorter
    ///   than 32 bytes (the hash's size, RFC 7518 §3.2).
    public static func hs256(secret: String, queryParameter: String = "token") async throws -> JWTAuthenticator {
        guard secret.utf8.count >= 32 else { throw JWTAuthenticationError.weakSecret }
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        return JWTAuthenticator(keys: keys, queryParameter: queryParameter)
    }

    /// Tokens signed with RSA-SHA256, verified with a PEM public key.
    public static func rs256(publicKeyPEM: String, queryParameter: String = "token") async throws -> JWTAuthenticator {
        let keys = JWTKeyCollection()
        await keys.add(rsa: try Insecure.RSA.PublicKey(pem: publicKeyPEM), digestAlgorithm: .sha256)
        return JWTAuthenticator(keys: keys, queryParameter: queryParameter)
    }

    /// The uid (`sub`) of the request's valid token.
    /// - Throws: ``JWTAuthenticationError``.
    @Sendable
    public func authenticate(_ request: WebSocketRequest) async throws -> String? {
        let header = request.header("authorization")
        let token: String
        if let header, header.lowercased().hasPrefix("bearer ") {
            token = String(header.dropFirst("bearer ".count)).trimmingCharacters(in: .whitespaces)
        } else if let query = request.decodedQueryParameter(queryParameter), !query.isEmpty {
            token = query
        } else {
            throw JWTAuthenticationError.missingToken
        }
        do {
            let claims = try await keys.verify(token, as: ClusterWSClaims.self)
            guard !claims.sub.value.isEmpty else { throw JWTAuthenticationError.invalidToken("empty subject") }
            return claims.sub.value
        } catch let error as JWTAuthenticationError {
            throw error
        } catch {
            throw JWTAuthenticationError.invalidToken("\(error)")
        }
    }
}

/// Why a token was refused.
public enum JWTAuthenticationError: Error, Sendable {
    /// No `Authorization: Bearer` header and no token query parameter.
    case missingToken
    /// Bad signature, expired, not yet valid, malformed, or no subject.
    case invalidToken(String)
    /// An HS256 secret shorter than 32 bytes.
    case weakSecret
}

/// The claims ClusterWS reads: `sub` (the uid), `exp` (required), `nbf` (optional).
public struct ClusterWSClaims: JWTPayload {
    /// The uid.
    public var sub: SubjectClaim
    /// Expiry; a token past it is refused.
    public var exp: ExpirationClaim
    /// Not before; a token used earlier is refused.
    public var nbf: NotBeforeClaim?

    /// Creates claims (for issuing tokens, e.g. in tests or a login service).
    public init(sub: String, exp: Date, nbf: Date? = nil) {
        self.sub = SubjectClaim(value: sub)
        self.exp = ExpirationClaim(value: exp)
        self.nbf = nbf.map { NotBeforeClaim(value: $0) }
    }

    /// Refuses an expired token, or one used before its `nbf`.
    public func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
        try nbf?.verifyNotBefore()
    }
}
