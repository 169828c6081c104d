// A real 3-master Redis Cluster on loopback: the client Sluice builds from `redis.cluster`, the
// bucket and cache-store conformance suites on it, keys spread over the masters, two gateways
// sharing one per-client limit, and two gateways sharing L2, purges and miss coalescing.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { request } from 'undici'
import pino from 'pino'
import { startRedisCluster } from '../helpers/redis-cluster.js'
import { startOrigin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { createRedis } from '../../src/redis/client.js'
import { createMetrics } from '../../src/observability/metrics.js'
import { RedisBucketStore } from '../../src/resilience/bucket-redis.js'
import { bucketConformance } from '../resilience/bucket-conformance.js'
import { RedisStore } from '../../src/httpcache/redis-store.js'
import { storeConformance } from '../cache/store-suite.js'

const cluster = await startRedisCluster(3)
const origin = await startOrigin()
const handle = createRedis({ url: '', keyPrefix: cluster.prefix, commandTimeoutMs: 2000, connectTimeoutMs: 2000, cluster: { nodes: cluster.nodes } },
  { log: pino({ level: 'silent' }), metrics: createMetrics({ processMetrics: false }) })
const gateways: TestGateway[] = []
after(async () => {
  for (const g of gateways) await g.close().catch(() => {})
  await handle.close()
  await origin.close()
  await cluster.stop()
})
if (handle.client.status !== 'ready') await once(handle.client, 'ready')

const store = new RedisBucketStore(handle.client, `${cluster.prefix}rl:`, 2000)
bucketConformance('cluster', () => store)
storeConformance('cluster', () => new RedisStore(handle.client, `${cluster.prefix}cs${Math.random().toString(36).slice(2, 8)}:`, (op, err) => { throw new Error(`${op}: ${err.message}`) }))

/** Wait (boundedly) until a gateway's /readyz reports its Redis healthy; its Redis details then, or undefined. */
async function redisHealthy (g: TestGateway): Promise<{ healthy?: boolean; mode?: string } | undefined> {
  for (let t = 0; t < 200; t++) {
    const r = await (await request(g.adminUrl + '/readyz')).body.json() as { details?: { redis?: { healthy?: boolean; mode?: string } } }
    if (r.details?.redis?.healthy) return r.details.redis
    await new Promise((res) => setTimeout(res, 50))
  }
  return undefined
}

test('cluster: the client is a Cluster in cluster mode, and buckets spread over every master', async () => {
  assert.equal(handle.mode, 'cluster')
  assert.equal(handle.status().healthy, true)
  const names = Array.from({ length: 30 }, (_, i) => `spread-${i}`)
  for (const n of names) assert.equal(await store.take(n, 10, 5, 0), 0)
  const perNode = await Promise.all([0, 1, 2].map(async (i) => {
    const c = cluster.node(i)
    let held = 0
    for (const n of names) {
      // EXISTS on a node that does not own the slot answers MOVED; count only the owner's yes.
      try { held += await c.exists(store.key(n)) } catch { /* MOVED */ }
    }
    return held
  }))
  assert.equal(perNode.reduce((a, b) => a + b, 0), names.length, 'each bucket on exactly one master')
  assert.equal(perNode.filter((h) => h > 0).length, 3, `every master holds some: ${perNode}`)
})

test('cluster: a script flushed from every master is loaded again (EVALSHA falls back to EVAL)', async () => {
  for (const i of [0, 1, 2]) await cluster.node(i).script('FLUSH')
  for (let i = 0; i < 6; i++) assert.ok(await store.take(`after-flush-${i}`, 10, 5, 0) >= 0)
})

test('cluster: the subscriber hook (for cache purges) receives what another client publishes', async () => {
  const sub = handle.subscriber()
  try {
    const channel = `${cluster.prefix}purge`
    await sub.subscribe(channel)
    const got = once(sub, 'message')
    // Publish through another node than the subscriber's: the cluster bus forwards it.
    for (const i of [0, 1, 2]) await cluster.node(i).publish(channel, `hello-${i}`)
    const [ch, msg] = await got
    assert.equal(ch, channel)
    assert.match(String(msg), /^hello-/)
  } finally { sub.disconnect() }
})

test('cluster: duplicate({ options }) as a single-server store calls it gives a queueing Cluster subscriber', async () => {
  const sub = handle.client.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null, commandTimeout: undefined } as never)
  sub.on('error', () => {})
  try {
    const channel = `${cluster.prefix}dup`
    await sub.subscribe(channel) // sent before the connection is up: queued, not refused
    const got = once(sub, 'message')
    await cluster.node(1).publish(channel, 'x')
    assert.equal(String((await got)[1]), 'x')
  } finally { sub.disconnect() }
})

