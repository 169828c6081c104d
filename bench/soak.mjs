#!/usr/bin/env node
// Soak: does resident memory stay within the cache bound plus a fixed overhead under a long
// stream of unique URLs and random headers? Never run by npm test.
//
//   npm run build && node bench/soak.mjs [--minutes 10] [--max-bytes 33554432] [--overhead-mb 256]
//                                        [--concurrency 32] [--sample-seconds 5] [--max-requests N]
//                                        [--compression on|off]
//
// It starts an origin in this process and the built gateway (dist/src/cli.js) as a child process
// with one cache route (cache.enabled; if caching were off it still runs as pass-through) bounded
// by cache.memory.maxBytes, then sends requests with unique URLs (every one a new cache entry,
// bodies 1-32 KiB, some Vary variants) and random headers (unknown names, cookies, encodings,
// forwarding headers) from a bounded loop to 127.0.0.1 only. Every few seconds it samples the
// gateway's RSS (/proc/<pid>/status, else ps) and the cache's own byte count (/admin/status),
// prints the curve, and exits 1 when the peak RSS exceeds maxBytes + overhead (the overhead covers
// the process at rest, about 95 MiB, plus allocator slack under load), or when RSS keeps growing:
// the mean of the last third of the run above the middle third's by more than 10% + 16 MiB.
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync, readFileSync, existsSync, rmSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { randomBytes } from 'node:crypto'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const CLI = path.join(ROOT, 'dist/src/cli.js')

function flag (name, def) {
  const i = process.argv.indexOf(`--${name}`)
  if (i === -1) return def
  const v = Number(process.argv[i + 1])
  if (!Number.isFinite(v) || v <= 0) { console.error(`--${name} needs a positive number`); process.exit(2) }
  return v
}
const MINUTES = flag('minutes', 10)
const MAX_BYTES = Math.floor(flag('max-bytes', 32 * 1024 * 1024))
const OVERHEAD = flag('overhead-mb', 256) * 1024 * 1024
const CONCURRENCY = Math.floor(flag('concurrency', 32))
const SAMPLE_MS = flag('sample-seconds', 5) * 1000
const MAX_REQUESTS = Math.floor(flag('max-requests', Number.MAX_SAFE_INTEGER))
const MIB = 1024 * 1024
const COMPRESSION = process.argv.includes('--compression') ? process.argv[process.argv.indexOf('--compression') + 1] !== 'off' : true

if (!existsSync(CLI)) { console.error(`${CLI} is missing: run npm run build first`); process.exit(2) }

async function freePort () {
  const s = net.createServer().listen(0, '127.0.0.1')
  await new Promise((resolve) => s.once('listening', resolve))
  const { port } = s.address()
  await new Promise((resolve) => s.close(resolve))
  return port
}

// ---- origin: cacheable answers of random size; some vary on a header -------------------------
const BODY = randomBytes(32 * 1024).toString('base64').slice(0, 32 * 1024)
let originRequests = 0
const origin = http.createServer((req, res) => {
  originRequests++
  req.resume()
  const n = 1024 + (Number.parseInt(req.url.slice(-4), 36) % (31 * 1024) || 0)
  const headers = { 'content-type': 'text/plain', 'cache-control': 'public, max-age=600', 'content-length': String(n) }
  if (req.url.includes('v=1')) headers.vary = 'X-Variant'
  res.writeHead(200, headers)
  res.end(BODY.slice(0, n))
})
origin.keepAliveTimeout = 10_000
origin.listen(0, '127.0.0.1')
await new Promise((resolve) => origin.once('listening', resolve))
const originPort = origin.address().port

