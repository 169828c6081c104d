// Leftovers of the L2 and purge-bus review, against real redis-servers: a tag purge that fails
// partway can be retried; the purge-log catch-up after a resubscribe retries a failed read (and
// drops L1 when the loss outlasted the log); purge messages do not cross Redis databases.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { request } from 'undici'
import { Redis } from 'ioredis'
import { RedisStore } from '../../src/httpcache/redis-store.js'
import { entry } from './store-suite.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { redisCacheYaml } from '../helpers/redis-cache-config.js'
import { startTestGateway } from '../helpers/gateway.js'
import { startRedis } from '../helpers/redis.js'
import { until } from '../helpers/wait.js'

let origin: Origin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

const esc = (s: string) => s.replace(/[*?[\]\\]/g, '\\$&')

async function get (base: string, path: string) {
  const r = await request(base + path)
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}

async function purge (adminUrl: string, sel: object): Promise<void> {
  const r = await request(`${adminUrl}/admin/purge`, { method: 'POST', body: JSON.stringify(sel), headers: { 'content-type': 'application/json' } })
  assert.equal(r.statusCode, 200)
  await r.body.dump()
}

test('a purge by tag that fails partway through its deletes deletes the rest when it is retried', async () => {
  const redis = await startRedis({ own: true })
  const c = redis.client()
  const prefix = redis.prefix
  // A user that may DEL the tag set and the /part/a* entries, but not the /part/b* ones: the
  // purge fails after some of its deletes, as one whose connection drops or times out would.
  await c.call('ACL', 'SETUSER', 'purger', 'on', '>pw', '~*', '&*', '+@all', '-del', `(+del ~${prefix}t:* ~${prefix}*|/part/a*)`)
  const gw = new Redis(redis.url, { username: 'purger', password: 'pw', maxRetriesPerRequest: 0, commandTimeout: 2000 })
  gw.on('error', () => {})
  const errors: string[] = []
  const store = new RedisStore(gw, prefix, (op, err) => { errors.push(`${op}: ${err.message}`) })
  try {
    const keys: string[] = []
    for (let i = 0; i < 300; i++) keys.push(`${prefix}{s${i}}c:G|example.com|/part/${i % 2 === 0 ? 'a' : 'b'}${i}`)
    const p = c.pipeline()
    for (const k of keys) p.set(k, 'x', 'PX', 600_000)
    p.sadd(`${prefix}t:{part}`, ...keys)
    await p.exec()
    await assert.rejects(store.purge({ tag: 'part' }), /NOPERM|permission/i)
    assert.ok(errors.length > 0, 'the failure is reported')
    assert.ok((await c.exists(...keys)) > 0, 'precondition: some entries survived the failed purge')
    // The cause goes away (Redis is reachable again); the operator retries.
    await c.call('ACL', 'SETUSER', 'purger', '+del')
    await store.purge({ tag: 'part' })
    assert.equal(await c.exists(...keys), 0, 'the retry deleted every entry the tag names')
    assert.equal(await c.exists(`${prefix}t:{part}`), 0, 'and the tag set, now empty')
  } finally {
    gw.disconnect()
    await redis.stop()
  }
})

