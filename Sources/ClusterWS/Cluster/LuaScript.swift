/// A Lua script run by its SHA-1 (`EVALSHA`); when Redis's script cache does
/// not have it (`NOSCRIPT`: first use, a restart, `SCRIPT FLUSH`) it is run
/// once with its source (`EVAL`), which also puts it back in the cache.
struct LuaScript: Sendable {
    let source: String
    /// The SHA-1 in lowercase hex, as `SCRIPT LOAD` answers it.
    let sha1: String

    init(_ source: String) {
        self.source = source
        self.sha1 = WebSocketAccept.sha1(Array(source.utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return hex.count == 1 ? "0" + hex : hex
        }.joined()
    }

    /// `EVALSHA sha 0 arguments…`, or `EVAL source 0 arguments…` with `bySource`.
    func command(_ arguments: [RedisArgument], bySource: Bool = false) -> RedisCommand {
        RedisCommand(bySource ? "EVAL" : "EVALSHA",
                     arguments: [.string(bySource ? source : sha1), 0] + arguments)
    }

    /// Whether `error` says the script is not in Redis's cache.
    static func isMissing(_ error: any Error) -> Bool {
        if case RedisError.reply(let message) = error { return message.hasPrefix("NOSCRIPT") }
        return false
    }
}

extension ClusterNode {
    /// Runs `script` with `arguments` (no keys: the scripts derive their keys
    /// from the namespace, so they run on one Redis server only).
    func evaluate(_ script: LuaScript, _ arguments: [RedisArgument]) async throws -> RedisValue {
        do {
            return try await redis.send(script.command(arguments))
        } catch where LuaScript.isMissing(error) {
            return try await redis.send(script.command(arguments, bySource: true))
        }
    }
}
