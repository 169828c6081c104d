// GET /dashboard: a small self-contained status page (no CDN, no build step), refreshed from
// GET /admin/status every 2 s. When admin.token is set, the page asks for it once and keeps it
// in sessionStorage; the token is sent as a bearer header, never in a URL.
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sluice status</title>
<style>
:root{--bg:#0f1419;--fg:#e6e6e6;--mut:#8b949e;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--card:#161b22;--line:#30363d}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;gap:16px;align-items:baseline;padding:14px 20px;border-bottom:1px solid var(--line)}
h1{font-size:18px;margin:0}h2{font-size:15px;margin:20px 0 8px}main{padding:0 20px 30px}
.pill{padding:2px 10px;border-radius:10px;font-weight:600}.ready{background:#12361f;color:var(--ok)}.degraded{background:#3a2e0f;color:var(--warn)}.not-ready{background:#3d1418;color:var(--bad)}
table{border-collapse:collapse;width:100%;background:var(--card);border:1px solid var(--line)}th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line)}th{color:var(--mut);font-weight:500}
td.num{text-align:right;font-variant-numeric:tabular-nums}.closed{color:var(--ok)}.open{color:var(--bad)}.half-open{color:var(--warn)}
.meta{color:var(--mut)}#err{color:var(--bad)}#login{display:none;margin:20px}input{background:var(--card);color:var(--fg);border:1px solid var(--line);padding:6px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:var(--card);border:1px solid var(--line);padding:10px 14px;min-width:150px}.card b{display:block;font-size:20px}
</style></head><body>
<header><h1>Sluice</h1><span id="state" class="pill">…</span><span class="meta" id="meta"></span><span id="err"></span></header>
<form id="login"><label>Admin token <input id="token" type="password" autocomplete="off"></label> <button>Show</button></form>
<main>
<div class="cards" id="cards"></div>
<h2>Routes</h2><table id="routes"><thead><tr><th>route</th><th>match</th><th>upstream</th><th>cache</th><th>hit ratio</th><th>requests</th><th>p50</th><th>p95</th><th>p99</th><th>client limit</th></tr></thead><tbody></tbody></table>
<h2>Upstreams</h2><table id="upstreams"><thead><tr><th>upstream</th><th>url</th><th>breaker</th><th>limiter</th><th>pool (connected / running / pending)</th></tr></thead><tbody></tbody></table>
</main>
<script>
const $ = (s) => document.querySelector(s)
const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]))
const ms = (s) => s == null ? '–' : (s * 1000 < 10 ? (s * 1000).toFixed(2) : (s * 1000).toFixed(0)) + ' ms'
const pct = (r) => r == null ? '–' : (r * 100).toFixed(1) + '%'
const mb = (b) => b == null ? '–' : (b / 1048576).toFixed(1) + ' MB'
function row (cells) { return '<tr>' + cells.map((c) => '<td' + (c && c.num ? ' class="num"' : '') + '>' + (c && c.html !== undefined ? c.html : esc(c && c.num !== undefined ? c.v : c)) + '</td>').join('') + '</tr>' }
async function tick () {
  const token = sessionStorage.getItem('sluice-token') || ''
  let res
  try { res = await fetch('/admin/status', { headers: token ? { authorization: 'Bearer ' + token } : {} }) } catch (e) { $('#err').textContent = 'unreachable'; return }
  if (res.status === 401) { $('#login').style.display = 'block'; $('#err').textContent = 'token required'; return }
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
}
$('#login').addEventListener('submit', (e) => { e.preventDefault(); sessionStorage.setItem('sluice-token', $('#token').value); tick() })
tick(); setInterval(tick, 2000)
</script></body></html>
`
