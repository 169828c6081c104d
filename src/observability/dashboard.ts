// GET /dashboard: a small self-contained status page (no CDN, no build step), refreshed from
// GET /admin/status every 2 s. When admin.token is set, the page asks for it once and keeps it
// in sessionStorage; the token is sent as a bearer header, never in a URL.
// Beside the tables, charts of the last minutes (request rate, p50/p99 latency, cache hit
// ratio, upstream errors) drawn with uPlot, which the admin port serves itself
// (/admin/assets/uplot.js and .css); their data is the server's ring buffer of samples,
// GET /admin/status/history (fetched whole once, then only the samples after the last one).
// The uPlot instances are on window.sluiceCharts (the browser test reads them).
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sluice status</title>
<link rel="stylesheet" href="/admin/assets/uplot.css">
<script src="/admin/assets/uplot.js"></script>
<style>
:root{--bg:#0f1419;--fg:#e6e6e6;--mut:#8b949e;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--card:#161b22;--line:#30363d}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;gap:16px;align-items:baseline;padding:14px 20px;border-bottom:1px solid var(--line)}
h1{font-size:18px;margin:0}h2{font-size:15px;margin:20px 0 8px}main{padding:0 20px 30px}
.pill{padding:2px 10px;border-radius:10px;font-weight:600}.ready{background:#12361f;color:var(--ok)}.degraded{background:#3a2e0f;color:var(--warn)}.not-ready{background:#3d1418;color:var(--bad)}
table{border-collapse:collapse;width:100%;background:var(--card);border:1px solid var(--line)}th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line)}th{color:var(--mut);font-weight:500}
td.num{text-align:right;font-variant-numeric:tabular-nums}.closed{color:var(--ok)}.open{color:var(--bad)}.half-open{color:var(--warn)}
.meta{color:var(--mut)}#err{color:var(--bad)}#login{display:none;margin:20px}input{background:var(--card);color:var(--fg);border:1px solid var(--line);padding:6px}
.layout{display:grid;grid-template-columns:minmax(0,1fr) 460px;gap:0 24px;align-items:start}@media (max-width:1100px){.layout{grid-template-columns:minmax(0,1fr)}}
.charts .chart{background:var(--card);border:1px solid var(--line);padding:6px 8px;margin-bottom:10px}.charts .chart h3{font-size:13px;font-weight:500;color:var(--mut);margin:0 0 4px}
.uplot{font-family:inherit;color:var(--fg)}.u-legend{font-size:12px;color:var(--fg)}.u-legend .u-marker{border-radius:2px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:var(--card);border:1px solid var(--line);padding:10px 14px;min-width:150px}.card b{display:block;font-size:20px}
</style></head><body>
<header><h1>Sluice</h1><span id="state" class="pill">…</span><span class="meta" id="meta"></span><span id="err"></span></header>
<form id="login"><label>Admin token <input id="token" type="password" autocomplete="off"></label> <button>Show</button></form>
<main>
<div class="cards" id="cards"></div>
<div class="layout"><div class="tables">
<h2>Routes</h2><table id="routes"><thead><tr><th>route</th><th>match</th><th>upstream</th><th>cache</th><th>hit ratio</th><th>requests</th><th>p50</th><th>p95</th><th>p99</th><th>client limit</th></tr></thead><tbody></tbody></table>
<h2>Upstreams</h2><table id="upstreams"><thead><tr><th>upstream</th><th>url</th><th>breaker</th><th>limiter</th><th>pool (connected / running / pending)</th></tr></thead><tbody></tbody></table>
</div><section class="charts" id="charts"><h2>Last <span id="window">10</span> minutes</h2>
<div class="chart" id="chart-rate"><h3>Request rate (req/s)</h3></div>
<div class="chart" id="chart-latency"><h3>Latency p50 / p99 (ms)</h3></div>
<div class="chart" id="chart-hit"><h3>Cache hit ratio (%)</h3></div>
<div class="chart" id="chart-errors"><h3>Upstream errors (5xx + connection errors per s)</h3></div>
</section></div>
</main>
<script>
const $ = (s) => document.querySelector(s)
const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]))
const ms = (s) => s == null ? '–' : (s * 1000 < 10 ? (s * 1000).toFixed(2) : (s * 1000).toFixed(0)) + ' ms'
const pct = (r) => r == null ? '–' : (r * 100).toFixed(1) + '%'
const mb = (b) => b == null ? '–' : (b / 1048576).toFixed(1) + ' MB'
function row (cells) { return '<tr>' + cells.map((c) => '<td' + (c && c.num ? ' class="num"' : '') + '>' + (c && c.html !== undefined ? c.html : esc(c && c.num !== undefined ? c.v : c)) + '</td>').join('') + '</tr>' }
// Charts: one sample per interval from the server's history, kept for its window.
const CHARTS = [
  { id: 'rate', series: [{ label: 'req/s', stroke: '#58a6ff', fill: 'rgba(88,166,255,0.12)' }], pick: (s) => [s.rps], dec: 1 },
  { id: 'latency', series: [{ label: 'p50', stroke: '#3fb950' }, { label: 'p99', stroke: '#d29922' }], pick: (s) => [s.p50 == null ? null : s.p50 * 1000, s.p99 == null ? null : s.p99 * 1000], dec: 2 },
  { id: 'hit', series: [{ label: 'hit %', stroke: '#a371f7', fill: 'rgba(163,113,247,0.12)' }], pick: (s) => [s.hitRatio == null ? null : s.hitRatio * 100], dec: 1, range: [0, 100] },
  { id: 'errors', series: [{ label: 'errors/s', stroke: '#f85149', fill: 'rgba(248,81,73,0.12)' }], pick: (s) => [s.upstreamErrorsPerSecond], dec: 2 }
]
const charts = {}
window.sluiceCharts = charts
let samples = []
let lastT = null
let windowMs = 600000
function chartWidth () { return Math.max(260, ($('#charts').clientWidth || 460) - 18) }
function chartData (c) {
  const xs = samples.map((s) => s.t / 1000)
  const ys = c.series.map((_, i) => samples.map((s) => c.pick(s)[i]))
  return [xs, ...ys]
}
function drawCharts () {
  if (typeof uPlot === 'undefined') { $('#charts').style.display = 'none'; return }
  const axis = { stroke: '#8b949e', grid: { stroke: '#30363d', width: 1 }, ticks: { stroke: '#30363d', width: 1 } }
  for (const c of CHARTS) {
    const data = chartData(c)
    if (charts[c.id]) { charts[c.id].setData(data); continue }
    charts[c.id] = new uPlot({
      width: chartWidth(),
      height: 130,
      scales: { x: { time: true }, y: c.range ? { range: c.range } : { range: (u, min, max) => [0, Math.max(max || 0, c.id === 'hit' ? 100 : 1) * 1.1] } },
      axes: [axis, { ...axis, size: 50 }],
      legend: { show: c.series.length > 1 },
      series: [{}, ...c.series.map((s) => ({ ...s, width: 1.5, spanGaps: false, value: (u, v) => v == null ? '–' : v.toFixed(c.dec) }))]
    }, data, $('#chart-' + c.id))
  }
}
window.addEventListener('resize', () => { for (const u of Object.values(charts)) u.setSize({ width: chartWidth(), height: 130 }) })
async function history (headers) {
  let res
  try { res = await fetch('/admin/status/history' + (lastT == null ? '' : '?since=' + lastT), { headers }) } catch (e) { return }
  if (!res.ok) return
  const h = await res.json()
  windowMs = (h.intervalMs || 2000) * (h.capacity || 300)
  $('#window').textContent = String(Math.round(windowMs / 60000))
  for (const s of h.samples || []) if (lastT == null || s.t > lastT) samples.push(s)
  if (samples.length) lastT = samples[samples.length - 1].t
  const cutoff = Date.now() - windowMs
  samples = samples.filter((s) => s.t >= cutoff)
  drawCharts()
}
// After a 401 the page stops asking until a token is submitted: a wrong token sent every two
// seconds would count as failed logins and lock this address out of the admin API.
let needToken = false
async function tick () {
  if (needToken) return
  const token = sessionStorage.getItem('sluice-token') || ''
  let res
  try { res = await fetch('/admin/status', { headers: token ? { authorization: 'Bearer ' + token } : {} }) } catch (e) { $('#err').textContent = 'unreachable'; return }
  if (res.status === 401) { needToken = true; sessionStorage.removeItem('sluice-token'); $('#login').style.display = 'block'; $('#err').textContent = token ? 'wrong token' : 'token required'; return }
  if (!res.ok) { $('#err').textContent = 'HTTP ' + res.status; return }
  $('#err').textContent = ''; $('#login').style.display = 'none'
  const s = await res.json()
  $('#state').textContent = s.status + (s.degraded.length ? ': ' + s.degraded.join(', ') : '')
  $('#state').className = 'pill ' + s.status
  $('#meta').textContent = 'v' + s.version + ' · config ' + s.configVersion + ' · up ' + s.uptimeSeconds + ' s · RSS ' + mb(s.memory.rssBytes)
  const c = s.cache || {}
  $('#cards').innerHTML = [['routes', s.routes.length], ['upstreams', Object.keys(s.upstreams).length], ['L1 entries', c.memory ? c.memory.entries : (c.entries ?? '–')], ['L1 size', mb(c.memory ? c.memory.bytes : c.bytes)]]
    .map(([k, v]) => '<div class="card"><span class="meta">' + esc(k) + '</span><b>' + esc(v) + '</b></div>').join('')
  $('#routes tbody').innerHTML = s.routes.map((r) => row([r.name, (r.host === '*' ? '' : r.host) + r.pathPrefix + (r.methods ? ' [' + r.methods.join(',') + ']' : ''), r.upstream, r.cache ? 'on' : 'off', pct(r.cacheHitRatio), { num: 1, v: r.latency.count }, { num: 1, v: ms(r.latency.p50) }, { num: 1, v: ms(r.latency.p95) }, { num: 1, v: ms(r.latency.p99) }, r.clientLimit || '–'])).join('')
  $('#upstreams tbody').innerHTML = Object.entries(s.upstreams).map(([name, u]) => {
    const b = u.breaker ? u.breaker.state : 'closed'
    const lim = u.limiter
    const l = !lim || !lim.configured ? 'none' : lim.requestsPerSecond + '/s, burst ' + lim.burst + (lim.local ? ' (local bucket)' : ' (shared)') +
      (lim.pausedForMs > 0 ? ', paused ' + Math.ceil(lim.pausedForMs / 1000) + ' s' : '') + (lim.rateFactor < 1 ? ', slowed to ' + Math.round(lim.rateFactor * 100) + '%' : '')
    const p = u.pool || {}
    const ts = Array.isArray(u.targets) ? u.targets : []
    const url = ts.length > 1
      ? { html: ts.map((t) => '<div>' + esc(t.target) + ' w' + esc(t.weight) + ' <span class="' + (!t.healthy || t.ejected ? 'open' : 'closed') + '">' + (!t.healthy ? 'unhealthy' : t.ejected ? 'ejected' : 'up') + '</span></div>').join('') }
      : u.url
    return row([name, url, { html: '<span class="' + esc(b) + '">' + esc(b) + '</span>' }, l, (p.connected ?? 0) + ' / ' + (p.running ?? 0) + ' / ' + (p.pending ?? 0)])
  }).join('')
  await history(token ? { authorization: 'Bearer ' + token } : {})
}
$('#login').addEventListener('submit', (e) => { e.preventDefault(); sessionStorage.setItem('sluice-token', $('#token').value); needToken = false; tick() })
tick(); setInterval(tick, 2000)
</script></body></html>
`