test('gateways on different databases of one Redis server do not purge each other\'s L1 (channels are per database)', async () => {
  const redis = await startRedis({ own: true })
  const db2 = new Redis(redis.url + '/2')
  db2.on('error', () => {})
  const cfg = (db: number) => redisCacheYaml(origin.url, `${redis.url}/${db}`, redis.prefix)
  const a = await startTestGateway(cfg(1))
  const b = await startTestGateway(cfg(2))
  const c = await startTestGateway(cfg(2))
  try {
    const version: Record<string, string> = { '/db-iso': 'v1', '/db-marker': 'm1' }
    for (const path of Object.keys(version)) {
      origin.on(path, (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600' }); res.end(version[path]) })
      assert.equal((await get(b.url, path)).body, version[path])
    }
    assert.equal((await get(a.url, '/db-iso')).body, 'v1')
    // B's L2 copy of /db-iso goes (only its L1 holds it now), once its background write landed.
    await until('B\'s L2 write', async () => (await db2.keys(`${esc(redis.prefix)}*c:*|/db-iso*`)).length > 0)
    await db2.del(...await db2.keys(`${esc(redis.prefix)}*c:*|/db-iso*`))
    version['/db-iso'] = 'v2'
    version['/db-marker'] = 'm2'
    // A purges on database 1; then C on database 2, whose message B must get (and after A's).
    await purge(a.adminUrl, { key: '/db-iso' })
    await purge(c.adminUrl, { key: '/db-marker' })
    await until('B to hear C\'s purge', async () => (await get(b.url, '/db-marker')).body === 'm2', { tries: 200, intervalMs: 25 })
    assert.equal((await get(b.url, '/db-iso')).body, 'v1', 'A\'s purge on another database left B\'s L1 alone')
    assert.equal((await get(a.url, '/db-iso')).body, 'v2', 'and purged A\'s own')
  } finally {
    await c.close(); await b.close(); await a.close(); db2.disconnect(); await redis.stop()
  }
})

/**
 * A TCP relay to Redis: `cutSubscribers()` drops the connections that sent SUBSCRIBE; while
 * `refuse`, new connections are closed at once; while `failLogReads`, a connection that sends
 * ZRANGEBYSCORE (a purge-log read) is dropped instead, and `failedReads` counts it.
 */
async function relay (redisUrl: string) {
  const target = new URL(redisUrl)
  const subs = new Set<net.Socket>()
  const all = new Set<net.Socket>()
  const state = { refuse: false, failLogReads: false, failedReads: 0 }
  const server = net.createServer((client) => {
    if (state.refuse) { client.destroy(); return }
    const up = net.connect(Number(target.port), target.hostname)
    all.add(client); all.add(up)
    const pair = [client, up]
    for (const s of pair) {
      s.on('error', () => {})
      s.on('close', () => { for (const o of pair) { o.destroy(); all.delete(o); subs.delete(o) } })
    }
    client.on('data', (d) => {
      const text = d.toString('latin1')
      if (state.failLogReads && /zrangebyscore/i.test(text)) { state.failedReads++; client.destroy(); return }
      if (/subscribe/i.test(text)) { subs.add(client); subs.add(up) }
      up.write(d)
    })
    up.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  return {
    url: `redis://127.0.0.1:${port}`,
    state,
    cutSubscribers () { for (const s of [...subs]) s.destroy() },
    close: async () => { for (const s of all) s.destroy(); await new Promise((resolve) => server.close(resolve)) }
  }
}

/**
 * Replica A talks to Redis directly, B through a relay. B caches `path`; its subscriber is cut
 * and kept away while A purges `path`; `meanwhile` runs; then B may reconnect.
 */
async function purgeWhileAway (opts: { path: string, maxAge: number, now?: () => number }, meanwhile: (ctx: { r: Awaited<ReturnType<typeof relay>>, c: Redis, prefix: string }) => Promise<void>, check: (ctx: { b: Awaited<ReturnType<typeof startTestGateway>>, r: Awaited<ReturnType<typeof relay>> }) => Promise<void>) {
  const redis = await startRedis()
  const c = redis.client()
  const r = await relay(redis.url)
  const a = await startTestGateway(redisCacheYaml(origin.url, redis.url, redis.prefix))
  const b = await startTestGateway(redisCacheYaml(origin.url, r.url, redis.prefix), { now: opts.now })
  const listeners = async () => Number(((await c.pubsub('NUMSUB', `${redis.prefix}purge`)) as [string, number])[1])
  try {
    let version = 'v1'
    origin.on(opts.path, (_req, res) => { res.writeHead(200, { 'cache-control': `max-age=${opts.maxAge}` }); res.end(version) })
    assert.equal((await get(b.url, opts.path)).body, 'v1')
    assert.match(String((await get(b.url, opts.path)).headers['cache-status']), /hit/, 'precondition: in B\'s L1')
    await until('both replicas to listen for purges', async () => await listeners() === 2)
    r.state.refuse = true
    r.cutSubscribers()
    await until('Redis to drop B\'s subscription', async () => await listeners() === 1)
    version = 'v2'
    await purge(a.adminUrl, { key: opts.path })
    await meanwhile({ r, c, prefix: redis.prefix })
    r.state.refuse = false
    await until('B to subscribe again', async () => await listeners() === 2, { tries: 400, intervalMs: 25 })
    await check({ b, r })
  } finally {
    await b.close(); await a.close(); await r.close(); await redis.stop()
  }
}

test('a purge-log catch-up after a resubscribe whose read fails is tried again until it succeeds', async () => {
  await purgeWhileAway({ path: '/catchup-retry', maxAge: 600 }, async ({ r }) => { r.state.failLogReads = true }, async ({ b, r }) => {
    await until('B\'s catch-up read to fail', async () => r.state.failedReads > 0, { tries: 400, intervalMs: 25 })
    r.state.failLogReads = false
    await until('B to serve v2 (its L1 copy of v1 purged by a later catch-up read)', async () => (await get(b.url, '/catchup-retry')).body === 'v2', { tries: 600, intervalMs: 25 })
  })
})

test('a subscriber away for longer than the purge log keeps purges drops the replica\'s whole L1, and says so', async () => {
  let offset = 0
  await purgeWhileAway({ path: '/catchup-late', maxAge: 86_400, now: () => Date.now() + offset }, async ({ c, prefix }) => {
    // Two hours go by (by B's clock): the purge has left the log.
    await c.del(`${prefix}purges`)
    offset = 2 * 3_600_000
  }, async ({ b }) => {
    await until('B to serve v2 (its L1 dropped)', async () => (await get(b.url, '/catchup-late')).body === 'v2', { tries: 400, intervalMs: 25 })
    assert.ok(b.logs.some((l) => /whole L1/.test(String(l.msg))), 'a log line says L1 was dropped')
  })
})

test('an L2 write whose tagging fails leaves no record that a purge by that tag would miss', async () => {
  const redis = await startRedis({ own: true })
  const c = redis.client()
  const prefix = redis.prefix
  // A user whose scripts may touch a URL's keys but not a tag set: the record is stored, its tagging fails.
  await c.call('ACL', 'SETUSER', 'tagless', 'on', '>pw', '~*', '&*', '+@all', '-eval', '-evalsha', `(+eval +evalsha ~${prefix}{*)`)
  const gw = new Redis(redis.url, { username: 'tagless', password: 'pw', maxRetriesPerRequest: 0, commandTimeout: 2000 })
  gw.on('error', () => {})
  const errors: string[] = []
  const writer = new RedisStore(gw, prefix, (op, err) => { errors.push(`${op}: ${err.message}`) })
  const admin = new RedisStore(c, prefix, () => {})
  try {
    await writer.set(entry('/tagged', { tags: ['shelf'] }), 60_000)
    assert.ok(errors.some((e) => /NOPERM|permission/i.test(e)), 'precondition: the tagging failed, and was reported')
    await admin.purge({ tag: 'shelf' })
    assert.equal(await admin.get('G|example.com|/tagged'), undefined, 'nothing the tag names is left in L2 after a purge by it')
  } finally {
    gw.disconnect()
    await redis.stop()
  }
})
