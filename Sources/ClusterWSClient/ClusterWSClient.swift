public import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// A client of a ClusterWS cluster that speaks `clusterws.v1`: messages come
/// with their stream positions, and after any disconnect the client
/// reconnects by itself (capped exponential backoff with jitter, to the next
/// URL of its list: another node) and resumes every stream from the last
/// position it saw — the node replays what was missed, or says why it cannot.
///
/// ```swift
/// let client = ClusterWSClient(urls: ["ws://node-1:8080/ws?token=…", "ws://node-2:8080/ws?token=…"])
/// Task { await client.run() }
/// for await message in client.messages {
///     print(message.text ?? "", message.offset ?? 0)
/// }
/// ```
///
/// Iterate ``messages`` and ``states`` from one task each. ``messages`` is
/// unbuffered in count (a message is never dropped by the client); a slow
/// consumer makes it grow.
public final class ClusterWSClient: Sendable {
    /// An application message.
    public struct Message: Sendable, Equatable {
        /// Text, or `nil` for a binary message.
        public var text: String?
        /// The payload bytes (UTF-8 of `text` for a text message).
        public var data: [UInt8]
        /// `user:<uid>` or `room:<name>`, for a message with a history position.
        public var stream: String?
        /// Its position in `stream`.
        public var position: Position?

        /// The offset in its stream, if it has one.
        public var offset: UInt64? { position?.offset }
    }

    /// Where a message is in its stream: offset and epoch.
    public struct Position: Sendable, Hashable, CustomStringConvertible {
        public var offset: UInt64
        public var epoch: String

        public init(offset: UInt64, epoch: String) {
            self.offset = offset
            self.epoch = epoch
        }

        public var description: String { "\(offset)@\(epoch)" }
    }

    /// The outcome of resuming a stream after a (re)connect.
    public struct Recovery: Sendable, Equatable {
        /// The stream.
        public var stream: String
        /// `true`: the `replayed` missed messages follow in ``messages``.
        /// `false`: they cannot be had (`reason`); reload the application's state.
        public var recovered: Bool
        /// How many missed messages follow.
        public var replayed: Int
        /// Why not (`trimmed`, `expired`, `epoch_changed`, `invalid_offset`, `unavailable`).
        public var reason: String?
        /// Where the stream is now; the client goes on from here.
        public var position: Position
    }

    /// What the connection is doing.
    public enum State: Sendable, Equatable {
        /// Opening a connection to `url`; `attempt` counts failures since the last success.
        case connecting(url: String, attempt: Int)
        /// Connected to `url`.
        case connected(url: String)
        /// A stream was resumed (or could not be) after a (re)connect.
        case recovery(Recovery)
        /// The connection ended (`reason`); the client reconnects.
        case disconnected(reason: String)
        /// ``close()`` was called; ``run()`` returns.
        case closed
    }

    /// Reconnect pacing.
    public struct Backoff: Sendable {
        /// The first delay.
        public var initial: Duration
        /// The longest delay.
        public var maximum: Duration
        /// Each delay is multiplied by a random factor in `1 - jitter … 1`.
        public var jitter: Double

        public init(initial: Duration = .milliseconds(250), maximum: Duration = .seconds(10), jitter: Double = 0.5) {
            self.initial = initial
            self.maximum = maximum
            self.jitter = min(max(jitter, 0), 1)
        }

        /// The delay before attempt `attempt` (0: the first retry).
        public func delay(attempt: Int) -> Duration {
            let base = initial * Double(1 << min(attempt, 20))
            let capped = min(base, maximum)
            return capped * (1 - Double.random(in: 0...jitter))
        }
    }

    /// Every application message, in order, across reconnects.
    public let messages: AsyncStream<Message>
    /// Connection states and recoveries.
    public let states: AsyncStream<State>

    let urls: [String]
    let backoff: Backoff
    let maxFrameSize: Int
    private let messageSink: AsyncStream<Message>.Continuation
    private let stateSink: AsyncStream<State>.Continuation
    private struct Shared {
        var positions: [String: Position] = [:]
        var connection: WebSocketConnection?
        var closed = false
        var wake: CheckedContinuation<Void, Never>?
    }
    private let shared = Mutex(Shared())

