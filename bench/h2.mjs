// The edge listener's cost: a 1 KB L1 cache hit over TLS with h2 (10 streams per connection),
// over TLS with HTTP/1.1, and over cleartext HTTP/1.1, measured with h2load (Debian's
// nghttp2-client) in one run. Sluice runs on core 0 with its shipped V8 flags, h2load on core 1.
//   node bench/h2.mjs [--runs N] [--duration S] [--clients N] [--streams N]
// Prints a table of req/s (median of runs) and the ratio of each to cleartext HTTP/1.1.
// Issue 14's goal: TLS h2 hit >= 0.9x Sluice's own cleartext HTTP/1.1 hit rate.
// The anchor, when nginx is installed: nginx proxy_cache with the same certificate, one worker
// on core 0, cleartext HTTP/1.1 and TLS h2 (`listen ... ssl http2` before 1.25.1, `http2 on`
// after), its own ratio beside Sluice's.
import { spawn, spawnSync, execFileSync } from 'node:child_process'
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import { arg } from './lib/args.mjs'
import { freePort, nodeFlags } from './lib/targets.mjs'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const runs = Number(arg('runs', 'RUNS', 3))
const duration = Number(arg('duration', 'DURATION', 5))
const clients = Number(arg('clients', 'CLIENTS', 10))
const streams = Number(arg('streams', 'STREAMS', 10))
if (spawnSync('h2load', ['--version']).status !== 0) { console.error('h2load is missing: apt-get install nghttp2-client'); process.exit(2) }

const dir = mkdtempSync(path.join(tmpdir(), 'sluice-h2bench-'))
const procs = []
// Each server in its own process group, killed whole: nginx's workers and cache manager too.
process.on('exit', () => { for (const p of procs) { try { process.kill(-p.pid, 'SIGKILL') } catch {} } rmSync(dir, { recursive: true, force: true }) })
const waitPort = async (port) => { for (let i = 0; i < 100; i++) { if (await new Promise((r) => { const c = net.connect(port, '127.0.0.1', () => { c.destroy(); r(true) }); c.on('error', () => r(false)) })) return; await new Promise((r) => setTimeout(r, 100)) } throw new Error(`port ${port} did not open`) }
const start = (core, cmd, args) => { const p = spawn('taskset', ['-c', String(core), cmd, ...args], { stdio: 'ignore', detached: true }); procs.push(p); return p }

execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(dir, 'k.pem'), '-out', path.join(dir, 'c.pem'), '-days', '1', '-subj', '/CN=127.0.0.1'], { stdio: 'ignore' })
const originPort = await freePort()
start(1, process.execPath, [path.join(ROOT, 'bench', 'origin.mjs'), '--port', String(originPort)])
await waitPort(originPort)
const NODE_FLAGS = await nodeFlags(path.join(ROOT, 'dist', 'src', 'cli.js'))

