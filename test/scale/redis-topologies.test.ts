// Redis beyond one plain server, with real processes: Sentinel (a master, a replica and three
// sentinels, followed through a failover), TLS (rediss:// with a CA made by openssl) and ACL
// users. Each gateway still serves when its Redis is unusable, and no password reaches a log.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import diagnostics from 'node:diagnostics_channel'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import pino from 'pino'
import { startSentinelSet, startTlsRedis, type SentinelSet, type TlsRedis } from '../helpers/redis-servers.js'
import { startRedis, type RedisHandle } from '../helpers/redis.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { createRedis } from '../../src/redis/client.js'
import { createMetrics } from '../../src/observability/metrics.js'

let origin: Origin
let sentinel: SentinelSet
let tls: TlsRedis
let plain: RedisHandle
const gateways: TestGateway[] = []
const closers: (() => Promise<unknown>)[] = []

before(async () => {
  origin = await startOrigin()
  origin.on('/c', (req, res) => { res.setHeader('cache-control', 'max-age=60'); res.end('cached ' + req.url) })
  ;[sentinel, tls, plain] = await Promise.all([startSentinelSet(), startTlsRedis(), startRedis({ own: true })])
})
after(async () => {
  for (const g of gateways) await g.close().catch(() => {})
  for (const c of closers) await c().catch(() => {})
  await Promise.all([sentinel?.stop(), tls?.stop(), plain?.stop()])
  await origin.close()
})

const quiet = () => ({ log: pino({ level: 'silent' }), metrics: createMetrics({ processMetrics: false }) })

async function gateway (redisYaml: string): Promise<TestGateway> {
  const g = await startTestGateway(`listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: false }
redis: ${redisYaml}
upstreams: { origin: { url: "${origin.url}" } }
routes:
  - { name: cached, match: { pathPrefix: / }, upstream: origin, cache: { enabled: true } }
`)
  gateways.push(g)
  return g
}

async function get (g: TestGateway, path: string): Promise<{ status: number; body: string; cache: string }> {
  const r = await request(g.url + path, { headers: { host: 'topology.example' } })
  return { status: r.statusCode, body: await r.body.text(), cache: String(r.headers['cache-status'] ?? '') }
}

async function readyz (g: TestGateway): Promise<{ status: string; degraded: string[] }> {
  return await (await request(g.adminUrl + '/readyz')).body.json() as never
}

async function eventually (what: string, check: () => Promise<boolean>, tries = 200): Promise<void> {
  for (let i = 0; i < tries; i++) {
    try { if (await check()) return } catch { /* not yet */ }
    await sleep(50)
  }
  assert.fail(`${what} did not happen`)
}

test('sentinel: the client finds the master through the sentinels, and two gateways share L2 through it', async () => {
  const h = createRedis({ url: '', keyPrefix: 'sl:', commandTimeoutMs: 1000, connectTimeoutMs: 1000, sentinels: sentinel.sentinels, name: 'mymaster' }, quiet())
  closers.push(() => h.close())
  if (h.client.status !== 'ready') await once(h.client, 'ready')
  assert.equal(h.mode, 'sentinel')
  await h.client.set('sl:probe', 'x')
  assert.equal(await sentinel.node(sentinel.masterPort).get('sl:probe'), 'x', 'the write went to the master')

  const yaml = `{ sentinels: [${sentinel.sentinels.map((s) => `"${s}"`).join(', ')}], name: mymaster, keyPrefix: "st:", commandTimeoutMs: 1000 }`
  const [a, b] = [await gateway(yaml), await gateway(yaml)]
  await eventually('both gateways ready with Redis', async () => (await readyz(a)).status === 'ready' && (await readyz(b)).status === 'ready')
  assert.equal((await get(a, '/c?s=1')).cache, 'sluice; fwd=miss; stored')
  await eventually('the entry is in L2', async () => (await sentinel.node(sentinel.masterPort).keys('st:*c:*')).length > 0)
  const fromB = await get(b, '/c?s=1')
  assert.equal(fromB.body, 'cached /c?s=1')
  assert.match(fromB.cache, /sluice; hit/)
  assert.equal(origin.count('/c?s=1'), 1)
})

