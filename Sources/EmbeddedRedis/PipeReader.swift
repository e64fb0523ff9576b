public import Foundation
import Glibc

/// Blocking reads of a pipe by file descriptor, retried when a signal
/// interrupts them (`EINTR`). Foundation's `FileHandle.availableData` and
/// `readDataToEndOfFile()` trap on an interrupted read, which took a whole
/// test process down once. Call these on a thread of your own, never on
/// Swift's cooperative pool.
public enum PipeReader {
    /// Calls `body` with each chunk read from `handle` until end of file (or an error).
    public static func forEachChunk(of handle: FileHandle, _ body: (ArraySlice<UInt8>) -> Void) {
        let descriptor = handle.fileDescriptor
        var chunk = [UInt8](repeating: 0, count: 4_096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            if count <= 0 { return }
            body(chunk[0..<count])
        }
    }

    /// Everything `handle` yields until end of file, at most `limit` bytes kept (the last ones).
    public static func readToEnd(_ handle: FileHandle, limit: Int = 16 << 20) -> [UInt8] {
        var all: [UInt8] = []
        forEachChunk(of: handle) { chunk in
            all.append(contentsOf: chunk)
            if all.count > limit { all.removeFirst(all.count - limit) }
        }
        return all
    }
}
