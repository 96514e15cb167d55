/**
 * The live topology page served at GET / on the admin port: one self-contained HTML document (no
 * external assets: it is served offline). It polls /status every second and draws the primary on
 * top, the standbys and the replicas below it, as cards joined by replication lines (solid to a
 * synchronous standby, dashed to an asynchronous replica), coloured by health, with a
 * lag bar per replica against max_lag and read/write rates computed from the change in unit
 * counts between two /status documents.
 *
 * Hooks for tests and scripts: each card has data-node, data-role and data-health; a replica's lag
 * bar fill has data-lag-ms and data-lag-fraction; the rates have data-reads-per-s and
 * data-writes-per-s; each capability (replica reads, failover, switchover) has data-capability and
 * data-state, and its reason as text.
 */
export const TOPOLOGY_PAGE = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>pgrelay topology</title>
<style>
  :root { --bg: #0f1419; --card: #1a222c; --text: #e6edf3; --muted: #8b98a5; --line: #3b4a5a;
          --up: #2ea043; --stale: #d29922; --down: #f85149; --fenced: #8957e5; --unknown: #6e7681; }
  * { box-sizing: border-box; }
  body { margin: 0; background: var(--bg); color: var(--text); font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
  header { display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: baseline; padding: 16px 24px; border-bottom: 1px solid var(--line); }
  header h1 { font-size: 18px; margin: 0 16px 0 0; }
  .fact { color: var(--muted); } .fact b { color: var(--text); font-weight: 600; }
  .badge { padding: 2px 10px; border-radius: 10px; font-weight: 600; }
  .badge.ok { background: var(--up); } .badge.bad { background: var(--down); }
  #error { display: none; margin: 12px 24px 0; padding: 8px 12px; border-radius: 6px; background: #5a1d1d; }
  #stage { position: relative; padding: 24px; }
  #lines { position: absolute; inset: 0; width: 100%; height: 100%; pointer-events: none; overflow: visible; }
  .row { position: relative; display: flex; justify-content: center; align-items: flex-start; flex-wrap: wrap; gap: 28px; margin-bottom: 72px; }
  .card { position: relative; width: 250px; padding: 12px 14px 12px 18px; border-radius: 8px; background: var(--card); border: 1px solid var(--line); }
  .card::before { content: ""; position: absolute; left: 0; top: 0; bottom: 0; width: 6px; border-radius: 8px 0 0 8px; background: var(--health-colour, var(--unknown)); }
  .card[data-health="up"] { --health-colour: var(--up); }
  .card[data-health="stale"] { --health-colour: var(--stale); }
  .card[data-health="down"] { --health-colour: var(--down); }
  .card[data-health="fenced"] { --health-colour: var(--fenced); }
  .card[data-health="down"], .card[data-health="fenced"] { opacity: .8; }
  .name { font-weight: 700; font-size: 15px; }
  .role { float: right; font-size: 12px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); }
  .health { font-size: 12px; font-weight: 600; color: var(--health-colour, var(--unknown)); }
  .addr, .detail { font-size: 12px; color: var(--muted); }
  .rates { display: flex; gap: 14px; margin-top: 6px; font-variant-numeric: tabular-nums; }
  .rates b { font-size: 16px; }
  .lag { margin-top: 8px; }
  .lag-track { height: 10px; border-radius: 5px; background: #2b3642; overflow: hidden; }
  .lag-fill { height: 100%; width: 0; border-radius: 5px; background: var(--up); transition: width .4s ease; }
  .lag-fill.warn { background: var(--stale); } .lag-fill.over { background: var(--down); } .lag-fill.unknown { background: var(--unknown); }
  .lag-text { font-size: 12px; color: var(--muted); font-variant-numeric: tabular-nums; }
  #capabilities { display: flex; flex-wrap: wrap; gap: 8px 12px; padding: 12px 24px 0; }
  .cap { padding: 6px 10px; border-radius: 6px; background: var(--card); border: 1px solid var(--line); font-size: 12px; max-width: 640px; }
  .cap b { margin-right: 6px; } .cap .state { font-weight: 700; text-transform: uppercase; margin-right: 6px; }
  .cap[data-state="ok"] .state { color: var(--up); } .cap[data-state="degraded"] .state, .cap[data-state="unknown"] .state { color: var(--stale); }
  .cap[data-state="impossible"] .state, .cap[data-state="off"] .state { color: var(--down); }
  .cap .grants { font-family: ui-monospace, monospace; color: var(--muted); margin-top: 4px; white-space: pre-wrap; }
  footer { padding: 0 24px 16px; color: var(--muted); font-size: 12px; }
  .legend span { margin-right: 14px; } .legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; vertical-align: -1px; }
</style>
</head>
<body>
<header>
  <h1>pgrelay</h1>
  <span id="health" class="badge">…</span>
  <span class="fact">primary <b id="primary">…</b></span>
  <span class="fact">consistency <b id="consistency">…</b></span>
  <span class="fact">max lag <b id="maxlag">…</b></span>
  <span class="fact">clients <b id="clients">…</b></span>
  <span class="fact">reads/s <b id="reads">…</b></span>
  <span class="fact">writes/s <b id="writes">…</b></span>
  <span class="fact">last failover <b id="failover">none</b></span>
</header>
<div id="error" role="alert"></div>
<div id="capabilities" aria-label="capabilities"></div>
<div id="stage">
  <svg id="lines" aria-hidden="true"></svg>
  <div class="row" id="row-primary"></div>
  <div class="row" id="row-followers"></div>
</div>
<footer>
  <div class="legend"><span><i style="background:var(--up)"></i>up</span><span><i style="background:var(--stale)"></i>stale (too far behind)</span><span><i style="background:var(--down)"></i>down</span><span><i style="background:var(--fenced)"></i>fenced</span>
  <span>solid line: synchronous standby · dashed: asynchronous replica</span></div>
  <div>updated <span id="updated">never</span> · refreshes every second from <a href="/status" style="color:inherit">/status</a></div>
</footer>
<script>
"use strict";
const cards = new Map();
let previous;
const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmtRate(v) { return v === undefined ? "…" : v >= 100 ? v.toFixed(0) : v.toFixed(1); }
function fmtBytes(b) { return b === null ? "?" : b < 1024 ? b + " B" : b < 1048576 ? (b / 1024).toFixed(1) + " kB" : (b / 1048576).toFixed(1) + " MB"; }
function fmtMs(ms) { return ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(ms < 10000 ? 2 : 0) + " s"; }

function card(node) {
  let c = cards.get(node.name);
  if (c) return c;
  const root = el("div", "card");
  root.dataset.node = node.name;
  const head = el("div");
  const name = el("span", "name", node.name);
  const role = el("span", "role");
  head.append(name, role);
  const health = el("div", "health");
  const addr = el("div", "addr");
  const rates = el("div", "rates");
  const reads = el("span"); const writes = el("span");
  rates.append(reads, writes);
  const detail = el("div", "detail");
  const lag = el("div", "lag");
  const track = el("div", "lag-track");
  const fill = el("div", "lag-fill");
  track.append(fill);
  const lagText = el("div", "lag-text");
  lag.append(track, lagText);
  root.append(head, health, addr, rates, detail, lag);
  c = { root, role, health, addr, reads, writes, detail, lag, fill, lagText };
  cards.set(node.name, c);
  return c;
}

function rateOf(node, field) {
  if (!previous) return undefined;
  const before = previous.nodes.find((n) => n.name === node.name);
  const seconds = (current.now - previous.now) / 1000;
  if (!before || seconds <= 0) return undefined;
  return Math.max(0, (node.units[field] - before.units[field]) / seconds);
}

let current;
function render(status) {
  current = status;
  const health = $("health");
  health.textContent = status.health.ok ? "writes OK" : "no writes: " + status.health.reason;
  health.className = "badge " + (status.health.ok ? "ok" : "bad");
  $("primary").textContent = status.primary ?? "none";
  $("consistency").textContent = status.consistency;
  $("maxlag").textContent = fmtMs(status.max_lag_ms);
  $("clients").textContent = String(status.clients);
  const f = status.last_failover;
  $("failover").textContent = f ? (f.from ?? "?") + " → " + f.to + " (" + f.kind + ", " + ((f.durationMs ?? 0) / 1000).toFixed(1) + " s" + (f.at ? ", " + new Date(f.at).toLocaleTimeString() : "") + ")" : "none";
  let totalReads = 0, totalWrites = 0, anyRate = false;
  const seen = new Set();
  for (const node of status.nodes) {
    seen.add(node.name);
    const c = card(node);
    const row = node.role === "primary" ? "row-primary" : "row-followers";
    if (c.root.parentElement?.id !== row) $(row).append(c.root);
    c.root.dataset.role = node.role;
    c.root.dataset.health = node.health;
    c.role.textContent = node.role + (node.configured_role !== node.role ? " (was " + node.configured_role + ")" : "");
    c.health.textContent = node.health + (node.stale_reason && node.health === "stale" ? ": " + node.stale_reason : "") + (node.last_error && node.health === "down" ? ": " + node.last_error : "");
    c.addr.textContent = node.host + ":" + node.port + (node.timeline !== null ? " · timeline " + node.timeline : "");
    const reads = rateOf(node, "reads"), writes = rateOf(node, "writes");
    if (reads !== undefined) { totalReads += reads; totalWrites += writes; anyRate = true; }
    c.reads.innerHTML = ""; c.reads.append(el("b", "", fmtRate(reads)), " reads/s");
    c.writes.innerHTML = ""; c.writes.append(el("b", "", fmtRate(writes)), " writes/s");
    c.reads.dataset.readsPerS = reads === undefined ? "" : String(reads);
    c.writes.dataset.writesPerS = writes === undefined ? "" : String(writes);
    const active = node.pools.reduce((s, p) => s + p.active, 0), idle = node.pools.reduce((s, p) => s + p.idle, 0), waiting = node.pools.reduce((s, p) => s + p.waiting, 0);
    c.detail.textContent = "in flight " + node.inflight + " · pool " + active + " active / " + idle + " idle" + (waiting ? " / " + waiting + " waiting" : "");
    if (node.role === "primary") { c.lag.style.display = "none"; continue; }
    c.lag.style.display = "";
    const lagMs = node.lag_seconds === null ? null : node.lag_seconds * 1000;
    const fraction = lagMs === null ? 0 : Math.min(1, lagMs / Math.max(1, status.max_lag_ms));
    c.fill.style.width = (lagMs === null ? 100 : Math.max(fraction * 100, lagMs > 0 ? 2 : 0)).toFixed(1) + "%";
    c.fill.className = "lag-fill " + (lagMs === null ? "unknown" : fraction >= 1 ? "over" : fraction >= 0.5 ? "warn" : "");
    c.fill.dataset.lagMs = lagMs === null ? "" : String(lagMs);
    c.fill.dataset.lagFraction = lagMs === null ? "" : String(fraction);
    c.lagText.textContent = lagMs === null ? "lag not measured yet" : "lag " + fmtMs(lagMs) + " of " + fmtMs(status.max_lag_ms) + " · " + fmtBytes(node.lag_bytes) + (node.replay_paused ? " · replay paused" : "");
  }
  for (const [name, c] of cards) if (!seen.has(name)) { c.root.remove(); cards.delete(name); }
  $("reads").textContent = anyRate ? fmtRate(totalReads) : "…";
  $("writes").textContent = anyRate ? fmtRate(totalWrites) : "…";
  renderCapabilities(status.capabilities);
  drawLines(status);
  previous = status;
}

const CAPABILITY_NAMES = { replica_reads: "replica reads", failover: "failover", switchover: "switchover" };
function renderCapabilities(caps) {
  const box = $("capabilities");
  box.innerHTML = "";
  if (!caps) return;
  for (const key of Object.keys(CAPABILITY_NAMES)) {
    const cap = caps[key];
    const item = el("div", "cap");
    item.dataset.capability = key;
    item.dataset.state = cap ? cap.state : "unknown";
    item.append(el("b", "", CAPABILITY_NAMES[key]), el("span", "state", cap ? cap.state : "not checked"), cap ? cap.reason : "");
    const grants = (caps.shortfalls || []).filter((s) => s.features ? s.features.includes(key) : true).map((s) => s.grant);
    if (cap && cap.state !== "ok" && grants.length > 0) item.append(el("div", "grants", [...new Set(grants)].join("\\n")));
    box.append(item);
  }
}

function drawLines(status) {
  const svg = $("lines");
  const stage = $("stage").getBoundingClientRect();
  while (svg.firstChild) svg.firstChild.remove();
  const primary = status.primary && cards.get(status.primary);
  if (!primary) return;
  const p = primary.root.getBoundingClientRect();
  for (const node of status.nodes) {
    if (node.name === status.primary) continue;
    const c = cards.get(node.name);
    if (!c) continue;
    const r = c.root.getBoundingClientRect();
    const line = document.createElementNS("http://www.w3.org/2000/svg", "line");
    line.setAttribute("x1", String(p.left + p.width / 2 - stage.left));
    line.setAttribute("y1", String(p.bottom - stage.top));
    line.setAttribute("x2", String(r.left + r.width / 2 - stage.left));
    line.setAttribute("y2", String(r.top - stage.top));
    line.setAttribute("stroke", node.health === "up" ? "#4b6a88" : node.health === "stale" ? "#d29922" : "#6e7681");
    line.setAttribute("stroke-width", node.role === "standby" ? "3" : "2");
    if (node.role !== "standby") line.setAttribute("stroke-dasharray", "6 5");
    svg.append(line);
  }
}

async function tick() {
  try {
    const response = await fetch("/status", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
    $("error").style.display = "none";
    $("updated").textContent = new Date().toLocaleTimeString();
  } catch (error) {
    $("error").textContent = "cannot read /status: " + (error && error.message ? error.message : error) + " (retrying every second)";
    $("error").style.display = "block";
  } finally {
    setTimeout(tick, 1000);
  }
}
window.addEventListener("resize", () => current && drawLines(current));
tick();
</script>
</body>
</html>
`;