    /// - Parameters:
    ///   - urls: `ws://host:port/path?query` of the nodes (or of one load
    ///     balancer); each reconnect goes to the next one.
    ///   - positions: streams to resume from the start (saved by an earlier run).
    public init(urls: [String], positions: [String: Position] = [:], backoff: Backoff = Backoff(),
                maxFrameSize: Int = 16 << 20) {
        self.urls = urls
        self.backoff = backoff
        self.maxFrameSize = maxFrameSize
        (messages, messageSink) = AsyncStream.makeStream()
        (states, stateSink) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1_000))
        shared.withLock { $0.positions = positions }
    }

    /// The last position seen per stream (save it to resume in a later run).
    public var positions: [String: Position] { shared.withLock { $0.positions } }

    /// Connects, and reconnects after every disconnect, until ``close()``.
    public func run() async {
        var failures = 0
        var turn = 0
        while !shared.withLock({ $0.closed }), !urls.isEmpty {
            let url = urls[turn % urls.count]
            turn += 1
            stateSink.yield(.connecting(url: url, attempt: failures))
            do {
                let stateSink = self.stateSink
                let connection = try await WebSocketConnection.open(
                    url: resumeURL(url), subprotocol: "clusterws.v1", maxFrameSize: maxFrameSize,
                    // Told before any of the connection's messages (a recovery can come in the 101's read).
                    onOpen: { stateSink.yield(.connected(url: url)) }
                ) { [weak self] frame in
                    self?.receive(frame)
                }
                let stillOpen = shared.withLock { shared -> Bool in
                    guard !shared.closed else { return false }
                    shared.connection = connection
                    return true
                }
                guard stillOpen else {
                    connection.close()
                    break
                }
                failures = 0
                let reason = await connection.closed()
                shared.withLock { $0.connection = nil }
                stateSink.yield(.disconnected(reason: reason))
            } catch {
                failures += 1
                stateSink.yield(.disconnected(reason: "\(error)"))
            }
            if shared.withLock({ $0.closed }) { break }
            await sleep(backoff.delay(attempt: max(failures - 1, 0)))
        }
        stateSink.yield(.closed)
        stateSink.finish()
        messageSink.finish()
    }

    /// Sends a text message on the current connection.
    /// - Throws: ``ClientError/notConnected`` between connections.
    public func send(_ text: String) throws {
        guard let connection = shared.withLock({ $0.connection }) else { throw ClientError.notConnected }
        connection.send(text: text)
    }

    /// Sends a binary message on the current connection.
    public func send(binary bytes: [UInt8]) throws {
        guard let connection = shared.withLock({ $0.connection }) else { throw ClientError.notConnected }
        connection.send(binary: bytes)
    }

    /// Closes the connection and stops reconnecting; ``run()`` returns.
    public func close() {
        let (connection, wake) = shared.withLock { shared in
            shared.closed = true
            defer { shared.wake = nil }
            return (shared.connection, shared.wake)
        }
        connection?.close()
        wake?.resume()
    }

    /// Cuts the current connection without a close handshake, as a network
    /// failure would (for tests and demos); the client reconnects.
    public func dropConnection() {
        shared.withLock { $0.connection }?.abort()
    }

    // MARK: Internals

    private func sleep(_ delay: Duration) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let closed = shared.withLock { shared -> Bool in
                if shared.closed { return true }
                shared.wake = continuation
                return false
            }
            if closed { return continuation.resume() }
            Task {
                try? await Task.sleep(for: delay)
                let waiting = shared.withLock { shared -> CheckedContinuation<Void, Never>? in
                    defer { shared.wake = nil }
                    return shared.wake
                }
                waiting?.resume()
            }
        }
    }

    /// `url` with one `clusterws-position` parameter per known stream.
    func resumeURL(_ url: String) -> String {
        let positions = shared.withLock { $0.positions }
        guard !positions.isEmpty else { return url }
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-_~")
        let parameters = positions.sorted { $0.key < $1.key }.map { stream, position in
            let value = "\(position.offset).\(position.epoch).\(stream)"
            return "clusterws-position=" + (value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value)
        }
        return url + (url.contains("?") ? "&" : "?") + parameters.joined(separator: "&")
    }

    /// One text frame of the protocol.
    private func receive(_ frame: String) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(frame.utf8)) as? [String: Any],
              let type = object["type"] as? String else { return }
        let stream = object["stream"] as? String
        var position: Position?
        if let offset = (object["offset"] as? NSNumber)?.uint64Value, let epoch = object["epoch"] as? String {
            position = Position(offset: offset, epoch: epoch)
        }
        switch type {
        case "message":
            let data = object["data"] as? String ?? ""
            var message: Message
            if object["binary"] as? Bool == true {
                message = Message(text: nil, data: Array(Data(base64Encoded: data) ?? Data()))
            } else {
                message = Message(text: data, data: Array(data.utf8))
            }
            if let stream, let position {
                // Already processed (never expected: the server sends each offset once).
                let fresh = shared.withLock { shared -> Bool in
                    if let last = shared.positions[stream], last.epoch == position.epoch, position.offset <= last.offset {
                        return false
                    }
                    shared.positions[stream] = position
                    return true
                }
                guard fresh else { return }
                message.stream = stream
                message.position = position
            }
            messageSink.yield(message)
        case "position":
            if let stream, let position { shared.withLock { $0.positions[stream] = position } }
        case "recovered":
            guard let stream, let position else { return }
            let recovered = object["recovered"] as? Bool ?? false
            // Not recovered: go on from where the stream is now. Recovered: the replayed
            // messages that follow move the position on, one by one.
            if !recovered { shared.withLock { $0.positions[stream] = position } }
            stateSink.yield(.recovery(Recovery(stream: stream, recovered: recovered,
                                               replayed: (object["replayed"] as? NSNumber)?.intValue ?? 0,
                                               reason: object["reason"] as? String, position: position)))
        default:
            break
        }
    }
}

/// Errors of ``ClusterWSClient``.
public enum ClientError: Error, Sendable, Equatable {
    /// No connection is open right now (the client is reconnecting).
    case notConnected
    /// The URL is not `ws://host[:port]/path`.
    case invalidURL(String)
    /// The server did not accept the WebSocket upgrade or the `clusterws.v1` subprotocol.
    case upgradeRefused(String)
}
