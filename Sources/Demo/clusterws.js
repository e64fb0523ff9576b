// ClusterWS client for browsers (and any runtime with a WebSocket global):
// the clusterws.v1 protocol, automatic reconnect with capped, jittered
// backoff, and recovery of every stream from the last position seen.
// No dependencies. Served by the demo at /clusterws.js.
//
//   const client = new ClusterWSClient(["ws://node-1/ws?uid=alice", "ws://node-2/ws?uid=alice"], {
//     onMessage(message) { /* message.text or message.bytes; message.stream, message.offset */ },
//     onRecovery(recovery) { /* { stream, recovered, replayed, reason, offset, epoch } */ },
//     onState(state) { /* "connecting" | "open" | "closed" (with code, reason) | "stopped" */ },
//   });
//   client.connect();
"use strict";

class ClusterWSClient {
  constructor(urls, options = {}) {
    this.urls = Array.isArray(urls) ? urls : [urls];
    this.options = Object.assign({ initialDelay: 250, maxDelay: 10000, jitter: 0.5 }, options);
    this.positions = Object.assign({}, options.positions || {}); // stream -> { offset, epoch }
    this.socket = null;
    this.turn = 0;
    this.failures = 0;
    this.stopped = true;
    this.timer = null;
  }

  /** Opens a connection, and keeps one open until stop(). */
  connect() {
    this.stopped = false;
    this.open();
  }

  /** Closes the connection and stops reconnecting. */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "bye");
  }

  /** Drops the connection as a network failure would, and reconnects after `pauseMs`. */
  drop(pauseMs = 0) {
    this.pauseUntil = Date.now() + pauseMs;
    if (this.socket) this.socket.close(4000, "dropped");
  }

  /** Sends a text (string) or binary (ArrayBuffer / typed array) message. */
  send(data) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) throw new Error("not connected");
    this.socket.send(data);
  }

  /** `url` with one clusterws-position parameter per stream seen. */
  resumeURL(url) {
    const parts = Object.entries(this.positions).map(([stream, p]) =>
      "clusterws-position=" + encodeURIComponent(p.offset + "." + p.epoch + "." + stream));
    if (parts.length === 0) return url;
    return url + (url.includes("?") ? "&" : "?") + parts.join("&");
  }

  open() {
    const url = this.urls[this.turn++ % this.urls.length];
    this.state("connecting", { url });
    const socket = new WebSocket(this.resumeURL(url), "clusterws.v1");
    this.socket = socket;
    socket.onopen = () => {
      if (socket.protocol !== "clusterws.v1") { socket.close(1002, "no clusterws.v1"); return; }
      this.failures = 0;
      this.state("open", { url });
    };
    socket.onmessage = (event) => this.receive(event.data);
    socket.onclose = (event) => {
      if (this.socket === socket) this.socket = null;
      this.state("closed", { code: event.code, reason: event.reason });
      if (this.stopped) { this.state("stopped", {}); return; }
      if (event.code !== 1000 && event.code !== 1001 && event.code !== 4000) this.failures++;
      const backoff = Math.min(this.options.initialDelay * 2 ** Math.min(this.failures, 20), this.options.maxDelay);
      const delay = Math.max(backoff * (1 - Math.random() * this.options.jitter), (this.pauseUntil || 0) - Date.now());
      this.timer = setTimeout(() => { if (!this.stopped) this.open(); }, delay);
    };
  }

  receive(text) {
    let frame;
    try { frame = JSON.parse(text); } catch { return; }
    const position = typeof frame.offset === "number" ? { offset: frame.offset, epoch: frame.epoch } : null;
    if (frame.type === "message") {
      const message = { stream: frame.stream || null, offset: position ? position.offset : null,
                        epoch: position ? position.epoch : null };
      if (frame.binary) {
        const raw = atob(frame.data || "");
        message.bytes = Uint8Array.from(raw, (c) => c.charCodeAt(0));
      } else {
        message.text = frame.data;
      }
      if (frame.stream && position) {
        const last = this.positions[frame.stream];
        if (last && last.epoch === position.epoch && position.offset <= last.offset) return; // seen already
        this.positions[frame.stream] = position;
      }
      if (this.options.onMessage) this.options.onMessage(message);
    } else if (frame.type === "position" && frame.stream && position) {
      this.positions[frame.stream] = position;
    } else if (frame.type === "recovered" && frame.stream && position) {
      // Not recovered: go on from where the stream is now (the application reloads its state).
      if (!frame.recovered) this.positions[frame.stream] = position;
      if (this.options.onRecovery) {
        this.options.onRecovery({ stream: frame.stream, recovered: !!frame.recovered, replayed: frame.replayed || 0,
                                  reason: frame.reason || null, offset: position.offset, epoch: position.epoch });
      }
    }
  }

  state(name, detail) {
    if (this.options.onState) this.options.onState(Object.assign({ state: name }, detail));
  }
}

if (typeof module !== "undefined") module.exports = { ClusterWSClient };
