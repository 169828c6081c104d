// Purges racing the cache's own background work: the L2 write that follows the store-time
// encode, and L2 reads that refill L1 while the purge's L2 part runs. Real gateways, a real
// origin on loopback and a real redis-server; the tests poll for conditions, never for time.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import type { Redis } from 'ioredis'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { redisCacheYaml } from '../helpers/redis-cache-config.js'
import { startTestGateway } from '../helpers/gateway.js'
import { startRedis } from '../helpers/redis.js'
import { metric } from '../helpers/metrics.js'
import { until } from '../helpers/wait.js'
import { RedisStore } from '../../src/httpcache/redis-store.js'
import { baseKey } from '../../src/httpcache/key.js'

let origin: Origin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

const config = (redisUrl: string, prefix: string, timeout = 500) =>
  redisCacheYaml(origin.url, redisUrl, prefix, { commandTimeoutMs: timeout, route: '    compression: { enabled: true }\n' })

async function get (base: string, path: string) {
  const r = await request(base + path, { headers: { host: 'shop.example' } })
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}
async function purge (adminUrl: string, sel: object): Promise<{ ok: boolean; purged: number }> {
  const r = await request(`${adminUrl}/admin/purge`, { method: 'POST', body: JSON.stringify(sel), headers: { 'content-type': 'application/json' } })
  assert.equal(r.statusCode, 200)
  return await r.body.json() as { ok: boolean; purged: number }
}
/** The L2 records of a path (any variant), in this test's key prefix. */
const stored = (c: Redis, prefix: string, path: string) => c.keys(`${prefix}{*}c:G|shop.example|${path}*`)
/** ~200 KiB of compressible text (under 256 KiB, so the stored br copy is made at quality 11: slow). */
const text = (v: string) => Array.from({ length: 6000 }, (_, i) => `${v} line ${i} ${Math.sin(i).toFixed(8)} lorem ipsum\n`).join('')
const brDone = (adminUrl: string) => metric(adminUrl, 'sluice_compression_bytes_total', { encoding: 'br', direction: 'out' })

/**
 * Wait until every L2 write `gw` had started is done: once its br copy exists (its L2 write
 * is then already sent, or skipped), a plain entry stored through the same gateway and client
 * connection reaching Redis means the earlier write has been executed too.
 */
async function settled (c: Redis, prefix: string, gw: { url: string; adminUrl: string }, marker: string): Promise<void> {
  await until('the background encode to finish', async () => await brDone(gw.adminUrl) > 0, { tries: 400, intervalMs: 25 })
  assert.equal((await get(gw.url, marker)).body, 'marker')
  await until('the marker entry to reach L2', async () => (await stored(c, prefix, marker)).length > 0, { tries: 400, intervalMs: 25 })
}

for (const sel of [{ key: '/enc' }, { prefix: '/en' }, { tag: 'catalog' }]) {
  test(`bug 1: a purge by ${Object.keys(sel)[0]} during the store-time encode is not undone by the L2 write that follows`, async () => {
    const redis = await startRedis()
    const c = redis.client()
    const a = await startTestGateway(config(redis.url, redis.prefix))
    const b = await startTestGateway(config(redis.url, redis.prefix))
    try {
      let v = 'v1'
      origin.on('/enc', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/plain', 'cache-tag': 'catalog' }); res.end(text(v)) })
      origin.on('/marker', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'application/octet-stream' }); res.end('marker') })
      assert.ok((await get(a.url, '/enc')).body.startsWith('v1'))
      v = 'v2'
      assert.deepEqual(await purge(a.adminUrl, sel), { ok: true, purged: 1 })
      assert.equal(await brDone(a.adminUrl), 0, 'precondition: the purge ran while the br copy was being made')
      await settled(c, redis.prefix, a, '/marker')
      assert.deepEqual(await stored(c, redis.prefix, '/enc'), [], 'the purged entry is not in L2')
      assert.ok((await get(b.url, '/enc')).body.startsWith('v2'), 'the other replica gets the new version')
      assert.ok((await get(a.url, '/enc')).body.startsWith('v2'), 'the purging replica gets the new version')
    } finally { await a.close(); await b.close(); await redis.stop() }
  })
}