test('cluster: two gateways configured with redis.cluster share one per-client limit', async () => {
  const yaml = `
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
redis:
  keyPrefix: "${cluster.prefix}gw:"
  commandTimeoutMs: 2000
  cluster: { nodes: [${cluster.nodes.map((n) => `"${n}"`).join(', ')}] }
upstreams: { origin: { url: "${origin.url}" } }
routes:
  - name: limited
    match: { pathPrefix: / }
    upstream: origin
    rateLimit: { perClient: { requestsPerSecond: 0.01, burst: 10, key: ip } }
`
  for (let i = 0; i < 2; i++) gateways.push(await startTestGateway(yaml))
  for (const g of gateways) {
    // Ready once the cluster client is (the limiter answers locally until then).
    const redis = await redisHealthy(g)
    if (redis) assert.equal(redis.mode, 'cluster')
  }
  const codes: number[] = []
  for (let i = 0; i < 30; i++) {
    const r = await request(gateways[i % 2].url + '/x')
    await r.body.dump()
    codes.push(r.statusCode)
  }
  assert.equal(codes.filter((s) => s === 200).length, 10, 'one bucket in the cluster for both gateways')
  assert.equal(codes.filter((s) => s === 429).length, 20)
})

test('cluster: two gateways share L2, a purge reaches both, and concurrent misses on both send one request', async () => {
  origin.on('/cc', (req, res) => { setTimeout(() => { res.setHeader('cache-control', 'max-age=60'); res.end('cc ' + req.url) }, req.url?.includes('burst') ? 300 : 0) })
  const yaml = `
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
redis:
  keyPrefix: "${cluster.prefix}cc:"
  commandTimeoutMs: 2000
  cluster: { nodes: [${cluster.nodes.map((n) => `"${n}"`).join(', ')}] }
upstreams: { origin: { url: "${origin.url}", connections: 256 } }
routes:
  - { name: cached, match: { pathPrefix: / }, upstream: origin, cache: { enabled: true } }
`
  const [a, b] = [await startTestGateway(yaml), await startTestGateway(yaml)]
  gateways.push(a, b)
  for (const g of [a, b]) await redisHealthy(g)
  const get = async (g: TestGateway, path: string) => {
    const r = await request(g.url + path, { headers: { host: 'cluster.example' } })
    return { body: await r.body.text(), cache: String(r.headers['cache-status']) }
  }
  // Filled through A, an L2 hit on B.
  assert.equal((await get(a, '/cc?k=1')).cache, 'sluice; fwd=miss; stored')
  let fromB = await get(b, '/cc?k=1')
  for (let t = 0; t < 100 && !/hit/.test(fromB.cache); t++) { await new Promise((res) => setTimeout(res, 20)); fromB = await get(b, '/cc?k=1') }
  assert.match(fromB.cache, /sluice; hit/)
  assert.equal(origin.count('/cc?k=1'), 1)
  // A purge on A empties L2 and, through pub/sub on the cluster, B's L1.
  const p = await request(a.adminUrl + '/admin/purge', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prefix: '/cc' }) })
  assert.equal(p.statusCode, 200, await p.body.text())
  let again = await get(b, '/cc?k=1')
  for (let t = 0; t < 100 && /hit/.test(again.cache); t++) { await new Promise((res) => setTimeout(res, 20)); again = await get(b, '/cc?k=1') }
  assert.equal(again.cache, 'sluice; fwd=miss; stored')
  assert.equal(origin.count('/cc?k=1'), 2)
  // 100 concurrent misses over both gateways: the fill lease (in the URL's slot) lets one through.
  const all = await Promise.all(Array.from({ length: 100 }, (_, i) => get(i % 2 ? a : b, '/cc?burst=1')))
  for (const r of all) assert.equal(r.body, 'cc /cc?burst=1')
  assert.equal(origin.count('/cc?burst=1'), 1)
})
