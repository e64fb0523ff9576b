import Foundation

/// What a process has spent so far: CPU time (user + system, every thread),
/// context switches (voluntary + involuntary, every thread) and, when the
/// malloc interposer is preloaded, allocation calls. A benchmark reads it
/// from a server process before and after a run (the `usage` line command)
/// and divides the difference by the messages the run relayed.
struct ProcessUsage: Sendable {
    var cpuMicroseconds: Int
    var contextSwitches: Int
    /// `nil` when ordo-one's malloc interposer is not loaded in the process.
    var allocations: Int?

    /// This process's usage (`getrusage(RUSAGE_SELF)` sums all its threads on Linux).
    static func current() -> ProcessUsage {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        let cpu = (Int(usage.ru_utime.tv_sec) + Int(usage.ru_stime.tv_sec)) * 1_000_000
            + Int(usage.ru_utime.tv_usec) + Int(usage.ru_stime.tv_usec)
        return ProcessUsage(cpuMicroseconds: cpu, contextSwitches: usage.ru_nvcsw + usage.ru_nivcsw,
                            allocations: MallocCounter.allocations())
    }

    /// `usage <cpu µs> <context switches> <allocations or -1>`.
    var line: String { "usage \(cpuMicroseconds) \(contextSwitches) \(allocations ?? -1)" }

    init(cpuMicroseconds: Int, contextSwitches: Int, allocations: Int?) {
        self.cpuMicroseconds = cpuMicroseconds
        self.contextSwitches = contextSwitches
        self.allocations = allocations
    }

    init(line: String) throws {
        let words = line.split(separator: " ")
        guard words.count == 4, words[0] == "usage", let cpu = Int(words[1]), let switches = Int(words[2]),
              let allocations = Int(words[3]) else { throw BenchmarkError("not a usage line: \(line)") }
        self.init(cpuMicroseconds: cpu, contextSwitches: switches, allocations: allocations < 0 ? nil : allocations)
    }

    /// Asks a server process for its usage.
    static func of(_ process: ChildProcess) async throws -> ProcessUsage {
        try ProcessUsage(line: try await process.ask("usage"))
    }

    static func - (after: ProcessUsage, before: ProcessUsage) -> ProcessUsage {
        ProcessUsage(cpuMicroseconds: after.cpuMicroseconds - before.cpuMicroseconds,
                     contextSwitches: after.contextSwitches - before.contextSwitches,
                     allocations: after.allocations.flatMap { a in before.allocations.map { a - $0 } })
    }

    static func + (lhs: ProcessUsage, rhs: ProcessUsage) -> ProcessUsage {
        ProcessUsage(cpuMicroseconds: lhs.cpuMicroseconds + rhs.cpuMicroseconds,
                     contextSwitches: lhs.contextSwitches + rhs.contextSwitches,
                     allocations: lhs.allocations.flatMap { a in rhs.allocations.map { a + $0 } })
    }
}

/// The usage of the two nodes of a relay over one run, per relayed message.
struct RelayCost {
    var a: ProcessUsage
    var b: ProcessUsage
    var messages: Int

    private var both: ProcessUsage { a + b }
    private func per(_ value: Int) -> Double { messages > 0 ? Double(value) / Double(messages) : .nan }

    /// Node CPU µs per message, both nodes, with each node's share: `11.7 (6.2 + 5.5)`.
    var cpu: String {
        "\(per(both.cpuMicroseconds).fixed(2)) (\(per(a.cpuMicroseconds).fixed(1)) + \(per(b.cpuMicroseconds).fixed(1)))"
    }

    /// Allocation calls per message, both nodes; "—" without the interposer.
    var allocations: String {
        guard let total = both.allocations, let inA = a.allocations, let inB = b.allocations else { return "—" }
        return "\(per(total).fixed(1)) (\(per(inA).fixed(1)) + \(per(inB).fixed(1)))"
    }

    /// Context switches per message, both nodes.
    var contextSwitches: String { per(both.contextSwitches).fixed(3) }