test('bug 1: a purge from another replica (over the bus) during this replica\'s encode is not undone by its L2 write', async () => {
  const redis = await startRedis()
  const c = redis.client()
  const a = await startTestGateway(config(redis.url, redis.prefix))
  const b = await startTestGateway(config(redis.url, redis.prefix))
  try {
    let v = 'v1'
    origin.on('/enc-remote', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/plain', 'cache-tag': 'remote' }); res.end(text(v)) })
    origin.on('/marker-remote', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'application/octet-stream' }); res.end('marker') })
    assert.ok((await get(b.url, '/enc-remote')).body.startsWith('v1')) // B fills and encodes
    v = 'v2'
    assert.deepEqual(await purge(a.adminUrl, { tag: 'remote' }), { ok: true, purged: 0 }) // nothing in L2 yet
    assert.equal(await brDone(b.adminUrl), 0, 'precondition: the purge ran while B was making the br copy')
    await settled(c, redis.prefix, b, '/marker-remote')
    assert.deepEqual(await stored(c, redis.prefix, '/enc-remote'), [], 'the purged entry is not in L2')
    assert.ok((await get(a.url, '/enc-remote')).body.startsWith('v2'))
    assert.ok((await get(b.url, '/enc-remote')).body.startsWith('v2'))
  } finally { await a.close(); await b.close(); await redis.stop() }
})

test('bug 2: a request during the purge\'s L2 SCAN does not put the purged entry back into the purging replica\'s L1', async () => {
  const redis = await startRedis({ own: true })
  const c = redis.client()
  // 300k other keys, so the SCAN of a purge by key takes a while (as in a large L2).
  await c.eval("for i=1,300000 do redis.call('SET','other:'..i,'x') end return 1", 0)
  const a = await startTestGateway(config(redis.url, redis.prefix, 10000)) // a loaded CI machine: the 300k-key SCAN's commands must not time out
  try {
    let v = 'v0'
    origin.on('/scan', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600' }); res.end(v) })
    const l2Hits = () => metric(a.adminUrl, 'sluice_cache_events_total', { route: 'cached', result: 'hit', layer: 'l2' })
    // Whether a request reaches L2 while the SCAN runs depends on how fast the SCAN is on this
    // machine: run the race until it happened once (each round checks the rule all the same).
    let raced = 0
    for (let round = 1; round <= 10 && raced === 0; round++) {
      v = `v${round}`
      assert.equal((await get(a.url, '/scan')).body, v)
      await until('the entry to reach L2', async () => (await stored(c, redis.prefix, '/scan')).length > 0)
      v = `v${round}-next`
      const before = await l2Hits()
      let done = false
      const p = purge(a.adminUrl, { key: '/scan' }).finally(() => { done = true })
      // Requests while the purge runs: once it has cleared L1, they read the old entry from L2.
      while (!done) await get(a.url, '/scan')
      assert.deepEqual(await p, { ok: true, purged: 2 })
      if (await l2Hits() > before) raced++
      assert.equal((await get(a.url, '/scan')).body, v, 'the purged entry is not kept in L1 after the purge returned')
      // The next round starts from a cache without /scan.
      await purge(a.adminUrl, { key: '/scan' })
    }
    assert.ok(raced > 0, 'precondition: in one round, a request read the entry from L2 while the purge ran')
  } finally { await a.close(); await redis.stop() }
})

test('another replica\'s purge whose message has not arrived when this replica\'s fill lands in L2 still removes the fill from L2 and L1 (the purge log)', async () => {
  const redis = await startRedis()
  const c = redis.client()
  const b = await startTestGateway(config(redis.url, redis.prefix))
  try {
    let version = 'v1'
    let hold: (() => void) | null = null
    let asked = 0
    origin.on('/crossed', (_req, res) => {
      asked++
      const body = version
      const send = () => { res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'application/octet-stream' }); res.end(body) }
      if (asked === 1) hold = send; else send()
    })
    const first = get(b.url, '/crossed')
    await until('the origin holds B\'s fill', () => hold !== null)
    version = 'v2'
    // Replica A purges: its L2 part runs now, and its message is never delivered to B (as when
    // B's subscriber is reconnecting), so B hears of it only through the purge log.
    const a = new RedisStore(c, redis.prefix, (op, err) => { throw new Error(`${op}: ${err.message}`) })
    await a.purge({ key: '/crossed' })
    hold!()
    assert.equal((await first).body, 'v1', 'the request in flight gets its answer')
    await until('B serves v2', async () => (await get(b.url, '/crossed')).body === 'v2')
    const fresh = await startTestGateway(config(redis.url, redis.prefix))
    try {
      assert.equal((await get(fresh.url, '/crossed')).body, 'v2', 'L2 does not hold v1')
    } finally { await fresh.close() }
  } finally { await b.close(); await redis.stop() }
})

