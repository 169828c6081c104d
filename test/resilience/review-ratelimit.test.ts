// Rate-limit review: edge cases found by reading the limiter as an operator would.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createResilienceRegistry } from '../../src/resilience/registry.js'
import { isSluiceError, type SluiceError } from '../../src/errors.js'
import { startRedis } from '../helpers/redis.js'
import { until } from '../helpers/wait.js'
import { loadedUpstreams, loadedRoutes } from './loaded-input.js'
import { captureLog, freshMetrics, guardProcessHealth } from './helpers.js'

guardProcessHealth()

const redis = await startRedis({ own: true }) // CONFIG SET maxmemory below: never a shared server
const admin = redis.client()
after(async () => {
  await admin.config('SET', 'maxmemory', '0').catch(() => {})
  await redis.stop()
})

// 0.02/s, burst 4, 2 replicas: the fleet's policy is q=4;w=200; one replica's share alone
// (0.01/s, burst 2) is q=2;w=200. Slow enough that no token comes back during a test.
const CLIENT = { requestsPerSecond: 0.02, burst: 4, expectedReplicas: 2 }
const BUDGET = { requestsPerSecond: 0.02, burst: 4, expectedReplicas: 2, maxQueueMs: 0 }
const FLEET = (scope: string) => `"${scope}";q=4;w=200`
const SHARE = (scope: string) => `"${scope}";q=2;w=200`

async function rejection (fn: () => unknown): Promise<SluiceError | null> {
  try {
    const r = await fn()
    return isSluiceError(r) ? r : null
  } catch (err) {
    assert.ok(isSluiceError(err))
    return err
  }
}

/** Spend a bucket until it rejects (at most `max` calls) and return that rejection. */
async function drain (fn: () => unknown, max = 10): Promise<SluiceError> {
  for (let i = 0; i < max; i++) {
    const e = await rejection(fn)
    if (e !== null) return e
  }
  assert.fail('never rejected')
}

test('no Redis, expectedReplicas 2: RateLimit-Policy states the share this replica enforces', async () => {
  const reg = createResilienceRegistry({ metrics: freshMetrics(), log: captureLog().log, redis: null, redisPrefix: 'test:' })
  try {
    reg.reconcile(loadedUpstreams({ u: { rateLimit: BUDGET } }), loadedRoutes([{ name: 'r', rateLimit: { perClient: CLIENT } }]))
    const c = reg.clientLimiter('r')!
    const e = await drain(() => c.check({ ip: '192.0.2.1', headers: {} }))
    assert.equal(e.headers?.['ratelimit-policy'], SHARE('client'))
    const b = await drain(() => reg.upstream('u').acquire())
    assert.equal(b.headers?.['ratelimit-policy'], SHARE('upstream'))
  } finally { reg.close() }
})

test('Redis failing: the local fallback\'s 429 states the local share, and the fleet policy again once Redis answers', async () => {
  const client = redis.client()
  await client.ping()
  const reg = createResilienceRegistry({ metrics: freshMetrics(), log: captureLog().log, redis: client, redisPrefix: redis.prefix + 'pol:', probeIntervalMs: 50 })
  try {
    reg.reconcile(loadedUpstreams({ u: { rateLimit: BUDGET } }), loadedRoutes([{ name: 'r', rateLimit: { perClient: CLIENT } }]))
    const c = reg.clientLimiter('r')!
    const g = reg.upstream('u')
    // Shared: the fleet's policy.
    assert.equal((await drain(() => c.check({ ip: '192.0.2.10', headers: {} }))).headers?.['ratelimit-policy'], FLEET('client'))
    assert.equal((await drain(() => g.acquire())).headers?.['ratelimit-policy'], FLEET('upstream'))

    // Redis refuses the take script (out of memory): the local buckets decide.
    await admin.config('SET', 'maxmemory-policy', 'noeviction')
    await admin.config('SET', 'maxmemory', '1')
    assert.equal((await drain(() => c.check({ ip: '192.0.2.11', headers: {} }))).headers?.['ratelimit-policy'], SHARE('client'))
    assert.equal((await drain(() => g.acquire())).headers?.['ratelimit-policy'], SHARE('upstream'))
    assert.equal(reg.degraded, true)

    // Back: shared again, with the fleet's policy.
    await admin.config('SET', 'maxmemory', '0')
    await until('the limits to share Redis again', () => !reg.degraded)
    assert.equal((await drain(() => c.check({ ip: '192.0.2.12', headers: {} }))).headers?.['ratelimit-policy'], FLEET('client'))

    // A take that fails while Redis is still thought up falls back within the same request
    // (asynchronously): that answer is the local bucket's too. The local bucket of .11 is empty.
    await admin.config('SET', 'maxmemory', '1')
    const r = c.check({ ip: '192.0.2.11', headers: {} })
    assert.ok(r instanceof Promise, 'asked Redis first')
    assert.equal((await r)?.headers?.['ratelimit-policy'], SHARE('client'))
  } finally {
    await admin.config('SET', 'maxmemory', '0')
    reg.close()
    client.disconnect()
  }
})

test('the wall clock stepping back (NTP) neither stretches an upstream pause nor drives the adaptive rate below its floor', async () => {
  const reg = createResilienceRegistry({ metrics: freshMetrics(), log: captureLog().log, redis: null, redisPrefix: 'test:' })
  const realNow = Date.now
  try {
    reg.reconcile(loadedUpstreams({
      paused: { rateLimit: { requestsPerSecond: 100, burst: 100, maxQueueMs: 0, maxPauseMs: 5000 } },
      slowed: { rateLimit: { requestsPerSecond: 100, burst: 100, maxQueueMs: 0 } }
    }), loadedRoutes([]))
    const p = reg.upstream('paused').budget
    const s = reg.upstream('slowed').budget
    p.observeResponse(429, { 'retry-after': '2' })
    s.observeResponse(429, {}) // a bare 429 halves the rate
    const t = realNow()
    Date.now = () => t - 3_600_000 // one hour back
    const st = p.status()
    assert.ok(st.pausedForMs <= 5000, `paused for ${st.pausedForMs} ms; maxPauseMs is 5000`)
    let retryAfter = 0
    try { p.acquire() } catch (err) { retryAfter = Number((err as SluiceError).headers?.['retry-after']) }
    assert.ok(retryAfter <= 5, `Retry-After ${retryAfter}`)
    const f = s.status().rateFactor
    assert.ok(f >= 0.1 && f <= 1, `rate factor ${f}`)
  } finally {
    Date.now = realNow
    reg.close()
  }
})