// ---- gateway ----------------------------------------------------------------------------------
const port = await freePort()
const adminPort = await freePort()
const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-soak-'))
const configFile = path.join(dir, 'soak.yaml')
writeFileSync(configFile, `
listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${adminPort} }
log: { level: warn, accessLog: false }
cache: { memory: { maxBytes: ${MAX_BYTES}, maxEntryBytes: ${Math.min(MAX_BYTES, 1024 * 1024)} } }
upstreams:
  origin: { url: "http://127.0.0.1:${originPort}", connections: 64, timeoutMs: 10000 }
routes:
  - name: soak
    match: { pathPrefix: / }
    upstream: origin
    cache: { enabled: true, defaultTtlSeconds: 600 }
    compression: { enabled: ${COMPRESSION} }
`)
const gw = spawn(process.execPath, [CLI, '--config', configFile], { stdio: ['ignore', 'ignore', 'pipe'] })
let gwErr = ''
gw.stderr.on('data', (d) => { gwErr = (gwErr + d).slice(-4000) })
let exiting = false
function cleanup () {
  if (gw.exitCode === null) gw.kill('SIGTERM')
  origin.closeAllConnections?.()
  origin.close()
  rmSync(dir, { recursive: true, force: true })
}
process.on('SIGINT', () => { exiting = true; cleanup(); process.exit(130) })
gw.on('exit', (code) => { if (!exiting) { console.error(`gateway exited early (code ${code})\n${gwErr}`); cleanup(); process.exit(1) } })

async function get (p, headers = {}, toPort = port) {
  return new Promise((resolve) => {
    const r = http.get({ host: '127.0.0.1', port: toPort, path: p, headers, agent }, (res) => {
      let bytes = 0
      res.on('data', (c) => { bytes += c.length })
      res.on('end', () => resolve({ status: res.statusCode, bytes, cache: String(res.headers['cache-status'] ?? '') }))
      res.on('error', () => resolve({ status: 0 }))
    })
    r.on('error', () => resolve({ status: 0 }))
    r.setTimeout(15_000, () => r.destroy())
  })
}
const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY })

for (let i = 0; i < 100; i++) { // wait for the admin port (bounded: 10 s)
  const r = await get('/readyz', {}, adminPort)
  if (r.status === 200) break
  await new Promise((resolve) => setTimeout(resolve, 100))
}

