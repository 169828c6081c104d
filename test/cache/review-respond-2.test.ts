// Review: cache hits follow the route's compression config after a reload (the headers each
// stored coding is served with are rebuilt, not kept from before the reload), and the purge-log
// catch-up of a replica's L1 covers what the log cannot prove it holds (more purges than it
// keeps) and a subscriber that never connected at startup. Real gateways, a real loopback
// origin, a real redis-server.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { randomUUID } from 'node:crypto'
import { request } from 'undici'
import type { IncomingHttpHeaders } from 'node:http'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'
import { redisCacheYaml } from '../helpers/redis-cache-config.js'
import { startRedis } from '../helpers/redis.js'
import { until } from '../helpers/wait.js'

let origin: Origin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

const BODY = JSON.stringify({ items: Array.from({ length: 100 }, (_, i) => ({ id: i, name: `item ${i}` })) })

/** One cached route, with this compression block (empty: none). */
function compressed (compression: string): string {
  return simpleConfig(origin.url).replace(`  - name: all
    match: { pathPrefix: / }
    upstream: origin
`, `  - name: cached
    match: { pathPrefix: / }
    upstream: origin
    cache: { enabled: true }
${compression === '' ? '' : `    compression: ${compression}\n`}`)
}

async function fetchRaw (base: string, path: string, headers: Record<string, string> = {}) {
  const r = await request(base + path, { headers })
  return { status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) }
}

function variesByEncoding (h: IncomingHttpHeaders): boolean {
  const v = h.vary
  return v !== undefined && (Array.isArray(v) ? v.join(',') : v).split(',').some((t) => t.trim().toLowerCase() === 'accept-encoding')
}

async function reload (g: TestGateway, yaml: string): Promise<void> {
  g.write(yaml)
  const r = await g.gw.reloader.reload('test')
  assert.equal(r.ok, true, JSON.stringify(r))
}

