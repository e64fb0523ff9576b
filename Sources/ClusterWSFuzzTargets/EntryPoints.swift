#if canImport(Glibc)
import Glibc
#endif

/// The target a libFuzzer run drives, chosen once by `CLUSTERWS_FUZZ_TARGET`.
nonisolated(unsafe) private var selected: FuzzTarget = .envelope

@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    let name = getenv("CLUSTERWS_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
        writeError("set CLUSTERWS_FUZZ_TARGET to one of: \(names)\n")
        exit(2)
    }
    selected = target
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selected.run(UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size))
    return 0
}

/// Without libFuzzer: `clusterws-fuzz <target> <file or directory>…` replays
/// inputs through a target (a corpus, or a crash reproducer).
@_cdecl("clusterws_fuzz_replay")
public func fuzzReplay(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    let arguments = (0..<Int(argc)).compactMap { argv?[$0].map { String(cString: $0) } }
    guard arguments.count >= 3, let target = FuzzTarget(rawValue: arguments[1]) else {
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")
        writeError("usage: clusterws-fuzz \(names) <file or directory>...\n"
                   + "(built with -sanitize=fuzzer it is libFuzzer: CLUSTERWS_FUZZ_TARGET=<target> clusterws-fuzz <corpus>)\n")
        return 2
    }
    var count = 0
    for path in arguments.dropFirst(2) {
        for file in FuzzCorpus.files(at: path) {
            FuzzCorpus.read(file).withUnsafeBytes { target.run($0) }
            count += 1
        }
    }
    print("replayed \(count) inputs through \(target.rawValue)")
    return 0
}

/// Writes to standard error (fd 2).
func writeError(_ text: String) {
    var bytes = Array(text.utf8)
    _ = write(2, &bytes, bytes.count)
}
