/// The demo page: plain HTML, CSS and JS, no outside assets.
enum DemoPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ClusterWS demo</title>
<style>
  :root { --bg:#0f172a; --panel:#111c33; --line:#23314f; --text:#e2e8f0; --muted:#94a3b8; --accent:#38bdf8; --ok:#34d399; --warn:#fbbf24; --bad:#f87171; }
  * { box-sizing: border-box; }
  body { margin:0; font:15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--text); }
  header { padding:18px 24px; border-bottom:1px solid var(--line); display:flex; align-items:baseline; gap:16px; flex-wrap:wrap; }
  header h1 { margin:0; font-size:20px; letter-spacing:.3px; }
  header .node { color:var(--accent); font-weight:600; }
  header nav a { color:var(--muted); margin-right:10px; text-decoration:none; border:1px solid var(--line); padding:2px 8px; border-radius:999px; }
  header nav a.current { color:var(--bg); background:var(--accent); border-color:var(--accent); }
  main { display:grid; grid-template-columns: 340px 1fr 260px; gap:16px; padding:16px 24px; }
  @media (max-width: 1000px) { main { grid-template-columns: 1fr; } }
  section { background:var(--panel); border:1px solid var(--line); border-radius:12px; padding:14px 16px; }
  h2 { font-size:13px; text-transform:uppercase; letter-spacing:.08em; color:var(--muted); margin:0 0 10px; }
  label { display:block; font-size:12px; color:var(--muted); margin:10px 0 4px; }
  input[type=text] { width:100%; padding:8px 10px; border-radius:8px; border:1px solid var(--line); background:#0b1326; color:var(--text); font-size:14px; }
  button { padding:8px 12px; border-radius:8px; border:1px solid var(--accent); background:transparent; color:var(--accent); font-weight:600; cursor:pointer; }
  button.primary { background:var(--accent); color:var(--bg); }
  button:disabled { opacity:.4; cursor:not-allowed; }
  .row { display:flex; gap:8px; margin-top:8px; flex-wrap:wrap; }
  .row > input { flex:1; }
  .status { margin-top:10px; font-size:13px; }
  .status .dot { display:inline-block; width:9px; height:9px; border-radius:50%; background:var(--bad); margin-right:6px; }
  .status.on .dot { background:var(--ok); }
  .opcode { display:flex; gap:14px; margin-top:8px; font-size:13px; color:var(--muted); }
  #messages { list-style:none; margin:0; padding:0; max-height:65vh; overflow:auto; }
  #messages li { border-bottom:1px solid var(--line); padding:8px 2px; }
  #messages li .meta { font-size:12px; color:var(--muted); }
  #messages li .body { font-size:15px; margin-top:2px; word-break:break-word; }
  .tag { display:inline-block; font-size:11px; padding:0 6px; border-radius:6px; border:1px solid var(--line); margin-right:6px; }
  .tag.text { color:var(--ok); border-color:var(--ok); } .tag.binary { color:var(--warn); border-color:var(--warn); }
  .tag.system { color:var(--muted); }
  #online { list-style:none; margin:0; padding:0; }
  #online li { padding:6px 0; border-bottom:1px solid var(--line); }
  #online li small { color:var(--muted); display:block; }
  .empty { color:var(--muted); font-size:13px; }
  #recovery { display:inline-block; margin-top:8px; font-size:12px; padding:1px 8px; border-radius:999px; border:1px solid var(--line); color:var(--muted); }
  #recovery.ok { color:var(--ok); border-color:var(--ok); } #recovery.lost { color:var(--bad); border-color:var(--bad); }
  #recovery:empty { display:none; }
  #status-detail { color:var(--muted); font-size:12px; margin-left:6px; }
</style>
<script src="/clusterws.js"></script>
</head>
<body>
<header>
  <h1>ClusterWS</h1>
  <div>this page is served by node <span class="node" id="this-node">…</span></div>
  <nav id="nodes"></nav>
</header>
<main>
  <section>
    <h2>Connect</h2>
    <label for="uid">Your user id</label>
    <div class="row"><input type="text" id="uid" placeholder="alice" autocomplete="off"><button class="primary" id="connect">Connect</button></div>
    <div class="status" id="status"><span class="dot"></span><span id="status-text">not connected</span><span id="status-detail"></span></div>
    <div><span id="recovery"></span></div>
    <div class="row"><button id="drop" disabled title="closes the connection as a network failure would, and reconnects after 3 s">Drop connection for 3 s</button></div>

    <h2 style="margin-top:22px">Send</h2>
    <label for="text">Message</label>
    <input type="text" id="text" placeholder="hello from the other node" autocomplete="off">
    <div class="opcode">
      <label><input type="radio" name="opcode" value="text" checked> text frame</label>
      <label><input type="radio" name="opcode" value="binary"> binary frame</label>
    </div>
    <label for="to">To user(s), comma-separated</label>
    <div class="row"><input type="text" id="to" placeholder="bob, carol" autocomplete="off"><button id="send" disabled>Send</button></div>
    <label for="room">Room</label>
    <div class="row"><input type="text" id="room" placeholder="lobby" autocomplete="off">
      <button id="join" disabled>Join</button><button id="leave" disabled>Leave</button><button id="send-room" disabled>Send</button></div>
    <div class="row"><button id="send-all" disabled>Send to everyone</button></div>
  </section>

  <section>
    <h2>Received</h2>
    <ul id="messages"><li class="empty">Nothing yet. Connect, then send from another tab.</li></ul>
  </section>

  <section>
    <h2>Online</h2>
    <ul id="online"><li class="empty">…</li></ul>
  </section>

  <section>
    <h2>Members of <span id="members-room">the room</span></h2>
    <ul id="members"><li class="empty">Join a room to see who is in it (live: joins and leaves arrive as they happen).</li></ul>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let client = null, myNode = "?";

function setConnected(on, text) {
  $("status").classList.toggle("on", on);
  $("status-text").textContent = text;
  for (const id of ["send", "join", "leave", "send-room", "send-all", "drop"]) $(id).disabled = !on;
  $("connect").textContent = client ? "Disconnect" : "Connect";
}

function addMessage(kind, meta, text) {
  const list = $("messages");
  const empty = list.querySelector(".empty"); if (empty) empty.remove();
  const item = document.createElement("li");
  item.className = "msg " + kind;
  const tag = document.createElement("span"); tag.className = "tag " + kind; tag.textContent = kind;
  const metaLine = document.createElement("div"); metaLine.className = "meta"; metaLine.append(tag, meta);
  const body = document.createElement("div"); body.className = "body"; body.textContent = text;
  item.append(metaLine, body);
  list.prepend(item);
}

// The page speaks clusterws.v1 through the JS client (/clusterws.js): every message to
// this user comes with its offset, and after a reconnect the node replays what was missed.
function connect() {
  if (client) { const old = client; client = null; old.stop(); return; }
  const uid = $("uid").value.trim();
  if (!uid) { $("uid").focus(); return; }
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws?uid=" + encodeURIComponent(uid);
  let wasOpen = false;
  client = new ClusterWSClient([url], {
    onState(s) {
      if (s.state === "open") { wasOpen = true; $("status-detail").textContent = ""; setConnected(true, "connected as " + uid + " on " + myNode); }
      else if (s.state === "connecting") { $("status-detail").textContent = wasOpen ? "· reconnecting…" : "· connecting…"; }
      else if (s.state === "closed" && wasOpen) {
        wasOpen = false;
        setConnected(false, "closed (" + s.code + (s.reason ? " " + s.reason : "") + ")");
      }
      else if (s.state === "stopped") { $("status-detail").textContent = ""; setConnected(false, $("status-text").textContent); }
    },
    onRecovery(r) {
      $("recovery").className = r.recovered ? "ok" : "lost";
      $("recovery").textContent = r.recovered
        ? "recovered · " + r.replayed + " missed message" + (r.replayed === 1 ? "" : "s") + " replayed"
        : "not recovered: " + r.reason + " (reload)";
    },
    onMessage(m) {
      const binary = !!m.bytes;
      const raw = binary ? new TextDecoder().decode(m.bytes) : m.text;
      const where = m.offset !== null ? " · #" + m.offset : "";
      let data; try { data = JSON.parse(raw); } catch { addMessage(binary ? "binary" : "text", "unparsed" + where, raw); return; }
      if (data.type === "presence") {
        addMessage("system", "presence", data.uid + (data.event === "join" ? " joined " : " left ") + data.room);
        if (data.room === joinedRoom) showMembers();
        return;
      }
      if (data.event === "joined" || data.event === "left") { joinedRoom = data.event === "joined" ? data.room : null; showMembers(); }
      if (data.event === "welcome") { addMessage("system", "welcome", "you are " + data.uid + " on " + data.node + " (fd " + data.fd + ")"); return; }
      if (data.event) { addMessage("system", data.event, Object.entries(data).filter(([k]) => k !== "event").map(([k, v]) => k + ": " + v).join(" · ")); return; }
      addMessage(binary ? "binary" : "text", "from " + data.from + " via " + data.via + " → " + data.to + " · received on " + myNode + where, data.text);
    },
  });
  setConnected(false, "connecting…");
  client.connect();
}

function opcode() { return document.querySelector("input[name=opcode]:checked").value; }
function command(body) { if (client) { try { client.send(JSON.stringify(Object.assign({ text: $("text").value, opcode: opcode() }, body))); } catch (e) { addMessage("system", "error", String(e)); } } }

$("connect").onclick = connect;
$("uid").onkeydown = (e) => { if (e.key === "Enter") connect(); };
$("send").onclick = () => command({ action: "send", to: $("to").value.split(",").map((s) => s.trim()).filter(Boolean) });
$("text").onkeydown = (e) => { if (e.key === "Enter" && !$("send").disabled) $("send").click(); };
$("join").onclick = () => command({ action: "join", room: $("room").value.trim() });
$("leave").onclick = () => command({ action: "leave", room: $("room").value.trim() });
$("send-room").onclick = () => command({ action: "room", room: $("room").value.trim() });
$("send-all").onclick = () => command({ action: "all" });
$("drop").onclick = () => { if (client) client.drop(3000); };

async function refresh() {
  try {
    const nodes = await (await fetch("/demo/nodes")).json();
    myNode = nodes.self[0].id; $("this-node").textContent = myNode;
    $("nodes").innerHTML = "";
    for (const n of nodes.nodes) {
      const a = document.createElement("a");
      a.href = location.protocol + "//" + location.hostname + ":" + n.port + "/";
      a.textContent = n.id; if (n.id === myNode) a.className = "current";
      $("nodes").append(a);
    }
    const online = await (await fetch("/demo/online")).json();
    const list = $("online"); list.innerHTML = "";
    if (online.users.length === 0) list.innerHTML = '<li class="empty">nobody</li>';
    for (const u of online.users) {
      const li = document.createElement("li");
      li.textContent = u.uid[0];
      const small = document.createElement("small");
      small.textContent = u.fds.length + " connection" + (u.fds.length > 1 ? "s" : "") + " on " + [...new Set(u.nodes)].join(", ");
      li.append(small); list.append(li);
    }
  } catch (e) { /* the node may be restarting */ }
}
// Room members: read when a room is joined, then kept up to date by the presence frames the node sends.
let joinedRoom = null;
async function showMembers() {
  $("members-room").textContent = joinedRoom || "the room";
  const list = $("members"); list.innerHTML = "";
  if (!joinedRoom) { list.innerHTML = '<li class="empty">Join a room to see who is in it.</li>'; return; }
  try {
    const answer = await (await fetch("/demo/presence?room=" + encodeURIComponent(joinedRoom))).json();
    const users = {};
    for (const m of answer.members) (users[m.uid] = users[m.uid] || []).push(m.node);
    if (Object.keys(users).length === 0) list.innerHTML = '<li class="empty">nobody</li>';
    for (const [uid, nodes] of Object.entries(users)) {
      const li = document.createElement("li"); li.textContent = uid;
      const small = document.createElement("small"); small.textContent = "on " + [...new Set(nodes)].join(", ");
      li.append(small); list.append(li);
    }
  } catch (e) { /* the node may be restarting */ }
}
refresh(); setInterval(refresh, 1500);
</script>
</body>
</html>
"""#
}
