"""The `/ui` page: one self-contained HTML document (inline CSS, JS and SVG; nothing loaded from
elsewhere, so it works on an air-gapped bastion).

It fetches `/status` and `/history` (every policy in one request) from the daemon that served
it, every scrape interval, without reloading: the first `/history` asks for the whole buffer,
later ones only for the seconds since the last answer, merged into what the page holds. One
panel per policy: the metric (the tick's total over the counted pods) against target × ready,
ready and desired replicas as steps, panic (and schedule) windows shaded, the last reason and
the last error in words. Policies with a problem (an error, no decision, missing data) come
first; a filter box narrows the list. Refreshing pauses while the tab is hidden, and charts
are drawn only for panels on (or near) the screen, so 100 policies cost what a few do.

Everything that comes from the daemon is written with `textContent` or as numbers into SVG
attributes, never as markup. For tests, `document.body.dataset.refreshes` counts completed
refreshes and each panel carries `data-policy` and fields with `data-field`.

Longer than most modules: it is one document, and splitting it would only scatter it.
"""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>autoscalerd</title>
<style>
:root { --fg:#1d232b; --muted:#5d6875; --bg:#f4f6f8; --card:#fff; --line:#d9dee4;
  --metric:#1f6fd1; --target:#e07b00; --ready:#2b9348; --desired:#7b2cbf; --panic:#d62828;
  --sched:#2a9d8f; --bad:#b00020; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color:var(--fg); background:var(--bg); }
header { position:sticky; top:0; z-index:2; background:#1d232b; color:#fff; padding:8px 16px;
  display:flex; flex-wrap:wrap; gap:8px 18px; align-items:center; }
header h1 { font-size:16px; margin:0; font-weight:600; }
header .sum { color:#c9d1da; }
header input[type=search] { padding:4px 8px; border-radius:4px; border:0; min-width:220px; }
header label, header select { color:#c9d1da; font-size:13px; }
header select { color:var(--fg); }
#banner { display:none; background:var(--bad); color:#fff; padding:6px 16px; }
#banner.on { display:block; }
main { padding:12px; display:grid; gap:12px;
  grid-template-columns:repeat(auto-fill, minmax(440px, 1fr)); }
.panel { background:var(--card); border:1px solid var(--line); border-radius:6px;
  padding:10px 12px; min-width:0; }
.panel.problem { border-left:4px solid var(--bad); }
.panel h2 { font-size:14px; margin:0 0 2px; display:flex; gap:8px; align-items:baseline;
  flex-wrap:wrap; }
.panel h2 .name { font-weight:600; overflow-wrap:anywhere; }
.panel .meta { color:var(--muted); font-size:12px; }
.badge { font-size:11px; padding:1px 6px; border-radius:8px; background:#e6eaef;
  color:var(--fg); font-weight:500; }
.badge.panic { background:var(--panic); color:#fff; }
.badge.problem { background:var(--bad); color:#fff; }
.now { display:flex; flex-wrap:wrap; gap:2px 14px; margin:4px 0; font-size:13px; }
.now b { font-variant-numeric:tabular-nums; }
svg { display:block; width:100%; height:auto; background:#fbfcfd; border:1px solid #eef1f4; }
svg text { font-size:10px; fill:var(--muted); }
.legend { font-size:11px; color:var(--muted); display:flex; gap:12px; flex-wrap:wrap;
  margin:2px 0 4px; }
.legend i { display:inline-block; width:14px; height:3px; vertical-align:middle;
  margin-right:4px; }
.reason, .error { font-size:12px; margin-top:4px; overflow-wrap:anywhere; }
.error { color:var(--bad); }
.error.none { color:var(--muted); }
#empty { padding:24px; color:var(--muted); }
</style>
</head>
<body>
<header>
  <h1>autoscalerd</h1>
  <span class="sum" id="summary">loading…</span>
  <input type="search" id="filter" placeholder="filter: namespace, name, reason, error…"
    aria-label="filter policies">
  <label><input type="checkbox" id="only-problems"> only problems</label>
  <label>window <select id="span">
    <option value="0">auto</option><option value="300">5 min</option>
    <option value="900">15 min</option><option value="3600">1 h</option>
  </select></label>
  <span class="sum" id="refreshed"></span>
</header>
<div id="banner" role="alert"></div>
<main id="panels"></main>
<div id="empty" hidden>No policy matches.</div>
<script>
"use strict";
const W = 600, HM = 110, HR = 60, PAD = 30;
const state = { status: null, series: new Map(), panels: new Map(), interval: 1,
  historyLen: 3600, lastEnd: null, now: null, refreshes: 0, timer: null, historyOff: false };
const $ = (id) => document.getElementById(id);
const NS = "http://www.w3.org/2000/svg";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function svgEl(tag, attrs) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}
function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(1) : String(Number(v.toPrecision(4)));
}
function key(p) { return p.namespace + "/" + p.name; }
function problem(p) {
  return Boolean(p.last_error) || p.desired_replicas === null ||
    ["no-data", "partial-data", "target-at-zero", "fallback"].includes(p.reason);
}

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) { const e = new Error(body.error || (path + ": HTTP " + r.status)); e.status = r.status; throw e; }
  return body;
}

// Targets come as [[index, target], ...] change points; the page keeps one per point.
function expand(changes, n) {
  const out = new Array(n).fill(null);
  let j = 0, cur = null;
  for (let i = 0; i < n; i++) {
    while (j < changes.length && changes[j][0] <= i) { cur = changes[j][1]; j++; }
    out[i] = cur;
  }
  return out;
}

// Merge a /history window into the series the page holds (by time, not by position).
function merge(old, w) {
  if (!w || !w.points) return old;
  const iv = w.interval_seconds;
  const fresh = { start: w.start, iv: iv, ready: w.ready.slice(), desired: w.desired.slice(),
    panic: w.panic.slice(), schedule: w.schedule.slice(), error: w.error.slice(),
    metrics: w.metrics.map((m) => ({ name: m.name, values: m.values.slice(), targets: expand(m.targets, w.points) })) };
  if (!old || old.iv !== iv || old.metrics.map((m) => m.name).join() !== fresh.metrics.map((m) => m.name).join()) return fresh;
  const off = Math.round((w.start - old.start) / iv);
  if (off < 0 || off - old.ready.length > Math.ceil(state.historyLen / iv)) return fresh;
  // keep what came before the new window; a gap between the two stays a gap (nulls)
  const cut = (a, b) => (a.length >= off ? a.slice(0, off) : a.concat(new Array(off - a.length).fill(null))).concat(b);
  const out = { start: old.start, iv: iv, ready: cut(old.ready, fresh.ready),
    desired: cut(old.desired, fresh.desired), panic: cut(old.panic, fresh.panic),
    schedule: cut(old.schedule, fresh.schedule), error: cut(old.error, fresh.error),
    metrics: old.metrics.map((m, i) => ({ name: m.name, values: cut(m.values, fresh.metrics[i].values),
      targets: cut(m.targets, fresh.metrics[i].targets) })) };
  const keep = Math.ceil(state.historyLen / iv);
  const drop = out.ready.length - keep;
  if (drop > 0) {
    for (const k of ["ready", "desired", "panic", "schedule", "error"]) out[k] = out[k].slice(drop);
    for (const m of out.metrics) { m.values = m.values.slice(drop); m.targets = m.targets.slice(drop); }
    out.start += drop * iv;
  }
  return out;
}

async function refresh() {
  clearTimeout(state.timer);
  try {
    const status = await getJSON("/status");
    state.status = status;
    state.interval = status.scrape_interval_seconds || 1;
    if (!state.historyOff) {
      let path = "/history";
      if (state.lastEnd !== null && state.now !== null)
        path += "?seconds=" + Math.ceil(Math.max(0, state.now - state.lastEnd) + 3 * state.interval + 1);
      try {
        const h = await getJSON(path);
        state.historyLen = h.history_seconds;
        state.now = h.now;
        let end = null;
        const seen = new Set();
        for (const w of h.policies) {
          seen.add(w.policy);
          state.series.set(w.policy, merge(state.series.get(w.policy), w));
          if (w.end !== null && (end === null || w.end > end)) end = w.end;
        }
        for (const k of [...state.series.keys()]) if (!seen.has(k)) state.series.delete(k);
        state.lastEnd = end;
      } catch (e) {
        if (e.status === 404) state.historyOff = true; else throw e;
      }
    }
    render();
    state.refreshes += 1;
    document.body.dataset.refreshes = String(state.refreshes);
    $("banner").classList.remove("on");
    $("refreshed").textContent = "refreshed " + new Date().toLocaleTimeString() +
      " · every " + fmt(state.interval) + " s";
  } catch (e) {
    $("banner").textContent = "Cannot refresh from the daemon: " + e.message + " (retrying)";
    $("banner").classList.add("on");
  }
  schedule();
}
function schedule() {
  clearTimeout(state.timer);
  if (document.hidden) return;
  state.timer = setTimeout(refresh, Math.max(0.5, state.interval) * 1000);
}
document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });

