import ClusterWS
import Foundation
import NIOCore

/// A `POST /publish` body, checked: exactly one target, exactly one payload.
struct PublishRequest {
    var target: PublishTarget
    var message: WebSocketMessage
    var idempotencyKey: String?

    init(json: Data) throws {
        guard let object = try? JSONSerialization.jsonObject(with: json) as? [String: Any] else {
            throw PublishAPI.APIError(400, "the body must be a JSON object")
        }
        var targets: [PublishTarget] = []
        if let uid = object["uid"] {
            guard let uid = uid as? String else { throw PublishAPI.APIError(400, "uid must be a string") }
            targets.append(.user(uid))
        }
        if let uids = object["uids"] {
            guard let uids = uids as? [String] else { throw PublishAPI.APIError(400, "uids must be an array of strings") }
            targets.append(.users(uids))
        }
        if let fd = object["fd"] {
            guard let text = fd as? String, let fd = DistributedFD(text) else {
                throw PublishAPI.APIError(400, "fd must be a connection id such as node-1#…#7")
            }
            targets.append(.connection(fd))
        }
        if let room = object["room"] {
            guard let room = room as? String else { throw PublishAPI.APIError(400, "room must be a string") }
            targets.append(.room(room))
        }
        if let all = object["all"] {
            guard let all = all as? Bool, all else { throw PublishAPI.APIError(400, "all must be true when given") }
            targets.append(.everyone)
        }
        guard targets.count == 1, let target = targets.first else {
            throw PublishAPI.APIError(400, "give exactly one of uid, uids, fd, room, all")
        }
        let text = object["text"]
        let binary = object["binary"]
        switch (text, binary) {
        case (let text as String, nil):
            message = WebSocketMessage(kind: .text, data: ByteBuffer(string: text))
        case (nil, let base64 as String):
            guard let bytes = Data(base64Encoded: base64) else { throw PublishAPI.APIError(400, "binary must be base64") }
            message = WebSocketMessage(kind: .binary, data: ByteBuffer(bytes: bytes))
        default:
            throw PublishAPI.APIError(400, "give exactly one of text (a string) or binary (base64)")
        }
        if let key = object["idempotency_key"] {
            guard let key = key as? String else { throw PublishAPI.APIError(400, "idempotency_key must be a string") }
            idempotencyKey = key
        }
        self.target = target
    }
}
