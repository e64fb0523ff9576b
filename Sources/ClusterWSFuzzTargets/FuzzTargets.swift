import ClusterWS
#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOWebSocket

/// The fuzz targets: each takes arbitrary bytes, drives one decoder of
/// untrusted input the way production does, and checks a property. A trap,
/// a sanitizer report or a failed property is a finding; everything else
/// (a typed error, a close code, a 4xx) is the expected answer to garbage.
///
/// Run by libFuzzer (`make fuzz`: the `clusterws-fuzz` executable built with
/// `-sanitize=fuzzer`), and replayed over the committed corpus by the test
/// suite (`FuzzCorpusTests`), so every input that ever found a bug stays a
/// regression test.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// ``Envelope`` decoding (bytes from the cluster's Redis channels and streams).
    case envelope
    /// The HTTP request head: our head limit, NIO's decoder, our handshake validator.
    case handshake
    /// WebSocket frames into the connection's channel handler (NIO's frame decoder + ours).
    case frames
    /// Redis replies: hiredis's reader, the command handler, pub/sub pushes, stream entries.
    case resp
    /// ``DistributedFD``'s string form.
    case distributedFD = "fd"

    /// Runs one input. Returns normally for every input that is handled; a
    /// broken property traps on purpose (that is how a fuzzer reports it).
    public func run(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .envelope: Self.envelope(bytes)
        case .handshake: Self.handshake(bytes)
        case .frames: Self.frames(bytes)
        case .resp: Self.resp(bytes)
        case .distributedFD: Self.distributedFD(bytes)
        }
    }

    /// A broken property: stop here, so the fuzzer keeps the input.
    static func finding(_ what: @autoclosure () -> String) -> Never {
        print("FUZZ FINDING: \(what())")
        abort()
    }
}
