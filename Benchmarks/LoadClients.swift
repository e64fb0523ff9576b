import ArgumentParser
import NIOCore
import NIOPosix
import Foundation
import Synchronization

/// Numbers the load process's connections across `open` commands.
let connectionNumber = Atomic<Int>(0)

/// `Benchmarks load`: many WebSocket clients in their own process, driven by
/// line commands on standard input (used by the transport benchmark).
///
/// - `open N`: opens N connections (at most 200 handshakes at once), replies `opened <total>`.
/// - `expect T`: replies `reached <frames>` once T data frames arrived since this command.
/// - `closeall`: closes every connection, replies `closed`.
struct LoadClients: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "load", abstract: "Load clients (internal).",
                                                    shouldDisplay: false)

    @Option var port: Int
    @Option(help: "Request path; {n} is replaced by the connection's number (for distinct uids).")
    var path: String = "/ws"
    @Option var host: String = "127.0.0.1"
    @Flag(help: "Probe clients: parse every frame, record latency and ids, and send probes on request.")
    var probe = false

    func run() async throws {
        if ProcessInfo.processInfo.environment["BENCH_NIO_EXECUTOR"] == "1" {
            _ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        }
        let counter = TargetCounter()
        let recorder = ProbeRecorder()
        var channels: [any Channel] = []
        for await line in standardInputLines() {
            let words = line.split(separator: " ").map(String.init)
            switch words.first {
            case "open":
                let count = Int(words[1]) ?? 0
                channels += try await open(count, counter: counter, recorder: recorder)
                reply("opened \(channels.count)")
            case "expect":
                let target = Int(words[1]) ?? 0
                counter.reset(target: target)
                reply("armed")
                let complete = await counter.reached(within: .seconds(60))
                reply(complete ? "reached \(target)" : "timeout \(counter.countBeforeTimeout)")
            case "track":  // track <expected> <unicast 0|1>
                recorder.reset(expected: Int(words[1]) ?? 0, unicast: words[2] == "1")
                reply("armed")
            case "wait":  // wait <seconds>
                let complete = await recorder.completed(within: .seconds(Int(words[1]) ?? 30))
                reply(complete ? "done" : "timeout")
            case "stats":
                reply(recorder.summary())
            case "blast", "pace":  // blast <total> <receivers> <uid prefix> <size> | pace <rate> <total> ...
                let paced = words[0] == "pace"
                let rest = Array(words.dropFirst(paced ? 2 : 1))
                let plan = SendPlan(mode: paced ? .paced(rate: Double(words[1]) ?? 1) : .blast,
                                    total: Int(rest[0]) ?? 0, receivers: Int(rest[1]) ?? 1, uidPrefix: rest[2],
                                    size: Int(rest[3]) ?? 64, clients: channels.count)
                for (index, channel) in channels.enumerated() {
                    // A connection the server closed meanwhile sends nothing; the others take its share.
                    let started = channel.eventLoop.makePromise(of: Void.self)
                    started.futureResult.whenFailure { _ in plan.finished.increment() }
                    channel.triggerUserOutboundEvent(StartSending(plan: plan, index: index), promise: started)
                }
                await plan.finished.reached()
                reply("sent")
            case "closeall":
                for channel in channels { channel.close(promise: nil) }
                for channel in channels { try? await channel.closeFuture.get() }
                channels = []
                connectionNumber.store(0, ordering: .relaxed)
                reply("closed")
            default:
                reply("unknown \(line)")
            }
        }
    }

    private func open(_ count: Int, counter: TargetCounter, recorder: ProbeRecorder) async throws -> [any Channel] {
        var opened: [any Channel] = []
        var next = 0
        let base = connectionNumber.add(count, ordering: .relaxed).oldValue
        while next < count {
            let batch = min(200, count - next)
            try await withThrowingTaskGroup(of: (any Channel).self) { group in
                for index in 0..<batch {
                    let target = path.replacingOccurrences(of: "{n}", with: String(base + next + index))
                    let uid = target.range(of: "uid=").map { String(target[$0.upperBound...]) } ?? ""
                    group.addTask { [host, port, probe] in
                        try await connectWebSocketClient(host: host, port: port, path: target) { upgraded in
                            probe ? ProbeClientHandler(recorder: recorder, uid: uid, upgraded: upgraded) as any ChannelInboundHandler
                                : FrameCountingHandler(counter: counter, upgraded: upgraded)
                        }
                    }
                }
                for try await channel in group { opened.append(channel) }
            }
            next += batch
        }
        return opened
    }
}