test('sentinel: after a failover the client follows the new master, and the gateway keeps storing', async () => {
  const h = createRedis({ url: '', keyPrefix: 'sl:', commandTimeoutMs: 1000, connectTimeoutMs: 1000, sentinels: sentinel.sentinels, name: 'mymaster' }, quiet())
  closers.push(() => h.close())
  if (h.client.status !== 'ready') await once(h.client, 'ready')
  const g = gateways[0]
  const before = await sentinel.currentMaster()
  await sentinel.sentinel().call('SENTINEL', 'FAILOVER', 'mymaster')
  await eventually('the sentinels name a new master', async () => (await sentinel.currentMaster()) !== before)
  const now = await sentinel.currentMaster()
  assert.equal(now, before === sentinel.masterPort ? sentinel.replicaPort : sentinel.masterPort)
  // Writes go to the new master once the client has followed it (commands during the switch fail and are counted).
  await eventually('a write through the client lands on the new master', async () => {
    await h.client.set('sl:after', 'y')
    return (await sentinel.node(now).get('sl:after')) === 'y'
  })
  // Requests never fail during or after the switch; new entries reach the new master.
  await eventually('a new entry stored by the gateway reaches the new master', async () => {
    const r = await get(g, `/c?s=after-${Math.random()}`)
    assert.equal(r.status, 200)
    return (await sentinel.node(now).keys('st:*c:*s=after-*')).length > 0
  })
})

test('TLS: rediss:// with redis.tls.caFile connects and stores; without the CA it never connects and the gateway serves from memory', async () => {
  const h = createRedis({ url: `rediss://127.0.0.1:${tls.port}`, keyPrefix: 'tl:', commandTimeoutMs: 1000, connectTimeoutMs: 1000, tls: { caFile: tls.caFile } }, quiet())
  closers.push(() => h.close())
  if (h.client.status !== 'ready') await once(h.client, 'ready')
  await h.client.set('tl:probe', 'over tls')
  assert.equal(await tls.client().get('tl:probe'), 'over tls')

  const good = await gateway(`{ url: "rediss://127.0.0.1:${tls.port}", tls: { caFile: "${tls.caFile}" }, keyPrefix: "tg:" }`)
  await eventually('ready with Redis over TLS', async () => (await readyz(good)).status === 'ready')
  assert.equal((await get(good, '/c?t=1')).status, 200)
  await eventually('the entry is in L2, over TLS', async () => (await tls.client().keys('tg:*c:*')).length > 0)

  const untrusted = await gateway(`{ url: "rediss://127.0.0.1:${tls.port}", keyPrefix: "tu:", connectTimeoutMs: 3000, commandTimeoutMs: 1500 }`)
  await eventually('the untrusted certificate is reported', async () => {
    const r = await readyz(untrusted)
    return r.status === 'degraded' && r.degraded.includes('redis')
  })
  const first = await get(untrusted, '/c?t=2')
  assert.equal(first.status, 200)
  assert.equal(first.cache, 'sluice; fwd=miss; stored')
  assert.match((await get(untrusted, '/c?t=2')).cache, /sluice; hit/, 'served from L1')
  assert.equal((await tls.client().keys('tu:*')).length, 0)
  // Timeouts well above a loopback handshake, so the first failure logged is the certificate's
  // even on a loaded machine (a command timeout first would be logged instead).
  await eventually('the log says why', async () => untrusted.logs.some((l) => /redis unavailable/.test(String(l.msg)) && /certificate/i.test(String(l.err))))
})

