/// The live dashboard: one self-contained page (no external assets) that polls `/status`. The
/// admin token, when there is one, is given in the URL fragment (`/#token=...`), which browsers
/// never send to the server, and is then sent as a bearer token by the page's own requests.
enum Dashboard {
    static let html = #"""
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Proxima</title>
<style>
:root { --bg:#0f1419; --panel:#171d24; --line:#26303b; --text:#e6edf3; --dim:#8b98a5;
        --ok:#3fb950; --redir:#58a6ff; --client:#d29922; --server:#f85149; --other:#6e7681; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--text); font:14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
header { display:flex; align-items:baseline; gap:16px; padding:14px 24px; border-bottom:1px solid var(--line); }
header h1 { font-size:18px; margin:0; letter-spacing:.5px; }
header .meta { color:var(--dim); }
header .state { margin-left:auto; font-weight:600; }
.state.ok { color:var(--ok); } .state.bad { color:var(--server); }
main { padding:18px 24px; display:grid; gap:16px; grid-template-columns: repeat(12, 1fr); }
.card { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:14px 16px; }
.kpi { grid-column: span 2; }
.kpi .label { color:var(--dim); font-size:12px; text-transform:uppercase; letter-spacing:.6px; }
.kpi .value { font-size:28px; font-weight:650; margin-top:4px; font-variant-numeric: tabular-nums; }
.kpi .unit { font-size:14px; color:var(--dim); font-weight:400; margin-left:4px; }
.wide { grid-column: span 8; } .side { grid-column: span 4; } .half { grid-column: span 6; } .third { grid-column: span 4; }
h2 { font-size:13px; color:var(--dim); text-transform:uppercase; letter-spacing:.6px; margin:0 0 10px; font-weight:600; }
svg { width:100%; height:220px; display:block; }
.legend { display:flex; gap:14px; margin-top:8px; color:var(--dim); font-size:12px; }
.legend i { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:5px; vertical-align:-1px; }
table { width:100%; border-collapse:collapse; font-variant-numeric: tabular-nums; }
td, th { padding:5px 4px; border-bottom:1px solid var(--line); text-align:left; }
th { color:var(--dim); font-weight:500; font-size:12px; }
td.n, th.n { text-align:right; }
.bar { height:6px; background:var(--redir); border-radius:3px; opacity:.7; }
#top-denied .bar { background:var(--server); }
.muted { color:var(--dim); }
.status-grid { display:grid; grid-template-columns: repeat(3, 1fr); gap:8px; }
.status-grid div { padding:8px; border-radius:6px; background:#10161c; }
.status-grid b { display:block; font-size:20px; font-variant-numeric: tabular-nums; }
@media (max-width: 1100px) { .kpi { grid-column: span 4; } .wide, .side, .half, .third { grid-column: span 12; } }
</style>
</head>
<body>
<header>
  <h1>Proxima</h1>
  <span class="meta">version <span id="version">–</span> · up <span id="uptime">–</span></span>
  <span id="state" class="state">connecting…</span>
</header>
<main>
  <div class="card kpi"><div class="label">Requests / s</div><div class="value"><span id="rps">–</span></div></div>
  <div class="card kpi"><div class="label">Requests</div><div class="value"><span id="total-requests">–</span></div></div>
  <div class="card kpi"><div class="label">Connections</div><div class="value"><span id="open-connections">–</span></div></div>
  <div class="card kpi"><div class="label">Tunnels</div><div class="value"><span id="open-tunnels">–</span></div></div>
  <div class="card kpi"><div class="label">Errors (5xx)</div><div class="value"><span id="error-ratio">–</span><span class="unit">%</span></div></div>
  <div class="card kpi"><div class="label">Log records dropped</div><div class="value"><span id="log-dropped">–</span></div></div>

  <div class="card wide">
    <h2>Requests per second, last 5 minutes</h2>
    <svg id="chart" viewBox="0 0 900 220" preserveAspectRatio="none"></svg>
    <div class="legend">
      <span><i style="background:var(--ok)"></i>2xx</span><span><i style="background:var(--redir)"></i>3xx</span>
      <span><i style="background:var(--client)"></i>4xx</span><span><i style="background:var(--server)"></i>5xx</span>
      <span><i style="background:var(--other)"></i>1xx / none</span>
      <span style="margin-left:auto">peak <span id="chart-peak">0</span>/s</span>
    </div>
  </div>
  <div class="card side">
    <h2>Latency, last minute</h2>
    <table>
      <tr><th>percentile</th><th class="n">ms</th></tr>
      <tr><td>p50</td><td class="n" id="p50">–</td></tr>
      <tr><td>p90</td><td class="n" id="p90">–</td></tr>
      <tr><td>p99</td><td class="n" id="p99">–</td></tr>
      <tr><td class="muted">requests measured</td><td class="n muted" id="latency-count">–</td></tr>
    </table>
    <h2 style="margin-top:16px">Status classes (all time)</h2>
    <div class="status-grid">
      <div><span class="muted">2xx</span><b id="status-2xx">–</b></div>
      <div><span class="muted">3xx</span><b id="status-3xx">–</b></div>
      <div><span class="muted">4xx</span><b id="status-4xx">–</b></div>
      <div><span class="muted">5xx</span><b id="status-5xx">–</b></div>
      <div><span class="muted">1xx</span><b id="status-1xx">–</b></div>
      <div><span class="muted">none</span><b id="status-none">–</b></div>
    </div>
  </div>

  <div class="card third"><h2>Top hosts</h2><table id="top-hosts"></table></div>
  <div class="card third"><h2>Top denied</h2><table id="top-denied"></table></div>
  <div class="card third">
    <h2>Cache</h2><p class="muted" id="cache">–</p>
    <h2 style="margin-top:16px">Upstreams</h2>
    <p><span id="upstream-idle">–</span> idle pooled connections</p>
    <p class="muted" id="upstream-groups">–</p>
  </div>
  <div class="card half"><h2>Listeners</h2><table id="listeners"></table></div>
  <div class="card half"><h2>Process</h2><table id="process"></table></div>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const $ = id => document.getElementById(id);
const fmt = n => n.toLocaleString("en-US");
function esc(s) { return String(s).replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"})[c]); }
function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}
function hostTable(el, rows) {
  if (!rows.length) { el.innerHTML = '<tr><td class="muted">none yet</td></tr>'; return; }
  const max = rows[0].requests;
  el.innerHTML = '<tr><th>host</th><th class="n">requests</th></tr>' + rows.map(r =>
    `<tr data-host="${esc(r.host)}" data-count="${r.requests}"><td>${esc(r.host)}<div class="bar" style="width:${Math.max(2, 100 * r.requests / max)}%"></div></td><td class="n">${fmt(r.requests)}</td></tr>`).join("");
}
function chart(history) {
  const svg = $("chart"), W = 900, H = 220, N = 300;
  const colors = ["--other", "--other", "--ok", "--redir", "--client", "--server"];
  const order = [2, 3, 4, 5, 1, 0];
  const points = history.slice(-N);
  const peak = Math.max(1, ...points.map(p => p.slice(1).reduce((a, b) => a + b, 0)));
  $("chart-peak").textContent = fmt(peak);
  const w = W / N;
  let out = "";
  for (let g = 1; g <= 4; g++) out += `<line x1="0" x2="${W}" y1="${H - g * H / 4}" y2="${H - g * H / 4}" stroke="#26303b" stroke-width="1"/>`;
  points.forEach((p, i) => {
    let y = H;
    const x = (N - points.length + i) * w;
    for (const c of order) {
      const v = p[1 + c];
      if (!v) continue;
      const h = v / peak * (H - 4);
      y -= h;
      out += `<rect x="${x.toFixed(2)}" y="${y.toFixed(2)}" width="${Math.max(1, w - 0.6).toFixed(2)}" height="${h.toFixed(2)}" fill="var(${colors[c]})"/>`;
    }
  });
  svg.innerHTML = out;
}
async function refresh() {
  try {
    const res = await fetch("/status", { headers: token ? { Authorization: "Bearer " + token } : {}, cache: "no-store" });
    if (res.status === 401) throw new Error("token needed: open /#token=YOUR_TOKEN");
    if (!res.ok) throw new Error("status " + res.status);
    const s = await res.json();
    $("version").textContent = s.version;
    $("uptime").textContent = duration(s.uptime_seconds);
    $("state").textContent = s.draining ? "draining" : "serving";
    $("state").className = "state " + (s.draining ? "bad" : "ok");
    $("rps").textContent = s.requests_per_second.toFixed(1);
    $("total-requests").textContent = fmt(s.requests);
    $("open-connections").textContent = fmt(s.open_connections);
    $("open-tunnels").textContent = fmt(s.listeners.reduce((a, l) => a + l.open_tunnels, 0));
    const by = s.requests_by_status;
    $("error-ratio").textContent = s.requests ? (100 * by["5xx"] / s.requests).toFixed(1) : "0.0";
    $("log-dropped").textContent = fmt(s.access_log_dropped);
    for (const k of ["1xx", "2xx", "3xx", "4xx", "5xx", "none"]) $("status-" + k).textContent = fmt(by[k] || 0);
    const lat = s.latency_ms;
    $("p50").textContent = lat ? lat.p50.toFixed(3) : "–";
    $("p90").textContent = lat ? lat.p90.toFixed(3) : "–";
    $("p99").textContent = lat ? lat.p99.toFixed(3) : "–";
    $("latency-count").textContent = lat ? fmt(lat.count) : "0";
    hostTable($("top-hosts"), s.top_hosts);
    hostTable($("top-denied"), s.top_denied);
    $("cache").textContent = s.cache || "The cache is off (cache.memory or cache.disk in the configuration).";
    $("upstream-idle").textContent = fmt(s.upstream_idle_connections);
    const groups = Object.keys(s.upstreams || {}).sort();
    $("upstream-groups").textContent = groups.length
      ? groups.map(g => g + ": " + s.upstreams[g].map(v => v.name + (v.up && !v.ejected ? " up" : v.ejected ? " ejected" : " DOWN") + (v.backup ? " (backup)" : "") + ", " + v.active + " in flight").join("; ")).join(" | ")
      : "No upstream groups (forward proxy only): no health checks to show.";
    $("listeners").innerHTML = '<tr><th>name</th><th>address</th><th class="n">connections</th><th class="n">requests</th></tr>' +
      s.listeners.map(l => `<tr><td>${esc(l.name)}</td><td>${esc(l.address)}</td><td class="n">${fmt(l.open_connections)}</td><td class="n">${fmt(l.requests)}</td></tr>`).join("");
    $("process").innerHTML = [["started", new Date(s.start_time * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC"],
      ["DNS lookups", fmt(s.dns_lookups)], ["idle upstream connections", fmt(s.upstream_idle_connections)],
      ["log records dropped", fmt(s.access_log_dropped)]].map(([k, v]) => `<tr><td>${k}</td><td class="n">${v}</td></tr>`).join("");
    chart(s.history);
    document.body.dataset.loaded = "yes";
  } catch (e) {
    $("state").textContent = e.message;
    $("state").className = "state bad";
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""#
}
