// End to end: Redis killed (SIGKILL) under load, with two real gateways sharing it for their
// per-client limits and upstream budget. No request fails because of Redis (every answer is 200
// or a legitimate 429), /readyz reports degraded, sluice_redis_errors_total grows, and the limits
// fall back to local buckets sized to each replica's share; after a restart they are shared again.
// A last test runs one gateway on its own Redis with limits that never reject: every response is 200
// before, during and after the outage.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startOrigin } from '../helpers/origin.js'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { startRedis } from '../helpers/redis.js'
import { guardProcessHealth } from './helpers.js'
import { metric } from '../helpers/metrics.js'

guardProcessHealth()

const origin = await startOrigin()
const redis = await startRedis({ own: true }) // a server this file may kill and restart
const CLIENT_BURST = 4
const config = `
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: false }
redis: { url: "${redis.url}", keyPrefix: "${redis.prefix}" }
upstreams:
  main:
    url: ${origin.url}
    timeoutMs: 3000
    rateLimit: { requestsPerSecond: 200, burst: 100, expectedReplicas: 2 }
routes:
  - name: keyed
    match: { pathPrefix: /keyed/ }
    upstream: main
    rateLimit: { perClient: { requestsPerSecond: 1, burst: ${CLIENT_BURST}, key: "header:x-client", expectedReplicas: 2 } }
  - name: load
    match: { pathPrefix: / }
    upstream: main
    rateLimit: { perClient: { requestsPerSecond: 150, burst: 50, expectedReplicas: 2 } }
`
const gws: TestGateway[] = [await startTestGateway(config), await startTestGateway(config)]
const [A, B] = gws

after(async () => {
  for (const g of gws) await g.close()
  await origin.close()
  await redis.stop()
})

async function readyz (g: TestGateway): Promise<{ status: number; degraded: string[] }> {
  const r = await request(g.adminUrl + '/readyz')
  const body = await r.body.json() as { degraded?: string[] }
  return { status: r.statusCode, degraded: body.degraded ?? [] }
}

async function waitFor (what: string, check: () => Promise<boolean>, tries = 200): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await check()) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`timed out waiting for ${what}`)
}

async function budgetLocal (g: TestGateway): Promise<boolean> {
  const body = await (await request(g.adminUrl + '/admin/upstreams')).body.json() as Record<string, { limiter: { local: boolean } }>
  return body.main.limiter.local
}

async function keyed (g: TestGateway, client: string): Promise<number> {
  const r = await request(g.url + '/keyed/x', { headers: { 'x-client': client } })
  const text = await r.body.text()
  if (r.statusCode === 429) assert.equal(JSON.parse(text).error, 'SLUICE_ERR_RATE_LIMITED')
  return r.statusCode
}

/** Spends client `key`'s tokens on A, then asks B once: 429 when the bucket is shared. */
async function drainOnAThenAskB (key: string): Promise<{ onA: number[]; onB: number }> {
  const onA: number[] = []
  for (let i = 0; i < CLIENT_BURST + 2; i++) onA.push(await keyed(A, key))
  return { onA, onB: await keyed(B, key) }
}

test('shared through Redis at first: a client limit spent on one replica holds on the other', async () => {
  await waitFor('both gateways ready and not degraded', async () => {
    const r = await Promise.all(gws.map(readyz))
    return r.every((x) => x.status === 200 && x.degraded.length === 0)
  })
  const { onA, onB } = await drainOnAThenAskB('before-kill')
  assert.deepEqual(onA.slice(0, CLIENT_BURST), Array(CLIENT_BURST).fill(200))
  assert.ok(onA.includes(429), `${onA}`)
  assert.equal(onB, 429, 'the other replica sees the same bucket')
  assert.equal(await budgetLocal(A), false)
})

