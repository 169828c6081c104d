#!/usr/bin/env node
// The k6 scenarios (k6/*.js) run with autocannon, since k6 cannot be installed here: the same
// routes and the same thresholds (p95 < 500 ms, under 1% unexpected failures, cache-hit share
// above 50% where hits are expected), against a Sluice in front of examples/origin.mjs.
//   node bench/k6-equivalents.mjs [--seconds 5] [--scenario cache-hit]   (npm run bench:k6)
// Never run by npm test. autocannon reports p97.5 and p99, not p95: the p95 check uses p97.5,
// which is stricter.
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const arg = (name, def) => { const i = process.argv.indexOf('--' + name); return i === -1 ? def : process.argv[i + 1] }
const seconds = Number(arg('seconds', 5))
const only = arg('scenario', null)

async function freePort () {
  const s = createServer().listen(0, '127.0.0.1'); await once(s, 'listening')
  const p = s.address().port; await new Promise((r) => s.close(r)); return p
}
async function waitFor (url) {
  for (let i = 0; i < 150; i++) { try { await (await fetch(url)).arrayBuffer(); return } catch { await new Promise((r) => setTimeout(r, 100)) } }
  throw new Error(`${url} did not come up`)
}

const children = []
process.on('exit', () => { for (const c of children) try { c.kill('SIGKILL') } catch {} })
const dir = mkdtempSync(join(tmpdir(), 'sluice-k6eq-'))
const [originPort, port, admin, dead] = [await freePort(), await freePort(), await freePort(), await freePort()]
children.push(spawn(process.execPath, [join(root, 'examples/origin.mjs')], { env: { ...process.env, PORT: String(originPort) }, stdio: 'ignore' }))
const config = join(dir, 'sluice.yaml')
writeFileSync(config, `listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${admin} }
log: { level: warn, accessLog: false }
upstreams:
  api: { url: "http://127.0.0.1:${originPort}" }
  dead:
    url: "http://127.0.0.1:${dead}"
    retry: { attempts: 0 }
    circuitBreaker: { volumeThreshold: 10, errorThresholdPercent: 50, resetTimeoutMs: 30000 }
routes:
  - { name: limited, match: { pathPrefix: /api/, host: limited.local }, upstream: api, rateLimit: { perClient: { requestsPerSecond: 50, burst: 50 } } }
  - { name: breaker, match: { pathPrefix: /api/, host: dead.local }, upstream: dead }
  - name: api-cached
    match: { pathPrefix: /api/, methods: [GET, HEAD] }
    upstream: api
    cache: { enabled: true, staleWhileRevalidateSeconds: 30 }
    compression: { enabled: true }
  - { name: api-rest, match: { pathPrefix: / }, upstream: api }
`)
children.push(spawn(process.execPath, [join(root, 'dist/src/cli.js'), '--config', config], { stdio: ['ignore', 'ignore', 'inherit'] }))
await waitFor(`http://127.0.0.1:${originPort}/api/`)
await waitFor(`http://127.0.0.1:${admin}/healthz`)

const isHit = (h) => /(^|,)\s*sluice\s*;\s*hit\b/.test(String(h?.['cache-status'] ?? ''))

/** scenario: requests, which statuses count as expected, whether hits are expected */
const scenarios = {
  'cache-hit': { requests: [{ path: '/api/products' }, { path: '/api/products/7' }, { path: '/api/time' }], expected: [200], hits: 0.5 },
  'mixed-read-write': { requests: [{ path: '/api/products' }, { path: '/api/products/3' }, { path: '/api/products' }, { path: '/api/products/9' }, { method: 'POST', path: '/api/version', body: '{}', headers: { 'content-type': 'application/json' } }], expected: [200], hits: 0.5 },
  'rate-limit': { requests: [{ path: '/api/time', headers: { host: 'limited.local' } }], expected: [200, 429], mustSee: 429 },
  breaker: { requests: [{ path: '/api/time', headers: { host: 'dead.local' } }], expected: [502, 503], mustSee: 503 },
  soak: { requests: [{ path: '/api/products' }, { path: '/api/time' }, { path: '/api/products/1' }], expected: [200], hits: 0.5, seconds: Math.max(seconds * 2, 10) }
}

let failed = 0
for (const [name, sc] of Object.entries(scenarios)) {
  if (only && only !== name) continue
  const seen = { total: 0, hits: 0, unexpected: 0, byStatus: {} }
  const requests = sc.requests.map((r) => ({ ...r, onResponse: (status, _body, _ctx, headers) => {
    seen.total++
    seen.byStatus[status] = (seen.byStatus[status] ?? 0) + 1
    if (!sc.expected.includes(status)) seen.unexpected++
    // autocannon gives headers as an object (older versions: a flat [k, v, ...] list)
    const h = {}
    if (Array.isArray(headers)) for (let i = 0; i < headers.length; i += 2) h[String(headers[i]).toLowerCase()] = headers[i + 1]
    else if (headers) for (const [k, v] of Object.entries(headers)) h[k.toLowerCase()] = v
    if (isHit(h)) seen.hits++
  } }))
  const r = await autocannon({ url: `http://127.0.0.1:${port}`, connections: 20, duration: sc.seconds ?? seconds, requests })
  const p95 = r.latency.p97_5
  const failRate = seen.total ? (seen.unexpected + r.errors + r.timeouts) / seen.total : 1
  const hitRate = seen.total ? seen.hits / seen.total : 0
  const checks = [
    [`p95 < 500 ms (p97.5 ${p95} ms)`, p95 < 500],
    [`unexpected failures < 1% (${(failRate * 100).toFixed(2)}%)`, failRate < 0.01],
    ...(sc.hits ? [[`cache hits > ${sc.hits * 100}% (${(hitRate * 100).toFixed(1)}%)`, hitRate > sc.hits]] : []),
    ...(sc.mustSee ? [[`saw ${sc.mustSee} (${seen.byStatus[sc.mustSee] ?? 0})`, (seen.byStatus[sc.mustSee] ?? 0) > 0]] : [])
  ]
  const ok = checks.every(([, pass]) => pass)
  if (!ok) failed++
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}: ${Math.round(r.requests.average)} req/s, statuses ${JSON.stringify(seen.byStatus)}`)
  for (const [what, pass] of checks) console.log(`  ${pass ? 'ok  ' : 'FAIL'} ${what}`)
}
rmSync(dir, { recursive: true, force: true })
process.exit(failed ? 1 : 0)
