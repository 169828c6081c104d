// The edge listener's cost: a 1 KB L1 cache hit over TLS with h2 (10 streams per connection),
// over TLS with HTTP/1.1, and over cleartext HTTP/1.1, measured with h2load (Debian's
// nghttp2-client) in one run. Sluice runs on core 0 with its shipped V8 flags, h2load on core 1.
//   node bench/h2.mjs [--runs N] [--duration S] [--clients N] [--streams N]
// Prints a table of req/s (median of runs) and the ratio of each to cleartext HTTP/1.1.
// Issue 14's goal: TLS h2 hit >= 0.9x Sluice's own cleartext HTTP/1.1 hit rate.
import { spawn, spawnSync, execFileSync } from 'node:child_process'
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import { arg } from './lib/args.mjs'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const runs = Number(arg('runs', 'RUNS', 3))
const duration = Number(arg('duration', 'DURATION', 5))
const clients = Number(arg('clients', 'CLIENTS', 10))
const streams = Number(arg('streams', 'STREAMS', 10))
if (spawnSync('h2load', ['--version']).status !== 0) { console.error('h2load is missing: apt-get install nghttp2-client'); process.exit(2) }

const dir = mkdtempSync(path.join(tmpdir(), 'sluice-h2bench-'))
const procs = []
process.on('exit', () => { for (const p of procs) p.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }) })
const freePort = () => new Promise((resolve) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)) }) })
const waitPort = async (port) => { for (let i = 0; i < 100; i++) { if (await new Promise((r) => { const c = net.connect(port, '127.0.0.1', () => { c.destroy(); r(true) }); c.on('error', () => r(false)) })) return; await new Promise((r) => setTimeout(r, 100)) } throw new Error(`port ${port} did not open`) }
const start = (core, cmd, args) => { const p = spawn('taskset', ['-c', String(core), cmd, ...args], { stdio: 'ignore' }); procs.push(p); return p }

execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(dir, 'k.pem'), '-out', path.join(dir, 'c.pem'), '-days', '1', '-subj', '/CN=127.0.0.1'], { stdio: 'ignore' })
const originPort = await freePort()
start(1, process.execPath, [path.join(ROOT, 'bench', 'origin.mjs'), '--port', String(originPort)])
await waitPort(originPort)
const { NODE_FLAGS } = await import(path.join(ROOT, 'dist', 'src', 'node-flags.js'))

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

const plain = await sluice(false)
const tls = await sluice(true)
const targets = [
  { id: 'cleartext HTTP/1.1', url: plain.url, h1: true },
  { id: 'TLS HTTP/1.1', url: tls.url, h1: true },
  { id: `TLS h2 (${streams} streams/conn)`, url: tls.url, h1: false }
]
for (const t of targets) h2load(t.url, t.h1, 2) // warm-up (JIT, TLS session setup paths)
const results = Object.fromEntries(targets.map((t) => [t.id, []]))
for (let i = 0; i < runs; i++) for (const t of targets) { const r = h2load(t.url, t.h1); results[t.id].push(r.rps); console.log(`run ${i + 1} ${t.id.padEnd(28)} ${Math.round(r.rps).toLocaleString('en')} req/s  failed ${r.failed}`) }
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }
const base = median(results[targets[0].id])
console.log(`\n| target (1 KB L1 hit, ${clients} connections) | req/s (median of ${runs}) | vs cleartext HTTP/1.1 |\n|---|---:|---:|`)
for (const t of targets) console.log(`| ${t.id} | ${Math.round(median(results[t.id])).toLocaleString('en')} | ${(median(results[t.id]) / base).toFixed(2)}x |`)
process.exit(0)