function serveJson (path: string): void {
  origin.on(path, (_req, res) => { res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=600' }); res.end(BODY) })
}

test('a reload that turns a route\'s compression off: hits of entries stored with gzip/br copies get identity, without Vary: Accept-Encoding', async () => {
  const g = await startTestGateway(compressed('{ enabled: true, minBytes: 100, encodings: [br, gzip] }'))
  try {
    serveJson('/off')
    await fetchRaw(g.url, '/off', { 'accept-encoding': 'gzip' })
    await until('the stored gzip copy to be served', async () => (await fetchRaw(g.url, '/off', { 'accept-encoding': 'gzip' })).headers['content-encoding'] === 'gzip')
    // The identity headers are built (and kept) before the reload, on the fast path too.
    assert.ok(variesByEncoding((await fetchRaw(g.url, '/off')).headers), 'precondition: identity hits vary while compression is on')
    await reload(g, compressed('{ enabled: false }'))
    for (const ae of [{}, { 'accept-encoding': 'gzip' }, { 'accept-encoding': 'br' }] as Array<Record<string, string>>) {
      const r = await fetchRaw(g.url, '/off', ae)
      assert.match(String(r.headers['cache-status']), /hit/, 'still the stored entry')
      assert.equal(r.headers['content-encoding'], undefined, `no stored copy served (${JSON.stringify(ae)})`)
      assert.equal(r.body.toString(), BODY)
      assert.equal(variesByEncoding(r.headers), false, `no Vary: Accept-Encoding once nothing depends on it (${JSON.stringify(ae)}; got ${String(r.headers.vary)})`)
    }
    assert.equal(origin.count('/off'), 1, 'every answer came from the one stored entry')
  } finally { await g.close() }
})

test('a reload that turns a route\'s compression on: hits of an entry stored without it carry Vary: Accept-Encoding', async () => {
  const g = await startTestGateway(compressed(''))
  try {
    serveJson('/on')
    await fetchRaw(g.url, '/on')
    const before = await fetchRaw(g.url, '/on')
    assert.match(String(before.headers['cache-status']), /hit/)
    assert.equal(variesByEncoding(before.headers), false, 'precondition: no Vary while compression is off')
    await reload(g, compressed('{ enabled: true, minBytes: 100, encodings: [br, gzip] }'))
    const r = await fetchRaw(g.url, '/on')
    assert.match(String(r.headers['cache-status']), /hit/)
    assert.ok(variesByEncoding(r.headers), `identity hits say their bytes depend on Accept-Encoding now (got ${String(r.headers.vary)})`)
  } finally { await g.close() }
})

test('a reload that raises a route\'s minBytes above an entry\'s size: its identity hits (no copies) lose Vary: Accept-Encoding', async () => {
  // deflate only: the cache keeps no copy, so the entry stays identity-only.
  const g = await startTestGateway(compressed('{ enabled: true, minBytes: 100, encodings: [deflate] }'))
  try {
    serveJson('/threshold')
    await fetchRaw(g.url, '/threshold')
    assert.ok(variesByEncoding((await fetchRaw(g.url, '/threshold')).headers), 'precondition: identity hits vary')
    await reload(g, compressed(`{ enabled: true, minBytes: ${BODY.length + 1}, encodings: [deflate] }`))
    const r = await fetchRaw(g.url, '/threshold')
    assert.match(String(r.headers['cache-status']), /hit/)
    assert.equal(variesByEncoding(r.headers), false, `a body the route no longer compresses does not vary (got ${String(r.headers.vary)})`)
  } finally { await g.close() }
})

// ---- The purge-log catch-up -------------------------------------------------------------------

async function get (base: string, path: string) {
  const r = await request(base + path)
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}

async function purge (adminUrl: string, sel: object): Promise<void> {
  const p = await request(`${adminUrl}/admin/purge`, { method: 'POST', body: JSON.stringify(sel), headers: { 'content-type': 'application/json' } })
  assert.equal(p.statusCode, 200)
  await p.body.dump()
}

/** A TCP relay to Redis: `cutSubscribers()` drops the connections that sent SUBSCRIBE; while `refuse`, new connections are closed at once. */
async function relay (redisUrl: string, refuse = false) {
  const target = new URL(redisUrl)
  const subs = new Set<net.Socket>()
  const all = new Set<net.Socket>()
  const state = { refuse }
  const server = net.createServer((client) => {
    if (state.refuse) { client.destroy(); return }
    const up = net.connect(Number(target.port), target.hostname)
    all.add(client); all.add(up)
    const pair = [client, up]
    for (const s of pair) {
      s.on('error', () => {})
      s.on('close', () => { for (const o of pair) { o.destroy(); all.delete(o); subs.delete(o) } })
    }
    client.on('data', (d) => { if (/subscribe/i.test(d.toString('latin1'))) { subs.add(client); subs.add(up) } })
    client.pipe(up); up.pipe(client)
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

test('a replica whose subscriber was away while more purges ran than the purge log keeps drops its whole L1 on resubscribe, and says so', async () => {
  const redis = await startRedis()
  const c = redis.client()
  const r = await relay(redis.url)
  const a = await startTestGateway(redisCacheYaml(origin.url, redis.url, redis.prefix))
  const b = await startTestGateway(redisCacheYaml(origin.url, r.url, redis.prefix))
  const listeners = async () => Number(((await c.pubsub('NUMSUB', `${redis.prefix}purge`)) as [string, number])[1])
  try {
    let version = 'v1'
    origin.on('/trimmed', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600' }); res.end(version) })
    assert.equal((await get(b.url, '/trimmed')).body, 'v1')
    assert.match(String((await get(b.url, '/trimmed')).headers['cache-status']), /hit/, 'precondition: in B\'s L1')
    await until('both replicas to listen for purges', async () => await listeners() === 2)
    r.state.refuse = true
    r.cutSubscribers()
    await until('Redis to drop B\'s subscription', async () => await listeners() === 1)
    version = 'v2'
    await purge(a.adminUrl, { key: '/trimmed' })
    // Then 10,000 more purges by another replica, logged as RedisStore logs them: the log keeps
    // the newest 10,000, so the purge of /trimmed leaves it.
    const log = `${redis.prefix}purges`
    const at = Date.now() + 1
    const members: Array<string | number> = []
    for (let i = 0; i < 10_000; i++) members.push(at, JSON.stringify({ key: `/other-${i}`, from: 'another-replica', id: randomUUID() }))
    await c.zadd(log, ...members)
    await c.zremrangebyrank(log, 0, -10_000 - 1)
    assert.equal(await c.zcard(log), 10_000)
    assert.ok(!(await c.zrange(log, 0, -1)).some((m) => m.includes('"/trimmed"')), 'precondition: the purge of /trimmed was trimmed from the log')
    r.state.refuse = false
    await until('B to subscribe again', async () => await listeners() === 2, { tries: 400, intervalMs: 25 })
    await until('B to serve v2 (its L1 dropped)', async () => (await get(b.url, '/trimmed')).body === 'v2', { tries: 200, intervalMs: 25 })
    assert.ok(b.logs.some((l) => /whole L1/.test(String(l.msg)) && /more purges/.test(String(l.msg))), 'a log line says L1 was dropped, and why')
  } finally {
    await b.close(); await a.close(); await r.close(); await redis.stop()
  }
})

test('a replica whose subscriber could not connect at startup applies the purges logged meanwhile once it does', async () => {
  const redis = await startRedis()
  const c = redis.client()
  const r = await relay(redis.url, true) // B reaches no Redis at all yet
  const a = await startTestGateway(redisCacheYaml(origin.url, redis.url, redis.prefix))
  const b = await startTestGateway(redisCacheYaml(origin.url, r.url, redis.prefix))
  const listeners = async () => Number(((await c.pubsub('NUMSUB', `${redis.prefix}purge`)) as [string, number])[1])
  try {
    let version = 'v1'
    origin.on('/late-start', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600' }); res.end(version) })
    // B's L1 fills from the origin while its Redis is unreachable.
    assert.equal((await get(b.url, '/late-start')).body, 'v1')
    assert.match(String((await get(b.url, '/late-start')).headers['cache-status']), /hit/, 'precondition: in B\'s L1')
    await until('A to listen for purges', async () => await listeners() === 1)
    version = 'v2'
    await purge(a.adminUrl, { key: '/late-start' })
    r.state.refuse = false
    await until('B to subscribe for the first time', async () => await listeners() === 2, { tries: 400, intervalMs: 25 })
    await until('B to serve v2 (its L1 copy of v1 purged from the log)', async () => (await get(b.url, '/late-start')).body === 'v2', { tries: 200, intervalMs: 25 })
  } finally {
    await b.close(); await a.close(); await r.close(); await redis.stop()
  }
})