    var cpuPerMessage: Double { per(both.cpuMicroseconds) }
    var allocationsPerMessage: Double? { both.allocations.map(per) }
    var contextSwitchesPerMessage: Double { per(both.contextSwitches) }

    /// Measures `body` on nodes `a` and `b`.
    static func measure<T>(a: ChildProcess, b: ChildProcess, _ body: () async throws -> (T, Int)) async throws -> (T, RelayCost) {
        let a0 = try await ProcessUsage.of(a), b0 = try await ProcessUsage.of(b)
        let (value, messages) = try await body()
        let a1 = try await ProcessUsage.of(a), b1 = try await ProcessUsage.of(b)
        return (value, RelayCost(a: a1 - a0, b: b1 - b0, messages: messages))
    }
}

/// Reads ordo-one's malloc interposer (`libMallocInterposerSwift.so`, built
/// with this package's micro-benchmarks) when it is preloaded into this
/// process; found by name, so nothing links it.
enum MallocCounter {
    private typealias GetStats = @convention(c) (
        UnsafeMutablePointer<Int64>?, UnsafeMutablePointer<Int64>?, UnsafeMutablePointer<Int64>?,
        UnsafeMutablePointer<Int64>?, UnsafeMutablePointer<Int64>?, UnsafeMutablePointer<Int64>?) -> Void
    private typealias Enable = @convention(c) () -> Void

    nonisolated(unsafe) private static let getStats: GetStats? = {
        guard let symbol = dlsym(nil, "malloc_interposer_get_stats") else { return nil }
        return unsafeBitCast(symbol, to: GetStats.self)
    }()

    /// Starts counting, if the interposer is there; `true` when it is.
    @discardableResult
    static func start() -> Bool {
        guard let symbol = dlsym(nil, "malloc_interposer_enable") else { return false }
        unsafeBitCast(symbol, to: Enable.self)()
        return true
    }

    /// Allocation calls counted since `start()`, or `nil` without the interposer.
    static func allocations() -> Int? {
        guard let getStats else { return nil }
        var count: Int64 = 0, bytes: Int64 = 0, small: Int64 = 0, large: Int64 = 0, frees: Int64 = 0, freed: Int64 = 0
        getStats(&count, &bytes, &small, &large, &frees, &freed)
        return Int(count)
    }

    /// The interposer library next to this executable (`swift build -c release`
    /// builds it with the micro-benchmarks), if it is there.
    static var libraryPath: String? {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let library = executable.deletingLastPathComponent().appendingPathComponent("libMallocInterposerSwift.so").path
        return FileManager.default.fileExists(atPath: library) ? library : nil
    }
}

/// Bytes glibc's malloc has handed out and not got back, from `malloc_info`
/// (its XML: memory taken from the system and mmapped, minus what sits free
/// in its bins). A leak makes it grow; fragmentation grows RSS, not this.
enum HeapInUse {
    private typealias MallocInfo = @convention(c) (Int32, UnsafeMutablePointer<FILE>?) -> Int32

    static func bytes() -> Int? {
        guard let symbol = dlsym(nil, "malloc_info") else { return nil }
        let mallocInfo = unsafeBitCast(symbol, to: MallocInfo.self)
        var buffer: UnsafeMutablePointer<CChar>?
        var size = 0
        guard let stream = open_memstream(&buffer, &size) else { return nil }
        _ = mallocInfo(0, stream)
        fclose(stream)
        guard let buffer else { return nil }
        defer { free(buffer) }
        let xml = String(cString: buffer)
        // The totals are the last lines, after the per-arena details.
        guard let totals = xml.range(of: "</heap>", options: .backwards).map({ xml[$0.upperBound...] }) else { return nil }
        func total(of tag: String) -> Int {
            guard let start = totals.range(of: tag) else { return 0 }
            let rest = totals[start.upperBound...]
            guard let sizeStart = rest.range(of: "size=\"") else { return 0 }
            return Int(rest[sizeStart.upperBound...].prefix { $0.isNumber }) ?? 0
        }
        return total(of: "<system type=\"current\"") + total(of: "<total type=\"mmap\"")
            - total(of: "<total type=\"fast\"") - total(of: "<total type=\"rest\"")
    }
}