test('SIGKILL on redis-server mid-load: every answer is 200 or a legitimate 429; degraded, counted, local buckets', async (t) => {
  const errorsBefore = await Promise.all(gws.map((g) => metric(g.adminUrl, 'sluice_redis_errors_total')))
  const answers: Array<{ status: number; code?: string; afterKill: boolean }> = []
  const failures: string[] = []
  let killed = false
  const end = Date.now() + 3000
  const MAX_PER_WORKER = 1500
  // 4 workers per gateway, each bounded in count and time.
  const load = gws.flatMap((g) => Array.from({ length: 4 }, async () => {
    for (let i = 0; i < MAX_PER_WORKER && Date.now() < end; i++) {
      const afterKill = killed
      try {
        const r = await request(g.url + `/load/${i % 10}`)
        const text = await r.body.text()
        answers.push({ status: r.statusCode, code: r.statusCode === 200 ? undefined : JSON.parse(text).error, afterKill })
      } catch (err) {
        failures.push((err as Error).message)
      }
      if (i % 20 === 19) await new Promise((resolve) => setTimeout(resolve, 5))
    }
  }))
  // Kill once the load has run a while.
  await waitFor('load to start', async () => answers.length >= 200)
  await redis.kill()
  killed = true
  const killedAt = Date.now()
  await Promise.all(load)
  const afterKillS = (Date.now() - killedAt) / 1000

  const tally = (xs: typeof answers) => JSON.stringify(xs.reduce<Record<string, number>>((o, a) => { const k = a.code ?? String(a.status); o[k] = (o[k] ?? 0) + 1; return o }, {}))
  t.diagnostic(`before the kill ${tally(answers.filter((a) => !a.afterKill))}, after ${tally(answers.filter((a) => a.afterKill))}`)
  assert.deepEqual(failures, [], 'no request failed at the socket level')
  const bad = answers.filter((a) => !(a.status === 200 || (a.status === 429 && (a.code === 'SLUICE_ERR_RATE_LIMITED' || a.code === 'SLUICE_ERR_UPSTREAM_BUDGET'))))
  assert.deepEqual(bad.slice(0, 5), [], `only 200 or legitimate 429 (${bad.length} others of ${answers.length})`)
  const after = answers.filter((a) => a.afterKill)
  assert.ok(after.length >= 50, `load went on after the kill: ${after.length}`)
  assert.ok(after.some((a) => a.status === 200), 'requests still pass after the kill')
  // Fail open is not "no limit": after the kill each gateway admits at most its local share of
  // the client limit (150/2 per s, burst 50/2), starting from a full local bucket. Tolerance: 2.
  const admittedAfter = after.filter((a) => a.status === 200).length
  const bound = 2 * (75 * afterKillS + 25) + 2
  assert.ok(admittedAfter <= bound, `${admittedAfter} admitted after the kill within ${bound.toFixed(1)} (${afterKillS.toFixed(2)} s)`)

  for (const [i, g] of gws.entries()) {
    const r = await readyz(g)
    assert.equal(r.status, 200, 'degraded is still ready')
    assert.ok(r.degraded.includes('ratelimit') && r.degraded.includes('redis'), `degraded: ${r.degraded}`)
    assert.ok(await metric(g.adminUrl, 'sluice_redis_errors_total') > errorsBefore[i], 'sluice_redis_errors_total grew')
    assert.equal(await budgetLocal(g), true, 'the upstream budget decides locally')
    // The fallback is logged once, however many requests met the dead server.
    assert.equal(g.logs.filter((l) => /^redis unavailable: rate limits use local buckets/.test(String(l.msg))).length, 1)
  }
})

test('while Redis is down: each replica has its own local bucket of its share (burst / expectedReplicas)', async () => {
  const started = Date.now()
  const { onA, onB } = await drainOnAThenAskB('during-outage')
  const elapsedS = (Date.now() - started) / 1000
  const localBurst = Math.floor(CLIENT_BURST / 2)
  const admitted = onA.filter((s) => s === 200).length
  assert.deepEqual(onA.slice(0, localBurst), Array(localBurst).fill(200))
  // Local share: burst 2 and 0.5 token/s.
  assert.ok(admitted <= localBurst + Math.ceil(0.5 * elapsedS), `${admitted} admitted on A: ${onA}`)
  assert.ok(onA.includes(429))
  assert.equal(onB, 200, 'B does not see A\'s spending: its own local bucket')
})

