// With workers: the primary serves the admin port but no traffic, so /admin/upstreams merges
// every worker's pools, breakers and target health, /admin/profile and /admin/heap-snapshot
// profile a worker (?worker=N), never the idle primary, and /readyz reports the workers' own degradations
// (an unreachable Redis) as a single process does.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startOrigin } from '../helpers/origin.js'
import { startTestCluster } from '../helpers/cluster.js'
import { reservePort } from '../helpers/ports.js'
import { mergeUpstreams } from '../../src/cluster/upstreams.js'

const closers: (() => Promise<unknown> | unknown)[] = []
after(async () => { for (const c of closers.reverse()) await c() })

test('mergeUpstreams sums pools and in-flight counts, keeps the worst breaker, and a target is healthy only where every worker has it', () => {
  const t = (healthy: boolean, inFlight: number) => ({ target: 'a:1', healthy, ejected: false, inFlight, pool: { connected: 1, running: inFlight } })
  const m = mergeUpstreams([
    { pid: 1, upstreams: { api: { url: 'x', pool: { connected: 2, running: 1 }, breaker: { state: 'closed' }, targets: [t(true, 1)] } } },
    { pid: 2, upstreams: { api: { url: 'x', pool: { connected: 3, running: 2 }, breaker: { state: 'open' }, targets: [t(false, 2)] } } }
  ]) as Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any
  assert.deepEqual(m.api.pool, { connected: 5, running: 3 })
  assert.equal(m.api.breaker.state, 'open')
  assert.equal(m.api.workers, 2)
  assert.equal(m.api.targets[0].healthy, false)
  assert.equal(m.api.targets[0].healthyIn, 1)
  assert.equal(m.api.targets[0].inFlight, 3)
  assert.equal(m.api.perWorker.length, 2)
})

test('workers: 2: /admin/upstreams merges both workers, /admin/profile and /admin/heap-snapshot read a worker, /readyz reports the workers\' Redis', async () => {
  const origins = [await startOrigin(), await startOrigin()]
  for (const o of origins) closers.push(() => o.close())
  const deadRedis = await reservePort() // nothing listens there: every worker finds Redis down
  // Cached in a worker's L1 only (Redis is down): a heap snapshot that holds it is a worker's.
  const marker = `heapmarker${process.pid}x${Date.now()}`
  for (const o of origins) o.on('/c/' + marker, (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600' }); res.end('x') })
  const c = await startTestCluster((port, adminPort) => `workers: 2
listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${adminPort} }
log: { level: warn, accessLog: false }
shutdownGraceMs: 2000
redis: { url: "redis://127.0.0.1:${deadRedis}", connectTimeoutMs: 200 }
upstreams:
  api: { targets: ["${origins[0].url}", "${origins[1].url}"] }
routes:
  - { name: cached, match: { pathPrefix: /c/ }, upstream: api, cache: { enabled: true, defaultTtlSeconds: 600 } }
  - { name: all, match: { pathPrefix: / }, upstream: api }
`)
  closers.push(() => c.stop())
  const admin = c.admin
  // Only the workers talk to Redis: the primary's /readyz carries their reasons, as /admin/status does.
  const rz = await request(admin + '/readyz')
  const ready = await rz.body.json() as { status: string; degraded: string[]; perWorker: { pid: number; degraded: string[] }[] }
  assert.equal(rz.statusCode, 200, 'degraded, still ready')
  assert.equal(ready.status, 'degraded', JSON.stringify(ready))
  assert.ok(ready.degraded.includes('redis'), JSON.stringify(ready))
  assert.equal(ready.perWorker.length, 2)
  assert.ok(ready.perWorker.every((w) => w.degraded.includes('redis')), JSON.stringify(ready.perWorker))
  const st = await (await request(admin + '/admin/status')).body.json() as { degraded: string[] }
  assert.deepEqual([...ready.degraded].sort(), [...st.degraded].sort(), '/readyz and /admin/status agree')
  for (let i = 0; i < 10; i++) await (await request(c.url + '/x', { reset: true })).body.dump()
  const u = await (await request(admin + '/admin/upstreams')).body.json() as Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any
  assert.equal(u.api.workers, 2, JSON.stringify(u))
  assert.equal(u.api.perWorker.length, 2)
  assert.equal(u.api.targets.length, 2)
  assert.ok(u.api.targets.every((t: { healthyIn: number }) => t.healthyIn === 2))
  assert.ok(u.api.pool.connected >= 1, 'pools summed over the workers')
  const prof = await request(admin + '/admin/profile?seconds=1&worker=1', { method: 'POST' })
  assert.equal(prof.statusCode, 200)
  const body = await prof.body.json() as { nodes?: unknown[] }
  assert.ok(Array.isArray(body.nodes) && body.nodes.length > 0, 'a V8 CPU profile from the worker')
  const bad = await request(admin + '/admin/profile?seconds=1&worker=7', { method: 'POST' })
  assert.equal(bad.statusCode, 400)
  assert.match(await bad.body.text(), /no worker 7/)

  // Each fresh connection goes to the next worker: both cache the marker's response.
  for (let i = 0; i < 6; i++) {
    const r = await request(c.url + '/c/' + marker, { reset: true })
    assert.equal(r.statusCode, 200)
    await r.body.dump()
  }
  for (const worker of [0, 1]) {
    const snap = await request(admin + `/admin/heap-snapshot?worker=${worker}`, { method: 'POST' })
    assert.equal(snap.statusCode, 200)
    assert.match(String(snap.headers['content-disposition']), /\.heapsnapshot"/)
    const text = await snap.body.text()
    assert.ok(text.startsWith('{"snapshot":'), 'a V8 heap snapshot')
    assert.ok(text.includes(marker), `worker ${worker}'s heap, which served and cached the request`)
  }
  const noWorker = await request(admin + '/admin/heap-snapshot?worker=7', { method: 'POST' })
  assert.equal(noWorker.statusCode, 400)
  assert.match(await noWorker.body.text(), /no worker 7/)
})
