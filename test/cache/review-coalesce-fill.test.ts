// Miss coalescing and fills, reviewed: every wait settles, a failed or private leader's answer
// is never handed to its followers, revalidation and stale-if-error keep to the RFC. Real
// gateways, a real origin and (for the fleet cases) a real redis-server.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { redisCacheYaml } from '../helpers/redis-cache-config.js'
import { startTestGateway, cachedConfig } from '../helpers/gateway.js'
import { startRedis } from '../helpers/redis.js'
import { until } from '../helpers/wait.js'

let origin: Origin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

const HOST = 'fleet.example'

async function get (base: string, path: string, headers: Record<string, string> = {}) {
  const r = await request(base + path, { headers: { host: HOST, ...headers } })
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}

async function leases (adminUrl: string, result: string): Promise<number> {
  const text = await (await request(adminUrl + '/metrics')).body.text()
  const m = new RegExp(`^sluice_cache_leases_total\\{result="${result}"\\} (\\d+)`, 'm').exec(text)
  return m === null ? 0 : Number(m[1])
}

test('two waits on one replica for another replica\'s fill of the same key (a background refresh, then a client) both settle', async () => {
  const redis = await startRedis()
  let skew = 0
  const yaml = redisCacheYaml(origin.url, redis.url, redis.prefix, { commandTimeoutMs: 2000 })
  const a = await startTestGateway(yaml, { now: () => Date.now() + skew })
  const b = await startTestGateway(yaml)
  let n = 0
  let release!: () => void
  const held = new Promise<void>((resolve) => { release = resolve })
  origin.on('/two-waits', (req, res) => {
    n++
    if (req.headers['if-none-match'] === undefined) { res.writeHead(200, { 'cache-control': 'max-age=30, stale-while-revalidate=600', etag: '"v1"' }); res.end('v1'); return }
    // A revalidation (B's) hangs until the test lets it go.
    void held.then(() => { res.writeHead(200, { 'cache-control': 'max-age=600', etag: '"v2"' }); res.end('v2') })
  })
  try {
    assert.equal((await get(a.url, '/two-waits')).body, 'v1')
    // B sees A's entry through L2 (the write is asynchronous), then revalidates it on a client's
    // no-cache: B holds the key's fill lease while the origin hangs.
    const c = redis.client()
    await until('A\'s entry to reach L2', async () => (await c.keys(`${redis.prefix}{*}c:G|${HOST}|/two-waits`)).length > 0)
    assert.match(String((await get(b.url, '/two-waits')).headers['cache-status']), /^sluice; hit/)
    const fromB = get(b.url, '/two-waits', { 'cache-control': 'no-cache' })
    await until('B\'s fill to reach the origin', () => n === 2)
    // On A the entry is stale, within stale-while-revalidate: a plain GET is answered stale and
    // starts a background refresh, which finds the lease held and waits for B's fill.
    skew = 60_000
    assert.match(String((await get(a.url, '/two-waits')).headers['cache-status']), /STALE-WHILE-REVALIDATE/)
    await until('A\'s refresh to find the lease held', async () => await leases(a.adminUrl, 'held') === 1)
    // A client's no-cache on A: it too finds the lease held and waits for B's fill.
    const fromA = get(a.url, '/two-waits', { 'cache-control': 'no-cache' })
    await until('A\'s client to find the lease held', async () => await leases(a.adminUrl, 'held') === 2)
    release()
    assert.equal((await fromB).body, 'v2')
    const mine = await fromA
    assert.equal(mine.body, 'v2')
    assert.match(String(mine.headers['cache-status']), /collapsed/)
    assert.equal(n, 2, 'one request upstream for the three')
    // The refresh's wait settled too: nothing is left running on A (close() would wait for it).
    await until('A\'s background jobs to end', () => (a.gw.cache.stats().background as number) === 0, { tries: 100, detail: () => a.gw.cache.stats() })
  } finally { await a.close(); await b.close(); await redis.stop() }
})

test('an origin 5xx on a miss is a failure, not an uncacheable answer: the key is not made hit-for-miss, so the next misses are still coalesced', async () => {
  const g = await startTestGateway(cachedConfig(origin.url))
  let n = 0
  origin.on('/blip', (_req, res) => {
    if (n++ === 0) { res.writeHead(503, { 'content-type': 'text/plain' }); res.end('overloaded'); return }
    res.writeHead(200, { 'cache-control': 'max-age=60' })
    res.end('back')
  })
  try {
    const first = await get(g.url, '/blip')
    assert.equal(first.status, 503)
    // The origin is back: this miss leads a fill (stored), as any miss would; it does not go
    // straight upstream as HIT-FOR-MISS (which would also let every concurrent miss through).
    const next = await get(g.url, '/blip')
    assert.equal(next.body, 'back')
    assert.doesNotMatch(String(next.headers['cache-status']), /HIT-FOR-MISS/)
    assert.match(String((await get(g.url, '/blip')).headers['cache-status']), /^sluice; hit/)
    assert.equal(origin.count('/blip'), 2)
  } finally { await g.close() }
})

test('a 304 that re-tags the response (Cache-Tag) updates the stored entry\'s purge tags: a purge by the new tag takes it out', async () => {
  let skew = 0
  const g = await startTestGateway(cachedConfig(origin.url), { now: () => Date.now() + skew })
  origin.on('/retag', (req, res) => {
    if (req.headers['if-none-match'] === '"r1"') { res.writeHead(304, { 'cache-control': 'max-age=600', etag: '"r1"', 'cache-tag': 'listing, product-7' }); res.end(); return }
    res.writeHead(200, { 'cache-control': 'max-age=1', etag: '"r1"', 'cache-tag': 'listing' })
    res.end('page')
  })
  try {
    await get(g.url, '/retag')
    skew += 5000
    assert.match(String((await get(g.url, '/retag')).headers['cache-status']), /fwd-status=304; stored/)
    assert.match(String((await get(g.url, '/retag')).headers['cache-status']), /^sluice; hit/)
    const p = await request(`${g.adminUrl}/admin/purge`, { method: 'POST', body: '{"tag":"product-7"}', headers: { 'content-type': 'application/json' } })
    assert.equal(p.statusCode, 200)
    assert.equal((await p.body.json() as { purged: number }).purged, 1)
    assert.doesNotMatch(String((await get(g.url, '/retag')).headers['cache-status']), /^sluice; hit/)
  } finally { await g.close() }
})
