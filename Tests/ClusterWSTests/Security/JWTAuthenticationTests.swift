@testable import ClusterWS
import ClusterWSJWT
import EmbeddedRedis
import Foundation
import JWTKit
import Logging
import Testing

@Suite("Signed-token authentication at the handshake", .timeLimit(.minutes(2)))
struct JWTAuthenticationTests {
    static let privateKeyPEM = """
-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDiWcNrTMfB81R8
jqbgfky2Yki80egTUO+Z/ybIvDuoW8m5ieb2PMsD8WVlvJn7gOJjMBaC0FDd7YTr
aBiXMBny5Y5Ax6Yaxuap6JbOumS8KqHhxn9peTLrkbUA8zMqXdXXMJ2j0KNpoV4t
+bvGMMJp2tWLbPTmPiyKT6D/eeKZVwMCAfFDFK0kN920Qc1S1GouKETTGSjHfJtk
CLyA6PFvKBKiWOplpS9cVK4lv8N62t9HvG3MI3hnLx0vy/YbzZUzyfLFcUBKTjHr
c3l3+Ak+on6Ojqu5LFyhCbuMsDj3cAzdqpHsrE90dd8Npg67aq0TLrw3QJwGyr5o
3XUDVngHAgMBAAECggEAWodjONGTHVe4ZT7asHPjM5jYlahwZPVcdx+NAAEE7T+U
zT/B358N5WxRTSDjByuTn+8WOcieZzx9induSl2jKzozrGYNYa1GiRMs6c6zxmxY
pYex4tnmC0CR/6jFQH8aLUBU9DVYfkFbfRDiUJCk2Rh8ixCPXFzmjITvk+5IOmJJ
k7HAOAe5AtqAl6blMKtbKsc9s/4Vxk4EwpqHijc7KpDvmm6gbSVoVNygWySBfkIy
3+4mmfO7ipxOBpbiCI3l9EzYBdCLXcES8V8wHypQ6DiJk0xmDURJ2ds+ZE66MbcC
SQzjEXUFpNIxV8QUW3oELFDWcslqTSNXMxshgsw1nQKBgQDx8fnjZ3eGoO00iDxG
CTWbH4MhV9lG6U3DbXFStndjSibiKNsCXQ+5Dy8TVjTSHpQJcMIRFDCUkJNDarx0
rtyafeRjnXMBod+onga9+GPkBjgU8EIcWqGsa+xuCzbd6/6asQ2tER8PAPWma/Vz
fBjas4YENtrhg2OAtiWEIRBnNQKBgQDvf+Bm8686a+o3E2ectdDB4W+WguxhFc+v
mySZbi4DxtfEYMKhlWgdkrXuGnqpD1FtDnAeeW3I1bx12j7VdXpkVKRPQEmD1mT8
yhSvhVs27VMsuDwcBxyci7IEmMf3xEasNlu9N1GgAplur5LxmV/wJiwQT5ZP60BT
wHoBFmk9ywKBgQCNhcx0/23EG1gFNXeERBjOL0Wl+FwJBalOGjOCfWcidhp+igVp
wYPT7RTNS8zD580SJJnwIY41KMhrVAD+g9ZYrDEvL8c4+jX4zM8Gyker9xNQ9CTH
ryAI2mxHBlpGv6eDVvO3+17eiOIoQdgmgD2NmBtZVbj81r0aafFR84FDzQKBgQCg
VmkCI5QlNYf41UnhdStMEUOmbQIZQQPomaHYAhZWOvHKq8jBaofofIbF3/5MXk/y
Bd9z13FzKfxgnfrA50RIFQ5nbC+LTqYPQq60jz/wttOfNbwwO2ahOzizsSD2s/Vo
Z3/lXjqMOBFGM87ZZgf/e162kMGdwW4wY8SKI9nTHwKBgGBpV6VK0OPqDFZVuTIh
vUcgDmzg43qC2tIiNCLMJCMZv/0o+qzHt1oOUACYiMc3jPGPFv5WOLvI1Em06eX/
ptZf9PdBK/i8SFWnVAaXzmN2aZwjyn8Yo94LcUyjeTOiho+oDHRbOGSRchiUbvA1
v2JhsObjmPu97RmiY2w1mm/l
-----END PRIVATE KEY-----
"""
    static let publicKeyPEM = """
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA4lnDa0zHwfNUfI6m4H5M
tmJIvNHoE1Dvmf8myLw7qFvJuYnm9jzLA/FlZbyZ+4DiYzAWgtBQ3e2E62gYlzAZ
8uWOQMemGsbmqeiWzrpkvCqh4cZ/aXky65G1APMzKl3V1zCdo9CjaaFeLfm7xjDC
adrVi2z05j4sik+g/3nimVcDAgHxQxStJDfdtEHNUtRqLihE0xkox3ybZAi8gOjx
bygSoljqZaUvXFSuJb/DetrfR7xtzCN4Zy8dL8v2G82VM8nyxXFASk4x63N5d/gJ
PqJ+jo6ruSxcoQm7jLA493AM3aqR7KxPdHXfDaYOu2qtEy68N0CcBsq+aN11A1Z4
BwIDAQAB
-----END PUBLIC KEY-----
"""