function makePanel(k) {
  const root = el("section", "panel");
  root.dataset.policy = k;
  const h = el("h2");
  const parts = { name: el("span", "name"), badges: el("span"), meta: el("span", "meta") };
  h.append(parts.name, parts.badges, parts.meta);
  const now = el("div", "now");
  const legend = el("div", "legend");
  const chartM = svgEl("svg", { viewBox: `0 0 ${W} ${HM}`, role: "img" });
  const chartR = svgEl("svg", { viewBox: `0 0 ${W} ${HR}`, role: "img" });
  const legend2 = el("div", "legend");
  const reason = el("div", "reason");
  const error = el("div", "error");
  root.append(h, now, legend, chartM, legend2, chartR, reason, error);
  for (const [cls, color, text] of [["metric", "--metric", "metric (total)"], ["target", "--target", "target × ready"],
    ["panic", "--panic", "panic"], ["sched", "--sched", "schedule"]]) {
    const s = el("span"); const i = el("i"); i.style.background = `var(${color})`; s.append(i, text); legend.append(s);
  }
  for (const [color, text] of [["--ready", "ready"], ["--desired", "desired"]]) {
    const s = el("span"); const i = el("i"); i.style.background = `var(${color})`; s.append(i, text); legend2.append(s);
  }
  const panel = { root, parts, now, chartM, chartR, reason, error, visible: false, stale: true, p: null };
  onScreen.observe(root);
  return panel;
}

