// End to end: the per-client limit through a real gateway in front of a real origin, once with
// memory buckets and once with the buckets in a real Redis. A rejection is 429
// SLUICE_ERR_RATE_LIMITED with a rounded-up Retry-After, RateLimit-Policy and RateLimit, and
// never reaches the origin; shadow mode lets every request through and counts the would-be
// rejections in sluice_rate_limited_total.
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
const redis = await startRedis()

// rate 0.5/s: one token every 2 s, so a quick burst of sequential requests sees at most one
// refill per 2 s of measured elapsed time.
const RATE = 0.5
const BURST = 3
const config = (redisUrl: string) => `
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
redis: { url: "${redisUrl}", keyPrefix: "${redis.prefix}${redisUrl ? 'r' : 'm'}:" }
upstreams:
  origin: { url: "${origin.url}", timeoutMs: 3000 }
routes:
  - name: limited
    match: { pathPrefix: /limited/ }
    upstream: origin
    rateLimit: { perClient: { requestsPerSecond: ${RATE}, burst: ${BURST} } }
  - name: byheader
    match: { pathPrefix: /byheader/ }
    upstream: origin
    rateLimit: { perClient: { requestsPerSecond: ${RATE}, burst: ${BURST}, key: "header:x-api-key" } }
  - name: fast
    match: { pathPrefix: /fast/ }
    upstream: origin
    rateLimit: { perClient: { requestsPerSecond: 50, burst: 2 } }
  - name: shadowed
    match: { pathPrefix: /shadow/ }
    upstream: origin
    rateLimit: { perClient: { requestsPerSecond: ${RATE}, burst: ${BURST}, shadow: true } }
`

const gateways: TestGateway[] = []
after(async () => {
  for (const g of gateways) await g.close()
  await origin.close()
  await redis.stop()
})

async function waitReady (g: TestGateway): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = await request(g.adminUrl + '/readyz')
    const body = await r.body.json() as { degraded?: string[] }
    if (r.statusCode === 200 && (body.degraded ?? []).length === 0) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error('gateway never became ready without degradation')
}

interface Answer { status: number; headers: Record<string, string | string[] | undefined>; body: string }
async function get (url: string, headers: Record<string, string> = {}): Promise<Answer> {
  const r = await request(url, { headers })
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}

