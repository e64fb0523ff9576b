import ClusterWSFuzzTargets
import Testing

/// Every input of the committed fuzz corpus, and every reproducer of a past
/// finding, through its fuzz target on every test run: a decoder change that
/// brings back an old crash fails here, without a fuzzing build.
@Suite("Fuzz corpus and regressions replay cleanly", .timeLimit(.minutes(2)))
struct FuzzCorpusTests {
    static let root: String = {
        var path = #filePath
        for _ in 0..<4 { path = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)]) }
        return path + "/Fuzz"
    }()

    @Test(arguments: FuzzTarget.allCases)
    func everyCorpusInputIsHandled(target: FuzzTarget) {
        let files = ["Corpus", "Regressions"].flatMap { FuzzCorpus.files(at: "\(Self.root)/\($0)/\(target.rawValue)") }
        #expect(files.count >= 5, "the seed corpus of \(target.rawValue) is missing (run scripts/fuzz-seeds.py)")
        for file in files {
            FuzzCorpus.read(file).withUnsafeBytes { target.run($0) }
        }
    }
}