function rssBytes () {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${gw.pid}/status`, 'utf8'))
    if (m) return Number(m[1]) * 1024
  } catch {}
  const ps = spawnSync('ps', ['-o', 'rss=', '-p', String(gw.pid)], { encoding: 'utf8' })
  return Number(ps.stdout.trim()) * 1024
}
/** The cache's own byte count and the V8 heap in use, from /admin/status. */
async function statusBytes () {
  return new Promise((resolve) => {
    http.get({ host: '127.0.0.1', port: adminPort, path: '/admin/status' }, (res) => {
      let s = ''
      res.on('data', (c) => { s += c })
      res.on('end', () => {
        try {
          const j = JSON.parse(s)
          const c = j.cache ?? {}
          resolve({ cache: c.memory?.bytes ?? c.bytes ?? null, heap: j.memory?.heapUsedBytes ?? null })
        } catch { resolve({ cache: null, heap: null }) }
      })
    }).on('error', () => resolve({ cache: null, heap: null }))
  })
}

// ---- load: unique URLs, random headers, bounded ------------------------------------------------
const pick = (a) => a[Math.floor(Math.random() * a.length)]
const ENCODINGS = ['br, gzip', 'gzip', 'identity', '*', 'br;q=0.5, gzip;q=1', '']
function randomHeaders () {
  const h = { 'accept-encoding': pick(ENCODINGS) }
  const n = Math.floor(Math.random() * 6)
  for (let i = 0; i < n; i++) h[`x-soak-${randomBytes(3).toString('hex')}`] = randomBytes(8 + Math.floor(Math.random() * 48)).toString('base64')
  if (Math.random() < 0.3) h.cookie = `s=${randomBytes(12).toString('hex')}`
  if (Math.random() < 0.3) h['x-forwarded-for'] = `10.${Math.floor(Math.random() * 255)}.0.1`
  if (Math.random() < 0.3) h['x-variant'] = randomBytes(2).toString('hex')
  if (Math.random() < 0.1) h['user-agent'] = randomBytes(60).toString('base64')
  return h
}

const started = Date.now()
const deadline = started + MINUTES * 60_000
let sent = 0
let errors = 0
const statusCounts = new Map()
const cacheCounts = new Map()
let seq = 0
async function worker () {
  while (Date.now() < deadline && sent < MAX_REQUESTS) {
    sent++
    const id = (seq++).toString(36).padStart(6, '0')
    const u = `/soak/${id}/${randomBytes(4).toString('hex')}?v=${Math.random() < 0.2 ? 1 : 0}&k=${id.slice(-4)}`
    const r = await get(u, randomHeaders())
    if (r.status === 0) errors++
    statusCounts.set(r.status, (statusCounts.get(r.status) ?? 0) + 1)
    const c = r.cache ? r.cache.split(';')[1]?.trim() ?? r.cache : 'none'
    cacheCounts.set(c, (cacheCounts.get(c) ?? 0) + 1)
    if (Math.random() < 0.05) await get(u.replace(/\/[0-9a-f]{8}\?/, '/repeat?'), randomHeaders()) // some hits too
  }
}

const samples = []
async function sample () {
  const s = { t: Math.round((Date.now() - started) / 1000), rss: rssBytes(), ...(await statusBytes()), sent }
  samples.push(s)
  const prev = samples.at(-2)
  const rps = prev ? Math.round((s.sent - prev.sent) / Math.max(1, s.t - prev.t)) : 0
  const mib = (b) => b === null ? '   n/a' : (b / MIB).toFixed(1).padStart(6) + ' MiB'
  console.log(`t=${String(s.t).padStart(5)}s  rss=${mib(s.rss)}  cache=${mib(s.cache)}  heap=${mib(s.heap)}  requests=${s.sent}  rps=${rps}`)
}

console.log(`soak: ${MINUTES} min, ${CONCURRENCY} connections, compression ${COMPRESSION ? 'on' : 'off'}, cache.memory.maxBytes=${(MAX_BYTES / MIB).toFixed(1)} MiB, bound = maxBytes + ${(OVERHEAD / MIB).toFixed(0)} MiB = ${((MAX_BYTES + OVERHEAD) / MIB).toFixed(1)} MiB`)
await sample()
const timer = setInterval(() => { sample() }, SAMPLE_MS)
await Promise.all(Array.from({ length: CONCURRENCY }, worker))
clearInterval(timer)
await sample()

// ---- report -------------------------------------------------------------------------------------
const peak = Math.max(...samples.map((s) => s.rss))
const bound = MAX_BYTES + OVERHEAD
const bars = ' ▁▂▃▄▅▆▇█'
const curve = samples.map((s) => bars[Math.min(8, Math.round((s.rss / bound) * 8))]).join('')
const half = samples[Math.floor(samples.length / 2)]
const last = samples.at(-1)
console.log(`\nRSS curve (full height = bound ${(bound / MIB).toFixed(0)} MiB): ${curve}`)
console.log(`requests: ${sent} (${errors} failed), origin saw ${originRequests}; statuses ${JSON.stringify(Object.fromEntries(statusCounts))}; cache ${JSON.stringify(Object.fromEntries(cacheCounts))}`)
console.log(`RSS: start ${(samples[0].rss / MIB).toFixed(1)} MiB, half-way ${(half.rss / MIB).toFixed(1)} MiB, end ${(last.rss / MIB).toFixed(1)} MiB, peak ${(peak / MIB).toFixed(1)} MiB`)
const cachePeak = Math.max(...samples.map((s) => s.cache ?? 0))
if (cachePeak > MAX_BYTES) console.log(`FAIL: the cache reported ${cachePeak} bytes, over maxBytes ${MAX_BYTES}`)
// Growth: the last third against the middle third (the first third is warm-up: the cache filling).
const third = Math.floor(samples.length / 3)
const mean = (xs) => xs.reduce((a, s) => a + s.rss, 0) / Math.max(1, xs.length)
const middle = mean(samples.slice(third, 2 * third))
const lastThird = mean(samples.slice(2 * third))
const growing = third >= 2 && lastThird > middle * 1.1 + 16 * MIB
if (third >= 2) console.log(`RSS mean: middle third ${(middle / MIB).toFixed(1)} MiB, last third ${(lastThird / MIB).toFixed(1)} MiB${growing ? ' (still growing)' : ''}`)
else console.log('too few samples for the growth check')
const withinBound = peak <= bound
console.log(withinBound ? `peak RSS ${(peak / MIB).toFixed(1)} MiB <= bound ${(bound / MIB).toFixed(1)} MiB` : `FAIL: peak RSS ${(peak / MIB).toFixed(1)} MiB > bound ${(bound / MIB).toFixed(1)} MiB`)
if (growing) console.log('FAIL: RSS is still growing in the last third of the run')
const ok = withinBound && !growing && cachePeak <= MAX_BYTES
console.log(ok ? 'PASS' : 'FAIL')
exiting = true
agent.destroy()
cleanup()
process.exit(ok ? 0 : 1)