function field(parent, label, value, name) {
  const s = el("span", null, label + " ");
  const b = el("b", null, value);
  b.dataset.field = name;
  s.append(b);
  parent.append(s);
}

function render() {
  const st = state.status;
  const policies = (st.policies || []).slice();
  const q = $("filter").value.trim().toLowerCase();
  const onlyProblems = $("only-problems").checked;
  policies.sort((a, b) => (problem(b) - problem(a)) || key(a).localeCompare(key(b)));
  const nProblems = policies.filter(problem).length;
  $("summary").textContent = `${policies.length} policies · ${nProblems} with problems · ` +
    (st.leader === null || st.leader === undefined ? "no leader election" : (st.leader ? "leader" : "follower (not writing)")) +
    (st.dry_run ? " · dry run" : "") + ` · v${st.version}`;
  const main = $("panels");
  const live = new Set();
  let shown = 0;
  for (const p of policies) {
    const k = key(p);
    live.add(k);
    let panel = state.panels.get(k);
    if (!panel) { panel = makePanel(k); state.panels.set(k, panel); }
    const text = [k, p.strategy, p.reason, p.detail, p.last_error, p.target].join(" ").toLowerCase();
    const visible = (!q || text.includes(q)) && (!onlyProblems || problem(p));
    panel.root.hidden = !visible;
    main.append(panel.root);  // keeps the sorted order
    if (!visible) continue;
    shown += 1;
    fill(panel, p);
  }
  for (const [k, panel] of state.panels) if (!live.has(k)) { onScreen.unobserve(panel.root); panel.root.remove(); state.panels.delete(k); }
  $("empty").hidden = shown > 0 || policies.length === 0;
  if (policies.length === 0) { $("empty").hidden = false; $("empty").textContent = "The daemon runs no policy."; }
}