/// Skips the 101 response, then walks frame headers and counts data frames
/// without copying payloads.
final class FrameCountingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let counter: TargetCounter
    let upgraded: EventLoopPromise<Void>
    private var handshakeDone = false
    private var header: [UInt8] = []
    private var skip = 0
    /// The payload of a ping being read, answered with a pong when complete
    /// (a benchmark that outlives the server's keepalive must answer pings).
    private var ping: (payload: [UInt8], remaining: Int)?

    init(counter: TargetCounter, upgraded: EventLoopPromise<Void>) {
        self.counter = counter
        self.upgraded = upgraded
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        if !handshakeDone {
            let view = buffer.readableBytesView
            guard let end = view.firstRange(of: [13, 10, 13, 10]) else { return }  // 101 head fits one read
            buffer.moveReaderIndex(forwardBy: view.distance(from: view.startIndex, to: end.upperBound))
            handshakeDone = true
            upgraded.succeed()
        }
        var frames = 0
        while buffer.readableBytes > 0 {
            if var pending = ping {
                let n = min(pending.remaining, buffer.readableBytes)
                pending.payload += buffer.readBytes(length: n)!
                pending.remaining -= n
                ping = pending
                if pending.remaining == 0 { answer(pending.payload, context: context) }
                continue
            }
            if skip > 0 {
                let n = min(skip, buffer.readableBytes)
                buffer.moveReaderIndex(forwardBy: n)
                skip -= n
                continue
            }
            if header.isEmpty, let (opcode, length, size) = Self.peekHeader(buffer) {
                buffer.moveReaderIndex(forwardBy: size)
                frameStarted(opcode: opcode, length: length, frames: &frames, context: context)
                continue
            }
            header.append(buffer.readInteger()!)
            guard header.count >= 2 else { continue }
            let short = Int(header[1] & 0x7F)
            let needed = short == 126 ? 4 : (short == 127 ? 10 : 2)
            guard header.count >= needed else { continue }
            let length = short == 126 ? Int(header[2]) << 8 | Int(header[3])
                : short == 127 ? header[2..<10].reduce(0) { $0 << 8 | Int($1) } : short
            let opcode = header[0] & 0x0F
            header.removeAll(keepingCapacity: true)
            frameStarted(opcode: opcode, length: length, frames: &frames, context: context)
        }
        if frames > 0 { counter.increment(by: frames) }
    }

    private func frameStarted(opcode: UInt8, length: Int, frames: inout Int, context: ChannelHandlerContext) {
        if opcode == 1 || opcode == 2 { frames += 1 }
        if opcode == 9 {
            ping = ([], length)
            if length == 0 { answer([], context: context) }
        } else {
            skip = length
        }
    }

    /// Sends a masked pong (mask key 0, so the payload goes as is).
    private func answer(_ payload: [UInt8], context: ChannelHandlerContext) {
        ping = nil
        var pong = context.channel.allocator.buffer(capacity: 6 + payload.count)
        pong.writeBytes([0x8A, 0x80 | UInt8(payload.count), 0, 0, 0, 0])
        pong.writeBytes(payload)
        context.writeAndFlush(NIOAny(pong), promise: nil)
    }

    /// A whole frame header at the reader index: (opcode, payload length, header size).
    private static func peekHeader(_ buffer: ByteBuffer) -> (UInt8, Int, Int)? {
        let start = buffer.readerIndex
        guard let first = buffer.getInteger(at: start, as: UInt8.self),
              let second = buffer.getInteger(at: start + 1, as: UInt8.self) else { return nil }
        let short = Int(second & 0x7F)
        if short < 126 { return (first & 0x0F, short, 2) }
        if short == 126 {
            guard let length = buffer.getInteger(at: start + 2, as: UInt16.self) else { return nil }
            return (first & 0x0F, Int(length), 4)
        }
        guard let length = buffer.getInteger(at: start + 2, as: UInt64.self) else { return nil }
        return (first & 0x0F, Int(length), 10)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        upgraded.fail(error)
        context.close(promise: nil)
    }
}