test('another replica\'s unsafe-method invalidation whose message has not arrived when this replica\'s fill lands in L2 still removes the fill (the purge log)', async () => {
  const redis = await startRedis()
  const b = await startTestGateway(config(redis.url, redis.prefix))
  try {
    let version = 'v1'
    let hold: (() => void) | null = null
    let asked = 0
    origin.on('/crossed-post', (_req, res) => {
      asked++
      const body = version
      const send = () => { res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'application/octet-stream' }); res.end(body) }
      if (asked === 1) hold = send; else send()
    })
    const first = get(b.url, '/crossed-post')
    await until('the origin holds B\'s fill', () => hold !== null)
    version = 'v2'
    // Replica A answers a POST to the URL and invalidates it: its L2 part runs now, and its
    // message never reaches B, so B hears of it only through the purge log.
    const a = new RedisStore(redis.client(), redis.prefix, (op, err) => { throw new Error(`${op}: ${err.message}`) })
    await a.invalidate(baseKey('GET', 'shop.example', '/crossed-post', {}, { sortQuery: false, ignoreParams: [], headers: [] }))
    hold!()
    assert.equal((await first).body, 'v1', 'the request in flight gets its answer')
    await until('B serves v2', async () => (await get(b.url, '/crossed-post')).body === 'v2')
    const fresh = await startTestGateway(config(redis.url, redis.prefix))
    try {
      assert.equal((await get(fresh.url, '/crossed-post')).body, 'v2', 'L2 does not hold v1')
    } finally { await fresh.close() }
  } finally { await b.close(); await redis.stop() }
})

test('a fill whose upstream request began before a purge naming it, and that ends after it, is not stored', async (t) => {
  const gw = await startTestGateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: false }
upstreams:
  origin: { url: "${origin.url}", timeoutMs: 5000 }
routes:
  - name: cached
    match: { pathPrefix: / }
    upstream: origin
    cache: { enabled: true }
`)
  t.after(() => gw.close())
  let version = 'v1'
  let hold: (() => void) | null = null
  let asked = 0
  origin.on('/held', (_req, res) => {
    asked++
    const body = version // what the origin had when the request reached it
    const send = () => { res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/plain' }); res.end(body) }
    if (asked === 1) hold = send; else send()
  })
  const first = get(gw.url, '/held')
  await until('the origin holds the first request', () => hold !== null)
  version = 'v2' // the origin changes, and the operator purges while the old answer is on its way
  assert.equal((await purge(gw.adminUrl, { key: '/held' })).ok, true)
  hold!()
  const r1 = await first
  assert.equal(r1.body, 'v1', 'the request that was in flight gets its answer')
  const r2 = await get(gw.url, '/held')
  assert.equal(r2.body, 'v2', 'the answer begun before the purge was not stored')
  assert.match(String(r2.headers['cache-status']), /fwd=miss/)
})