function fill(panel, p) {
  const k = key(p);
  panel.root.classList.toggle("problem", problem(p));
  panel.parts.name.textContent = k;
  panel.parts.meta.textContent = `${p.strategy} · ${p.target} · ${p.min_replicas}..${p.max_replicas} replicas`;
  panel.parts.badges.textContent = "";
  if (p.mode) { const b = el("span", "badge" + (p.mode === "panic" ? " panic" : ""), p.mode); b.dataset.field = "mode"; panel.parts.badges.append(b); }
  if (problem(p)) panel.parts.badges.append(el("span", "badge problem", "problem"));
  panel.now.textContent = "";
  const targets = p.targets || {};
  for (const [m, v] of Object.entries(p.metrics || {})) {
    const t = targets[m];
    field(panel.now, m, fmt(v), "metric:" + m);
    if (t !== undefined) {
      const s = el("span", "meta", `target ${fmt(t)} × ${p.ready_pods} ready = ${fmt(t * p.ready_pods)}`);
      panel.now.append(s);
    }
  }
  field(panel.now, "ready", fmt(p.ready_pods), "ready");
  field(panel.now, "desired", fmt(p.desired_replicas), "desired");
  field(panel.now, "current", fmt(p.current_replicas), "current");
  panel.reason.textContent = "";
  const r = el("span", null, p.reason ? p.reason : "no decision yet");
  r.dataset.field = "reason";
  panel.reason.append("last reason: ", r, p.detail ? " — " + p.detail : "");
  panel.error.textContent = "";
  const e = el("span", null, p.last_error || "none");
  e.dataset.field = "error";
  panel.error.classList.toggle("none", !p.last_error);
  panel.error.append("last error: ", e);
  if (p.last_error && p.errors && p.errors.length > 1) panel.error.append(` (+${p.errors.length - 1} more)`);
  panel.p = p;
  if (panel.visible) draw(panel, state.series.get(k), p);
  else panel.stale = true;
}

// Charts are drawn only for panels on (or near) the screen: at 100 policies most are not.
const onScreen = new IntersectionObserver((entries) => {
  for (const e of entries) {
    const panel = state.panels.get(e.target.dataset.policy);
    if (!panel) continue;
    panel.visible = e.isIntersecting;
    if (panel.visible && panel.stale && panel.p) { panel.stale = false; draw(panel, state.series.get(panel.root.dataset.policy), panel.p); }
  }
}, { rootMargin: "300px" });

// Put the points of the window [now - span, now] into `cols` columns: max for the metric
// and the target line, last for replica counts, any for flags; a column without a point
// stays empty (a gap, never a zero).
function columns(s, t0, span, cols) {
  const out = Array.from({ length: cols }, () => ({ metric: [], target: [], ready: null, desired: null, panic: false, schedule: false, present: false }));
  for (let j = 0; j < s.ready.length; j++) {
    const t = s.start + j * s.iv;
    if (t < t0 - 1e-6) continue;
    if (s.ready[j] === null && s.desired[j] === null && s.panic[j] === null) continue;
    const b = out[Math.max(0, Math.min(cols - 1, Math.floor((t - t0) / span * cols)))];
    b.present = true;
    if (s.ready[j] !== null) b.ready = s.ready[j];
    if (s.desired[j] !== null) b.desired = s.desired[j];
    b.panic = b.panic || Boolean(s.panic[j]);
    b.schedule = b.schedule || Boolean(s.schedule[j]);
    s.metrics.forEach((m, mi) => {
      const v = m.values[j], tv = m.targets[j];
      if (v !== null) b.metric[mi] = Math.max(b.metric[mi] ?? -Infinity, v);
      if (tv !== null && s.ready[j] !== null) b.target[mi] = Math.max(b.target[mi] ?? -Infinity, tv * s.ready[j]);
    });
  }
  return out;
}

// An SVG path through per-column values (null = gap); steps hold each value to the next column.
function path(values, xOf, colW, step) {
  let d = "", open = false;
  values.forEach((y, c) => {
    if (y === null || y === undefined) { open = false; return; }
    const x = xOf(c);
    if (!open) { d += `M${x.toFixed(1)},${y.toFixed(1)}`; open = true; }
    else if (step) d += `H${x.toFixed(1)}V${y.toFixed(1)}`;
    else d += `L${x.toFixed(1)},${y.toFixed(1)}`;
    if (step && (c + 1 >= values.length || values[c + 1] === null || values[c + 1] === undefined)) d += `H${(x + colW).toFixed(1)}`;
  });
  return d;
}