test('after a restart the limits are shared again', async () => {
  await redis.restart()
  await waitFor('both gateways to leave degraded mode', async () => {
    // Traffic lets the limiter notice as well; its probe runs every second regardless.
    await Promise.all(gws.map(async (g) => { const r = await request(g.url + '/load/ping'); await r.body.dump() }))
    const r = await Promise.all(gws.map(readyz))
    return r.every((x) => x.degraded.length === 0)
  }, 300)
  for (const g of gws) {
    assert.equal(await budgetLocal(g), false)
    assert.equal(g.logs.filter((l) => /^redis answers again/.test(String(l.msg))).length, 1)
  }
  const { onA, onB } = await drainOnAThenAskB('after-restart')
  assert.deepEqual(onA.slice(0, CLIENT_BURST), Array(CLIENT_BURST).fill(200), 'a fresh Redis bucket: the full burst')
  assert.equal(onB, 429, 'shared again')
  const keys = await redis.client().keys(`${redis.prefix}rl:*`)
  assert.ok(keys.some((k) => k.includes('after-restart')), `bucket in the restarted Redis: ${keys}`)
})

test('one gateway, limits high enough never to reject: every response stays 200 through a SIGKILL of Redis and its restart', async (t) => {
  const own = await startRedis({ own: true })
  const solo = await startTestGateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: false }
redis: { url: "${own.url}", keyPrefix: "${own.prefix}" }
upstreams:
  main:
    url: ${origin.url}
    timeoutMs: 3000
    rateLimit: { requestsPerSecond: 100000, burst: 100000 }
routes:
  - name: all
    match: { pathPrefix: / }
    upstream: main
    rateLimit: { perClient: { requestsPerSecond: 100000, burst: 100000 } }
`)
  try {
    await waitFor('ready, not degraded', async () => { const r = await readyz(solo); return r.status === 200 && r.degraded.length === 0 })
    const errorsBefore = await metric(solo.adminUrl, 'sluice_redis_errors_total')
    const answers: Array<{ status: number; phase: 'before' | 'down' | 'restarted' }> = []
    const failures: string[] = []
    let phase: 'before' | 'down' | 'restarted' = 'before'
    let stop = false
    const MAX_PER_WORKER = 2000
    const load = Array.from({ length: 4 }, async (_, w) => {
      for (let i = 0; i < MAX_PER_WORKER && !stop; i++) {
        const at = phase
        try {
          const r = await request(solo.url + `/solo/${w}/${i}`)
          await r.body.dump()
          answers.push({ status: r.statusCode, phase: at })
        } catch (err) {
          failures.push((err as Error).message)
        }
        if (i % 10 === 9) await new Promise((resolve) => setTimeout(resolve, 5))
      }
    })
    try {
      await waitFor('load to start', async () => answers.length >= 100)
      await own.kill()
      phase = 'down'
      const atKill = answers.length
      await waitFor('requests while Redis is down', async () => answers.length >= atKill + 200)
      const down = await readyz(solo)
      assert.equal(down.status, 200, 'degraded is still ready')
      const body = await (await request(solo.adminUrl + '/readyz')).body.json() as { status: string }
      assert.equal(body.status, 'degraded')
      assert.ok(down.degraded.includes('redis'), `degraded: ${down.degraded}`)
      assert.ok(await metric(solo.adminUrl, 'sluice_redis_errors_total') > errorsBefore, 'sluice_redis_errors_total grew')
      await own.restart()
      phase = 'restarted'
      await waitFor('degraded mode left after the restart', async () => (await readyz(solo)).degraded.length === 0, 300)
      const atBack = answers.length
      await waitFor('requests after the restart', async () => answers.length >= atBack + 100)
    } finally {
      stop = true
      await Promise.all(load)
    }
    const by = (p: string) => answers.filter((a) => a.phase === p)
    t.diagnostic(`answers before ${by('before').length}, while down ${by('down').length}, after restart ${by('restarted').length}`)
    assert.deepEqual(failures, [], 'no request failed at the socket level')
    const bad = answers.filter((a) => a.status !== 200)
    assert.deepEqual(bad.slice(0, 5), [], `every response is 200 (${bad.length} others of ${answers.length})`)
    for (const p of ['before', 'down', 'restarted']) assert.ok(by(p).length >= 100, `requests in phase ${p}: ${by(p).length}`)
    // After the restart the buckets live in Redis again.
    const keys = await own.client().keys(`${own.prefix}rl:*`)
    assert.ok(keys.length > 0, 'buckets in the restarted Redis')
  } finally {
    await solo.close()
    await own.stop()
  }
})
