import NIOCore
import Synchronization

/// How a load process's sending clients share one run: ids come from one
/// counter (each id is sent exactly once, by whichever client takes it), and
/// id `k` goes to uid `<prefix><k % receivers>`.
final class SendPlan: Sendable {
    enum Mode: Sendable {
        /// As fast as TCP takes them (each client writes while its channel is writable).
        case blast
        /// Open loop: `rate` msgs/s over all clients, each stamped with its scheduled time, late or not.
        case paced(rate: Double)
    }

    let mode: Mode
    let total: Int
    let receivers: Int
    let uidPrefix: String
    let size: Int
    let clients: Int
    let start = Probe.now()
    private let next = Atomic<Int>(0)
    let finished = TargetCounter()

    init(mode: Mode, total: Int, receivers: Int, uidPrefix: String, size: Int, clients: Int) {
        (self.mode, self.total, self.receivers, self.uidPrefix, self.size, self.clients) = (mode, total, receivers, uidPrefix, size, clients)
        finished.reset(target: clients)
    }

    /// The next id to send, or `nil` once all are taken.
    func takeID() -> Int? {
        let id = next.add(1, ordering: .relaxed).oldValue
        return id < total ? id : nil
    }

    func writeFrame(id: Int, stamp: UInt64, into buffer: inout ByteBuffer) {
        let uid = uidPrefix + String(id % receivers)
        let length = max(size, Probe.headerSize + uid.utf8.count)
        Probe.writeClientFrameHeader(length: length, into: &buffer)
        Probe.write(stamp: stamp, id: UInt64(id), uid: uid, size: size, into: &buffer)
    }
}

/// Starts a client's part of a ``SendPlan`` (an outbound user event, so the
/// load process can hand it to any channel from any thread).
struct StartSending: Sendable {
    var plan: SendPlan
    /// This client's number among the plan's clients (spreads the paced schedule).
    var index: Int
}

/// A benchmark WebSocket client: skips the 101 response, parses whole frames,
/// hands probes to a ``ProbeRecorder``, answers pings, and sends its share of
/// a ``SendPlan`` when told to.
final class ProbeClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let recorder: ProbeRecorder
    private let upgraded: EventLoopPromise<Void>
    /// The uid this client is bound to; probes addressed to another uid count as misrouted.
    private let uid: [UInt8]
    private var reader = ClientFrameReader()
    private var sending: StartSending?
    private var sentHere = 0

    init(recorder: ProbeRecorder, uid: String, upgraded: EventLoopPromise<Void>) {
        self.recorder = recorder
        self.uid = Array(uid.utf8)
        self.upgraded = upgraded
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if reader.feed(&incoming) { upgraded.succeed() }
        let arrived = Probe.now()
        var probes: [(id: UInt64, latency: UInt64, addressedHere: Bool)] = []
        while let (opcode, body, length) = reader.next() {
            let pending = reader.pending
            if opcode == 1 || opcode == 2, length >= Probe.headerSize,
               let stamp = pending.getInteger(at: body, as: UInt64.self),
               let id = pending.getInteger(at: body + 8, as: UInt64.self),
               let uidLength = pending.getInteger(at: body + 16, as: UInt8.self) {
                let addressed = uidLength == 0
                    || pending.readableBytesView[(body + Probe.headerSize)...].prefix(Int(uidLength)).elementsEqual(uid)
                probes.append((id, arrived &- stamp, addressed))
            } else if opcode == 9 {
                var pong = context.channel.allocator.buffer(capacity: 6 + length)
                pong.writeBytes([0x8A, 0x80 | UInt8(length), 0, 0, 0, 0])
                pong.writeImmutableBuffer(pending.getSlice(at: body, length: length)!)
                context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
            }
        }
        reader.compact()
        recorder.record(probes)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let start = event as? StartSending else {
            return context.triggerUserOutboundEvent(event, promise: promise)
        }
        promise?.succeed()
        sending = start
        sentHere = 0
        switch start.plan.mode {
        case .blast: pump(context: context)
        case .paced: paceTick(context: context)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // Never from inside a flush: the next loop turn pumps.
        if case .blast = sending?.plan.mode, context.channel.isWritable { schedulePump(context: context) }
        context.fireChannelWritabilityChanged()
    }

    private var pumpScheduled = false

    private func schedulePump(context: ChannelHandlerContext) {
        guard !pumpScheduled else { return }
        pumpScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.pumpScheduled = false
            self.pump(context: context)
        }
    }

    /// Blast: writes while the channel takes them (a few hundred per turn, then
    /// yields the loop); resumes when the channel becomes writable again.
    private func pump(context: ChannelHandlerContext) {
        guard let plan = sending?.plan else { return }
        var buffer = context.channel.allocator.buffer(capacity: 512 * (plan.size + 32))
        var written = 0
        while context.channel.isWritable, written < 512 {
            guard let id = plan.takeID() else {
                // Flush even when this buffer is empty: earlier chunks were only written.
                if buffer.readableBytes > 0 { context.write(wrapOutboundOut(buffer), promise: nil) }
                context.flush()
                return finish()
            }
            plan.writeFrame(id: id, stamp: Probe.now(), into: &buffer)
            written += 1
            if written % 32 == 0 {
                context.write(wrapOutboundOut(buffer), promise: nil)
                buffer = context.channel.allocator.buffer(capacity: 32 * (plan.size + 32))
            }
        }
        if buffer.readableBytes > 0 { context.write(wrapOutboundOut(buffer), promise: nil) }
        context.flush()
        if context.channel.isWritable { schedulePump(context: context) }
    }

    /// Paced: message `k` of this client is due at start + phase + k × interval;
    /// everything due is written (stamped with its due time, so a late send shows
    /// as latency), then the next due time is scheduled.
    private func paceTick(context: ChannelHandlerContext) {
        guard let start = sending, case .paced(let rate) = start.plan.mode else { return }
        let plan = start.plan
        let interval = Double(plan.clients) / rate * 1e9
        let phase = interval * Double(start.index) / Double(plan.clients)
        func due(_ k: Int) -> UInt64 { plan.start + UInt64(phase + Double(k) * interval) }
        let now = Probe.now()
        var buffer = context.channel.allocator.buffer(capacity: plan.size + 32)
        while due(sentHere) <= now {
            guard let id = plan.takeID() else {
                if buffer.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(buffer), promise: nil) }
                return finish()
            }
            plan.writeFrame(id: id, stamp: due(sentHere), into: &buffer)
            sentHere += 1
        }
        if buffer.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(buffer), promise: nil) }
        // At most one wake-up per client per millisecond: faster schedules send
        // what is due in one write (still stamped with each message's due time).
        let wait = max(Int64(due(sentHere)) - Int64(Probe.now()), Int64(now) + 1_000_000 - Int64(Probe.now()))
        context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(max(0, wait))) { self.paceTick(context: context) }
    }

    private func finish() {
        sending?.plan.finished.increment()
        sending = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        upgraded.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        upgraded.fail(ChannelError.ioOnClosedChannel)
        if sending != nil { finish() }
        context.fireChannelInactive()
    }
}