function draw(panel, s, p) {
  const cm = panel.chartM, cr = panel.chartR;
  cm.textContent = ""; cr.textContent = "";
  if (!s || !s.ready.length || state.now === null) {
    const t = svgEl("text", { x: W / 2, y: HM / 2, "text-anchor": "middle" });
    t.textContent = state.historyOff ? "history is off (--history-seconds 0)" : "no history yet";
    cm.append(t);
    return;
  }
  const iv = s.iv, now = state.now;
  const chosen = Number($("span").value);
  const span = chosen || Math.min(state.historyLen, Math.max(60, now - s.start + iv));
  const t0 = now - span;
  const x0 = PAD, x1 = W - 4;
  const cols = Math.max(1, Math.min(x1 - x0, Math.ceil(span / iv)));
  const colW = (x1 - x0) / cols;
  const xOf = (c) => x0 + c * colW;
  const bs = columns(s, t0, span, cols);
  // metric chart
  let top = 0;
  for (const b of bs) for (const v of [...b.metric, ...b.target]) if (v !== undefined) top = Math.max(top, v);
  top = top > 0 ? top * 1.1 : 1;
  const yM = (v) => HM - 14 - (v / top) * (HM - 24);
  shade(cm, bs, xOf, colW, "schedule", "var(--sched)", HM - 14);
  shade(cm, bs, xOf, colW, "panic", "var(--panic)", HM - 14);
  axis(cm, HM - 14, top, t0, now);
  s.metrics.forEach((m, mi) => {
    cm.append(svgEl("path", { d: path(bs.map((b) => b.target[mi] === undefined ? null : yM(b.target[mi])), xOf, colW, true),
      fill: "none", stroke: "var(--target)", "stroke-width": 1.5, "stroke-dasharray": "5 3" }));
    cm.append(svgEl("path", { d: path(bs.map((b) => b.metric[mi] === undefined ? null : yM(b.metric[mi])), xOf, colW, false),
      fill: "none", stroke: "var(--metric)", "stroke-width": 1.6, "opacity": mi ? 0.6 : 1 }));
  });
  // replicas chart
  let rTop = Math.max(1, p.max_replicas <= 20 ? p.max_replicas : 1);
  for (const b of bs) rTop = Math.max(rTop, b.ready ?? 0, b.desired ?? 0);
  rTop += 0.5;
  const yR = (v) => HR - 4 - (v / rTop) * (HR - 10);
  shade(cr, bs, xOf, colW, "panic", "var(--panic)", HR);
  const lbl = svgEl("text", { x: 2, y: 10 }); lbl.textContent = fmt(Math.floor(rTop)); cr.append(lbl);
  cr.append(svgEl("line", { x1: x0, x2: x1, y1: yR(0), y2: yR(0), stroke: "#d9dee4" }));
  cr.append(svgEl("path", { d: path(bs.map((b) => b.desired === null ? null : yR(b.desired)), xOf, colW, true),
    fill: "none", stroke: "var(--desired)", "stroke-width": 1.5, "stroke-dasharray": "4 2" }));
  cr.append(svgEl("path", { d: path(bs.map((b) => b.ready === null ? null : yR(b.ready)), xOf, colW, true),
    fill: "none", stroke: "var(--ready)", "stroke-width": 1.8 }));
}

function shade(svg, bs, xOf, colW, flag, color, h) {
  let start = null;
  const close = (c) => { if (start !== null) { svg.append(svgEl("rect", { x: xOf(start), y: 0, width: Math.max(1, (c - start) * colW), height: h, fill: color, opacity: 0.13 })); start = null; } };
  bs.forEach((b, c) => { if (b[flag]) { if (start === null) start = c; } else close(c); });
  close(bs.length);
}

function axis(svg, yBase, top, t0, now) {
  svg.append(svgEl("line", { x1: PAD, x2: W - 4, y1: yBase, y2: yBase, stroke: "#d9dee4" }));
  const t = svgEl("text", { x: 2, y: 10 }); t.textContent = fmt(Number(top.toPrecision(2))); svg.append(t);
  const when = (ts) => new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const a = svgEl("text", { x: PAD, y: HM - 2 }); a.textContent = when(t0); svg.append(a);
  const b = svgEl("text", { x: W - 4, y: HM - 2, "text-anchor": "end" }); b.textContent = when(now); svg.append(b);
}

for (const id of ["filter", "only-problems", "span"]) $(id).addEventListener("input", () => { if (state.status) render(); });
refresh();
</script>
</body>
</html>
"""
