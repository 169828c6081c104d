// The purge bus across a subscriber reconnect: purges whose messages were lost while a
// replica's subscriber was away reach its L1 through the purge log. Real gateways, a real
// origin, a real redis-server, and a loopback TCP relay between one gateway and Redis that can
// drop its subscriber connection and refuse new ones for a while.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { redisCacheYaml } from '../helpers/redis-cache-config.js'
import { startTestGateway } from '../helpers/gateway.js'
import { startRedis } from '../helpers/redis.js'
import { until } from '../helpers/wait.js'

let origin: Origin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

const config = (redisUrl: string, prefix: string) => redisCacheYaml(origin.url, redisUrl, prefix)

async function get (base: string, path: string) {
  const r = await request(base + path)
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}

/** A TCP relay to Redis: `cutSubscribers()` drops the connections that sent SUBSCRIBE; while `refuse`, new connections are closed at once. */
async function relay (redisUrl: string) {
  const target = new URL(redisUrl)
  const subs = new Set<net.Socket>()
  const all = new Set<net.Socket>()
  const state = { refuse: false }
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
    subscribers: () => subs.size,
    cutSubscribers () { for (const s of [...subs]) s.destroy() },
    close: async () => { for (const s of all) s.destroy(); await new Promise((resolve) => server.close(resolve)) }
  }
}

test('a purge whose message was lost while a replica\'s subscriber reconnected still clears that replica\'s L1 (the purge log is read on resubscribe)', async () => {
  const redis = await startRedis()
  const c = redis.client()
  const r = await relay(redis.url)
  const a = await startTestGateway(config(redis.url, redis.prefix))
  const b = await startTestGateway(config(r.url, redis.prefix))
  const listeners = async () => Number(((await c.pubsub('NUMSUB', `${redis.prefix}purge`)) as [string, number])[1])
  try {
    let version = 'v1'
    origin.on('/reconnect', (_req, res) => { res.writeHead(200, { 'cache-control': 'max-age=600' }); res.end(version) })
    assert.equal((await get(b.url, '/reconnect')).body, 'v1')
    assert.match(String((await get(b.url, '/reconnect')).headers['cache-status']), /hit/, 'precondition: in B\'s L1')
    await until('both replicas to listen for purges', async () => await listeners() === 2)
    // B's subscriber goes away, and cannot come back yet.
    r.state.refuse = true
    r.cutSubscribers()
    await until('Redis to drop B\'s subscription', async () => await listeners() === 1)
    version = 'v2'
    const p = await request(`${a.adminUrl}/admin/purge`, { method: 'POST', body: '{"key":"/reconnect"}', headers: { 'content-type': 'application/json' } })
    assert.equal(p.statusCode, 200)
    await p.body.dump()
    r.state.refuse = false
    await until('B to subscribe again', async () => await listeners() === 2, { tries: 400, intervalMs: 25 })
    await until('B to serve v2 (its L1 copy of v1 purged)', async () => (await get(b.url, '/reconnect')).body === 'v2', { tries: 200, intervalMs: 25 })
  } finally {
    await b.close(); await a.close(); await r.close(); await redis.stop()
  }
})