for (const mode of ['memory', 'redis'] as const) {
  test(`${mode}: a client over its limit gets 429 SLUICE_ERR_RATE_LIMITED with Retry-After and RateLimit fields; the origin never sees it`, async () => {
    const g = await startTestGateway(config(mode === 'redis' ? redis.url : ''), { level: 'warn' })
    gateways.push(g)
    await waitReady(g)
    const path = `/limited/${mode}`
    const N = 10
    const started = Date.now()
    const answers: Answer[] = []
    for (let i = 0; i < N; i++) answers.push(await get(g.url + path))
    const elapsedS = (Date.now() - started) / 1000
    const ok = answers.filter((a) => a.status === 200)
    const limited = answers.filter((a) => a.status === 429)
    assert.equal(ok.length + limited.length, N, `only 200 and 429: ${answers.map((a) => a.status)}`)
    // The bucket starts full: the first BURST pass; after that at most one per refill.
    assert.ok(answers.slice(0, BURST).every((a) => a.status === 200), `the burst passes: ${answers.map((a) => a.status)}`)
    assert.ok(ok.length <= BURST + Math.ceil(RATE * elapsedS), `${ok.length} admitted within burst ${BURST} + ${RATE}/s × ${elapsedS.toFixed(2)} s`)
    assert.ok(limited.length >= 1, 'some requests were limited')
    assert.equal(origin.count(path), ok.length, 'a rejected request never reaches the origin')
    for (const a of limited) {
      assert.equal(JSON.parse(a.body).error, 'SLUICE_ERR_RATE_LIMITED')
      const ra = a.headers['retry-after'] as string
      assert.match(ra, /^\d+$/, 'Retry-After is whole seconds')
      // Next token within 1/RATE s: rounded up, never 0.
      assert.ok(Number(ra) >= 1 && Number(ra) <= Math.ceil(1 / RATE), `Retry-After ${ra}`)
      assert.equal(a.headers['ratelimit-policy'], `"client";q=${Math.max(BURST, RATE * Math.ceil(BURST / RATE))};w=${Math.ceil(BURST / RATE)}`)
      assert.equal(a.headers.ratelimit, `"client";r=0;t=${ra}`)
    }
    assert.equal(await metric(g.adminUrl, 'sluice_rate_limited_total', { scope: 'client', name: 'limited' }), limited.length)

    // Keyed by a header: another key has its own full bucket; the exhausted key stays limited.
    const byKey = async (k: string) => (await get(g.url + `/byheader/${mode}`, { 'x-api-key': k })).status
    const a: number[] = []
    for (let i = 0; i < BURST + 2; i++) a.push(await byKey('alpha'))
    assert.deepEqual(a.slice(0, BURST), Array(BURST).fill(200))
    assert.ok(a.includes(429), `key alpha is limited: ${a}`)
    assert.equal(await byKey('beta'), 200, 'key beta has its own bucket')

    const upstreams = await (await request(g.adminUrl + '/readyz')).body.json() as { degraded: string[] }
    assert.deepEqual(upstreams.degraded, [], 'nothing degraded')
    if (mode === 'redis') {
      // The buckets were decided in Redis (one hash per client key), not in local memory.
      const keys = await redis.client().keys(`${redis.prefix}r:rl:*`)
      assert.ok(keys.some((k) => k.includes('cl:limited:')) && keys.some((k) => k.includes('cl:byheader:')), `bucket keys in Redis: ${keys}`)
    }
  })

  test(`${mode}: shadow mode lets every request through and counts would-be rejections`, async () => {
    const g = gateways.at(-1) as TestGateway
    const path = `/shadow/${mode}`
    const N = 10
    const started = Date.now()
    const statuses: number[] = []
    for (let i = 0; i < N; i++) {
      const a = await get(g.url + path)
      statuses.push(a.status)
      assert.equal(a.headers['retry-after'], undefined, 'no rejection headers in shadow mode')
    }
    const elapsedS = (Date.now() - started) / 1000
    assert.deepEqual(statuses, Array(N).fill(200))
    assert.equal(origin.count(path), N, 'every request reached the origin')
    const counted = await metric(g.adminUrl, 'sluice_rate_limited_total', { scope: 'client', name: 'shadowed' })
    assert.ok(counted <= N - BURST, `at most ${N - BURST} would-be rejections: ${counted}`)
    assert.ok(counted >= N - BURST - Math.ceil(RATE * elapsedS), `would-be rejections counted: ${counted}`)
  })
}

test('a sub-second wait is rounded up: Retry-After is never 0 (memory and Redis)', async () => {
  assert.equal(gateways.length, 2)
  for (const g of gateways) {
    const limited: Answer[] = []
    // 50/s, burst 2: the next token is at most 20 ms away. Bounded: a few rapid requests in parallel.
    const answers = await Promise.all(Array.from({ length: 30 }, () => get(g.url + '/fast/x')))
    for (const a of answers) if (a.status === 429) limited.push(a)
    assert.ok(answers.every((a) => a.status === 200 || a.status === 429), `${answers.map((a) => a.status)}`)
    assert.ok(limited.length >= 1, `some were limited: ${answers.map((a) => a.status)}`)
    for (const a of limited) {
      assert.equal(JSON.parse(a.body).error, 'SLUICE_ERR_RATE_LIMITED')
      assert.equal(a.headers['retry-after'], '1')
      assert.equal(a.headers['ratelimit-policy'], '"client";q=50;w=1')
      assert.equal(a.headers.ratelimit, '"client";r=0;t=1')
    }
  }
})