test('a second error on one Redis socket (one server, TLS, sentinel) is not an uncaught exception: ioredis listens once, Sluice keeps listening', async () => {
  const shapes = [
    { url: plain.url, keyPrefix: 'e2:', commandTimeoutMs: 1000, connectTimeoutMs: 1000 },
    { url: `rediss://127.0.0.1:${tls.port}`, keyPrefix: 'e2:', commandTimeoutMs: 1000, connectTimeoutMs: 1000, tls: { caFile: tls.caFile } },
    { url: '', sentinels: sentinel.sentinels, name: 'mymaster', keyPrefix: 'e2:', commandTimeoutMs: 1000, connectTimeoutMs: 1000 }
  ]
  for (const cfg of shapes) {
    const h = createRedis(cfg, quiet())
    closers.push(() => h.close())
    if (h.client.status !== 'ready') await once(h.client, 'ready')
    const stream = (h.client as unknown as { stream: import('node:net').Socket }).stream
    const seen: Error[] = []
    h.client.on('error', (e: Error) => seen.push(e))
    // As a TLS socket does when an alert arrives while it is torn down: two 'error' events.
    stream.emit('error', new Error('first'))
    assert.doesNotThrow(() => stream.emit('error', new Error('tlsv1 alert decode error')), cfg.url || 'sentinel')
    assert.deepEqual(seen.map((e) => e.message), ['first'], 'the first error is reported as before')
    await h.close()
  }
})

test('sentinel: a second error on a socket to a sentinel (the clients ioredis makes to ask them) is not an uncaught exception either', async () => {
  // Every client socket this process opens while the client finds its master.
  const sockets: import('node:net').Socket[] = []
  const seen = (m: unknown) => { sockets.push((m as { socket: import('node:net').Socket }).socket) }
  diagnostics.subscribe('net.client.socket', seen)
  let h: ReturnType<typeof createRedis>
  try {
    h = createRedis({ url: '', sentinels: sentinel.sentinels, name: 'mymaster', keyPrefix: 'e3:', commandTimeoutMs: 1000, connectTimeoutMs: 1000 }, quiet())
    closers.push(() => h.close())
    if (h.client.status !== 'ready') await once(h.client, 'ready')
  } finally {
    diagnostics.unsubscribe('net.client.socket', seen)
  }
  const master = (h.client as unknown as { stream: import('node:net').Socket }).stream
  const toSentinels = sockets.filter((s) => s !== master)
  assert.ok(toSentinels.length > 0, 'the sentinels were asked')
  for (const s of toSentinels) {
    s.emit('error', new Error('first'))
    assert.doesNotThrow(() => s.emit('error', new Error('tlsv1 alert decode error')))
  }
  await h.close()
})

test('ACL: a user limited to the key prefix works; a wrong password leaves Redis unhealthy, requests served, and no password in any log', async () => {
  const port = new URL(plain.url).port
  const admin = plain.client()
  await admin.call('ACL', 'SETUSER', 'sluice', 'on', '>pw-ACL-right-123', '~ac:*', '&*', '+@all')
  const ok = await gateway(`{ url: "redis://127.0.0.1:${port}", username: sluice, password: "pw-ACL-right-123", keyPrefix: "ac:" }`)
  await eventually('ready with the ACL user', async () => (await readyz(ok)).status === 'ready')
  assert.equal((await get(ok, '/c?a=1')).status, 200)
  await eventually('the entry is stored under the allowed prefix', async () => (await admin.keys('ac:*c:*')).length > 0)
  // The purge fan-out (pub/sub on ac:purge) is allowed by &*: a purge answers without a Redis error.
  const purge = await request(ok.adminUrl + '/admin/purge', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prefix: '/c' }) })
  assert.equal(purge.statusCode, 200, await purge.body.text())

  const bad = await gateway(`{ url: "redis://127.0.0.1:${port}", username: sluice, password: "pw-ACL-wrong-456", keyPrefix: "ac:", connectTimeoutMs: 3000, commandTimeoutMs: 1500 }`)
  await eventually('the wrong password is reported', async () => (await readyz(bad)).degraded.includes('redis'))
  for (let i = 0; i < 3; i++) assert.equal((await get(bad, `/c?a=bad${i}`)).status, 200)
  for (const g of [ok, bad]) {
    const text = JSON.stringify(g.logs)
    assert.equal(text.includes('pw-ACL-right-123'), false)
    assert.equal(text.includes('pw-ACL-wrong-456'), false)
  }
  // Timeouts well above a loopback round trip, so the first failure logged is the refused
  // password even on a loaded machine (a command timeout first would be logged instead).
  await eventually('the log says why', async () => bad.logs.some((l) => /WRONGPASS|invalid username-password/i.test(String(l.err))))
})