async function sluice (tls) {
  const port = await freePort()
  const admin = await freePort()
  const file = path.join(dir, `${tls ? 'tls' : 'plain'}.yaml`)
  writeFileSync(file, `listen:\n  host: 127.0.0.1\n  port: ${port}\n${tls ? `  tls: { certFile: "${dir}/c.pem", keyFile: "${dir}/k.pem" }\n  http2: true\n` : ''}admin: { host: 127.0.0.1, port: ${admin} }\nlog: { level: warn, accessLog: false }\nupstreams:\n  origin: { url: "http://127.0.0.1:${originPort}" }\nroutes:\n  - name: cached\n    match: { pathPrefix: / }\n    upstream: origin\n    cache: { enabled: true }\n`)
  const p = start(0, process.execPath, [...NODE_FLAGS, path.join(ROOT, 'dist', 'src', 'cli.js'), 'run', '--config', file])
  await waitPort(port)
  return { url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}/hit1k`, proc: p }
}

function h2load (url, h1, d = duration) {
  const args = ['-c', String(clients), '-D', String(d), '--warm-up-time', '1', ...(h1 ? ['--h1'] : ['-m', String(streams)]), url]
  const r = spawnSync('taskset', ['-c', '1', 'h2load', ...args], { encoding: 'utf8' })
  const m = r.stdout.match(/finished in [^,]+, ([\d.]+) req\/s/)
  const ok = r.stdout.match(/requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed/)
  if (!m) throw new Error(`h2load failed: ${r.stdout}${r.stderr}`)
  return { rps: Number(m[1]), failed: ok ? Number(ok[2]) : -1 }
}

/** nginx proxy_cache in front of the same origin, cleartext and TLS (h2) on two ports, or null without nginx. */
async function nginx () {
  const v = spawnSync('nginx', ['-v'], { encoding: 'utf8' })
  if (v.status !== 0) return null
  const [maj, min, pat] = (/nginx\/(\d+)\.(\d+)\.(\d+)/.exec(v.stderr) ?? [0, 0, 0, 0]).slice(1).map(Number)
  const httpOn = maj > 1 || min > 25 || (min === 25 && pat >= 1)
  const port = await freePort()
  const tport = await freePort()
  const conf = path.join(dir, 'nginx.conf')
  writeFileSync(conf, `${process.getuid?.() === 0 ? 'user root;' : ''}
worker_processes 1; daemon off; master_process on; pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off; client_body_temp_path ${dir}/cb; proxy_temp_path ${dir}/pt; fastcgi_temp_path ${dir}/ft; uwsgi_temp_path ${dir}/ut; scgi_temp_path ${dir}/st;
  keepalive_requests 1000000; tcp_nodelay on;
  upstream origin { server 127.0.0.1:${originPort}; keepalive 64; }
  proxy_cache_path ${dir}/cache levels=1:2 keys_zone=z:16m max_size=256m inactive=1h use_temp_path=off;
  server {
    listen 127.0.0.1:${port};
    listen 127.0.0.1:${tport} ssl${httpOn ? '' : ' http2'};
    ${httpOn ? 'http2 on;' : ''}
    http2_max_concurrent_streams 128;
    ssl_certificate ${dir}/c.pem; ssl_certificate_key ${dir}/k.pem;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_cache z; proxy_cache_valid 200 1h; }
  }
}
`)
  start(0, 'nginx', ['-c', conf, '-p', dir])
  await waitPort(port)
  return { plain: `http://127.0.0.1:${port}/hit1k`, tls: `https://127.0.0.1:${tport}/hit1k`, version: v.stderr.trim() }
}

const plain = await sluice(false)
const tls = await sluice(true)
const ngx = await nginx()
const targets = [
  { id: 'cleartext HTTP/1.1', url: plain.url, h1: true },
  { id: 'TLS HTTP/1.1', url: tls.url, h1: true },
  { id: `TLS h2 (${streams} streams/conn)`, url: tls.url, h1: false },
  ...(ngx === null ? [] : [
    { id: 'nginx cleartext HTTP/1.1', url: ngx.plain, h1: true, anchor: true },
    { id: `nginx TLS h2 (${streams} streams/conn)`, url: ngx.tls, h1: false, anchor: true }
  ])
]
if (ngx === null) console.log('nginx is not installed: the anchor rows are skipped (apt-get install nginx)')
for (const t of targets) h2load(t.url, t.h1, 2) // warm-up (JIT, TLS session setup paths)
const results = Object.fromEntries(targets.map((t) => [t.id, []]))
for (let i = 0; i < runs; i++) for (const t of targets) { const r = h2load(t.url, t.h1); results[t.id].push(r.rps); console.log(`run ${i + 1} ${t.id.padEnd(28)} ${Math.round(r.rps).toLocaleString('en')} req/s  failed ${r.failed}`) }
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }
// Each row against its own server's cleartext HTTP/1.1 (Sluice's, or nginx's for the anchor rows).
const base = (t) => median(results[targets.find((x) => x.h1 && !x.url.startsWith('https') && !!x.anchor === !!t.anchor).id])
console.log(`\n| target (1 KB cache hit, ${clients} connections) | req/s (median of ${runs}) | vs the same server's cleartext HTTP/1.1 |\n|---|---:|---:|`)
for (const t of targets) console.log(`| ${t.id} | ${Math.round(median(results[t.id])).toLocaleString('en')} | ${(median(results[t.id]) / base(t)).toFixed(2)}x |`)
const h2row = targets[2]
const ngxH2 = targets.find((t) => t.anchor && !t.h1)
if (ngxH2) console.log(`\nSluice TLS h2 / nginx TLS h2: ${(median(results[h2row.id]) / median(results[ngxH2.id])).toFixed(2)}x (${ngx.version})`)
process.exit(0)
