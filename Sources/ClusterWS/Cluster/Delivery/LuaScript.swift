/// A Lua script run by its SHA-1 (`EVALSHA`); when Redis's script cache does
/// not have it (`NOSCRIPT`: first use, a restart, `SCRIPT FLUSH`) it is run
/// once with its source (`EVAL`), which also puts it back in the cache.
struct LuaScript: Sendable {
    let source: String
    /// The SHA-1 in lowercase hex, as `SCRIPT LOAD` answers it.
    let sha1: String

    init(_ source: String) {
        self.source = source
        self.sha1 = SHA1.hex(source)
    }

    /// `EVALSHA sha numkeys keys… arguments…`, or `EVAL source …` with `bySource`.
    /// On a Redis Cluster the command goes to the first key's master.
    func command(keys: [String] = [], _ arguments: [RedisArgument], bySource: Bool = false) -> RedisCommand {
        RedisCommand(bySource ? "EVAL" : "EVALSHA",
                     arguments: [.string(bySource ? source : sha1), .integer(keys.count)] + keys.map { .string($0) } + arguments)
    }

    /// Whether `error` says the script is not in Redis's cache.
    static func isMissing(_ error: any Error) -> Bool {
        if case RedisError.reply(let message) = error { return message.hasPrefix("NOSCRIPT") }
        return false
    }
}

extension RedisCommands {
    /// Runs `script` by SHA, and by source when Redis's cache does not have it.
    func evaluate(_ script: LuaScript, keys: [String] = [], _ arguments: [RedisArgument]) async throws -> RedisValue {
        do {
            return try await send(script.command(keys: keys, arguments))
        } catch where LuaScript.isMissing(error) {
            return try await send(script.command(keys: keys, arguments, bySource: true))
        }
    }

    /// Posts `script` by SHA; when Redis's cache does not have it, posts it again by source
    /// (which loads it, so the SHA works after it). Other failures go to `onFailure`.
    func post(_ script: LuaScript, keys: [String] = [], _ arguments: [RedisArgument],
              onFailure: @escaping @Sendable (RedisError) -> Void) {
        post(script.command(keys: keys, arguments)) { error in
            guard LuaScript.isMissing(error) else { return onFailure(error) }
            post(script.command(keys: keys, arguments, bySource: true), onFailure: onFailure)
        }
    }
}
