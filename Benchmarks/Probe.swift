import Foundation
import Histogram
import NIOCore
import Synchronization

/// The payload every cluster-benchmark message carries, so each receiving
/// client can tell when it was sent, which message it is and whom it was for:
///
///     [send time, CLOCK_MONOTONIC ns: u64][id: u64][uid length: u8][uid][padding up to `size`]
///
/// CLOCK_MONOTONIC is one clock for every process of the machine, so senders,
/// nodes and receivers in separate processes share it.
enum Probe {
    static let headerSize = 17

    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    /// Writes a probe payload of at least `size` bytes.
    static func write(stamp: UInt64, id: UInt64, uid: String, size: Int, into buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        buffer.writeInteger(stamp)
        buffer.writeInteger(id)
        buffer.writeInteger(UInt8(uid.utf8.count))
        buffer.writeString(uid)
        let written = buffer.writerIndex - start
        if written < size { buffer.writeRepeatingByte(0x61, count: size - written) }
    }

    static func payload(stamp: UInt64 = now(), id: UInt64, uid: String = "", size: Int) -> ByteBuffer {
        var buffer = ByteBuffer()
        write(stamp: stamp, id: id, uid: uid, size: size, into: &buffer)
        return buffer
    }

    /// The uid a probe payload is addressed to, or `nil` if it is not a probe.
    static func target(of payload: ByteBuffer) -> String? {
        guard let length = payload.getInteger(at: payload.readerIndex + 16, as: UInt8.self), length > 0 else { return nil }
        return payload.getString(at: payload.readerIndex + headerSize, length: Int(length))
    }

    /// The binary frame header a client sends before a `length`-byte payload:
    /// FIN + binary, masked with the all-zero key (so the payload goes as is).
    static func writeClientFrameHeader(length: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(0x82))
        if length < 126 {
            buffer.writeInteger(UInt8(0x80 | length))
        } else {
            buffer.writeInteger(UInt8(0x80 | 126))
            buffer.writeInteger(UInt16(length))
        }
        buffer.writeInteger(UInt32(0))
    }
}

/// What one load process's receiving clients saw in a tracked run: every
/// probe is counted, its latency (arrival − send time) goes into an HDR
/// histogram, and in unicast runs every id is checked off once, so loss,
/// duplicates and misrouting are counted rather than assumed away.
final class ProbeRecorder: Sendable {
    private struct State {
        var expected = 0
        var count = 0
        /// One bit per id in unicast runs (empty in broadcast runs, where every id arrives N times).
        var seen: [UInt64] = []
        var distinct = 0
        var duplicates = 0
        var misrouted = 0
        var outOfRange = 0
        var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000_000, numberOfSignificantValueDigits: .three)
        var waiter: CheckedContinuation<Void, Never>?
        var complete: Bool { seen.isEmpty ? count >= expected : distinct >= expected }
    }

    private let state = Mutex(State())

    /// Starts a run expecting `expected` probes; `unicast` checks each id off once.
    func reset(expected: Int, unicast: Bool) {
        state.withLock { state in
            state = State()
            state.expected = expected
            if unicast { state.seen = Array(repeating: 0, count: (expected + 63) / 64) }
        }
    }

    /// Records `frames` probes a client parsed in one read: (id, latency ns, addressed to it).
    func record(_ frames: [(id: UInt64, latency: UInt64, addressedHere: Bool)]) {
        guard !frames.isEmpty else { return }
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            for frame in frames {
                state.count += 1
                _ = state.latency.record(frame.latency)
                if !state.seen.isEmpty {
                    if !frame.addressedHere { state.misrouted += 1 }
                    let id = Int(frame.id)
                    guard id < state.expected else { state.outOfRange += 1; continue }
                    let (word, bit) = (id / 64, UInt64(1) << UInt64(id % 64))
                    if state.seen[word] & bit != 0 { state.duplicates += 1 } else { state.seen[word] |= bit; state.distinct += 1 }
                }
            }
            guard state.complete, let waiter = state.waiter else { return nil }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Waits until every expected probe arrived (`true`) or `limit` passed (`false`).
    func completed(within limit: Duration) async -> Bool {
        await waitUntilDone(within: limit, park: { continuation in
            self.state.withLock { state -> Bool in
                if state.complete { return true }
                state.waiter = continuation
                return false
            }
        }, unpark: {
            let waiter = self.state.withLock { state in defer { state.waiter = nil }; return state.waiter }
            waiter?.resume()
        })
    }

    /// One line of `key=value` figures; latencies in microseconds.
    func summary() -> String {
        state.withLock { state in
            let h = state.latency
            func us(_ percentile: Double) -> String { String(h.valueAtPercentile(percentile) / 1_000) }
            let distinct = state.seen.isEmpty ? state.count : state.distinct
            return "count=\(state.count) distinct=\(distinct) duplicates=\(state.duplicates) misrouted=\(state.misrouted)"
                + " outofrange=\(state.outOfRange) p50=\(us(50)) p90=\(us(90)) p99=\(us(99)) p999=\(us(99.9))"
                + " max=\(h.max / 1_000)"
        }
    }
}

/// Parses `key=value` words of a summary line.
func figures(_ line: String) -> [String: Int] {
    var result: [String: Int] = [:]
    for word in line.split(separator: " ") {
        let parts = word.split(separator: "=", maxSplits: 1)
        if parts.count == 2, let value = Int(parts[1]) { result[String(parts[0])] = value }
    }
    return result
}