    /// Runs `body` against a node whose route authenticates with `authenticator`.
    private func withJWTNode(
        _ authenticator: JWTAuthenticator,
        _ body: @escaping @Sendable (ClusterNode, Int) async throws -> Void
    ) async throws {
        try await withRedisServer { redis in
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            let node = try ClusterNode(
                configuration: .init(redisURL: .init(redis.url), serverID: "a", namespace: "test",
                                     webSocket: .init(keepalive: .disabled, closeTimeout: .seconds(1))),
                logger: logger)
            node.webSocket("/ws", authenticate: authenticator.authenticate) { socket in
                try? await socket.socket.send(.text("ready \(socket.fd) \(socket.uid ?? "-")"))
            }
            let harness = ServiceGroupHarness(node)
            try await harness.start()
            let port = try await node.waitUntilListening()
            try await body(node, port)
            try await harness.shutdownGracefully()
        }
    }

    private func status(port: Int, path: String = "/ws", headers: [String] = []) async throws -> (Int, RawClient) {
        let client = try await RawClient.connect(port: port)
        try await client.send(Wire.handshake(path: path, extra: headers))
        return (try await client.readHTTPResponse().status, client)
    }

    @Test func hs256TokensBindTheirSubjectAndBadOnesGet401() async throws {
        let secret = "a-test-secret-of-at-least-32-bytes!"
        await #expect(throws: JWTAuthenticationError.self) { try await JWTAuthenticator.hs256(secret: "short") }
        let authenticator = try await JWTAuthenticator.hs256(secret: secret)
        let signer = JWTKeyCollection()
        await signer.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        let wrongSigner = JWTKeyCollection()
        await wrongSigner.add(hmac: HMACKey(from: "another-secret-also-32-bytes-long!!"), digestAlgorithm: .sha256)
        let valid = try await signer.sign(ClusterWSClaims(sub: "alice", exp: Date().addingTimeInterval(60)))
        let expired = try await signer.sign(ClusterWSClaims(sub: "alice", exp: Date().addingTimeInterval(-60)))
        let early = try await signer.sign(ClusterWSClaims(sub: "alice", exp: Date().addingTimeInterval(120),
                                                          nbf: Date().addingTimeInterval(60)))
        let forged = try await wrongSigner.sign(ClusterWSClaims(sub: "alice", exp: Date().addingTimeInterval(60)))
        try await withJWTNode(authenticator) { node, port in
            let (ok, client) = try await status(port: port, headers: ["Authorization: Bearer \(valid)"])
            #expect(ok == 101)
            let ready = try await client.readFrame().text
            #expect(ready.hasSuffix(" alice"))
            #expect(try await node.relations.isOnline(uid: "alice"))
            let (viaQuery, _) = try await status(port: port, path: "/ws?token=\(valid)")
            #expect(viaQuery == 101)
            for bad in ["Authorization: Bearer \(expired)", "Authorization: Bearer \(early)",
                        "Authorization: Bearer \(forged)", "Authorization: Bearer not.a.jwt", "X-Nothing: 1"] {
                let (code, _) = try await status(port: port, headers: [bad])
                #expect(code == 401, "\(bad)")
            }
            // Refused handshakes never reached the registry: only the two good connections are bound.
            #expect(try await node.relations.findUserFDs(uid: "alice").count == 2)
        }
    }

    @Test func rs256TokensAreVerifiedWithThePublicKey() async throws {
        let authenticator = try await JWTAuthenticator.rs256(publicKeyPEM: Self.publicKeyPEM)
        let signer = JWTKeyCollection()
        await signer.add(rsa: try Insecure.RSA.PrivateKey(pem: Self.privateKeyPEM), digestAlgorithm: .sha256)
        let hmacSigner = JWTKeyCollection()
        await hmacSigner.add(hmac: HMACKey(from: "a-guessed-secret-that-is-32-bytes-long"), digestAlgorithm: .sha256)
        let valid = try await signer.sign(ClusterWSClaims(sub: "bob", exp: Date().addingTimeInterval(60)))
        let wrongAlgorithm = try await hmacSigner.sign(ClusterWSClaims(sub: "bob", exp: Date().addingTimeInterval(60)))
        try await withJWTNode(authenticator) { node, port in
            let (ok, client) = try await status(port: port, headers: ["Authorization: Bearer \(valid)"])
            #expect(ok == 101)
            #expect(try await client.readFrame().text.hasSuffix(" bob"))
            let (refused, _) = try await status(port: port, headers: ["Authorization: Bearer \(wrongAlgorithm)"])
            #expect(refused == 401)
        }
    }
}
