// Redis killed mid-use: every limit call still answers (from the local bucket sized to this
// replica's share), the fallback is logged once, counted and shown in status(); after a
// restart the limits go back to Redis.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { startRedis } from '../helpers/redis.js'
import { createResilienceRegistry } from '../../src/resilience/registry.js'
import { loadedUpstreams, loadedRoutes } from './loaded-input.js'
import { captureLog, freshMetrics, guardProcessHealth, sleep, valueOf } from './helpers.js'
import { until } from '../helpers/wait.js'

const redis = await startRedis({ own: true })
const client = redis.client()
await client.ping()
const metrics = freshMetrics()
const { log, lines } = captureLog()
const reg = createResilienceRegistry({ metrics, log, redis: client, redisPrefix: redis.prefix, commandTimeoutMs: 200, probeIntervalMs: 100 })
after(async () => { reg.close(); await redis.stop() })
guardProcessHealth()

reg.reconcile(
  loadedUpstreams({ api: { rateLimit: { requestsPerSecond: 1000, burst: 1000 } } }),
  loadedRoutes([{ name: 'r', rateLimit: { perClient: { requestsPerSecond: 0.001, burst: 10, expectedReplicas: 2 } } }])
)
const guard = reg.upstream('api')!
const clients = reg.clientLimiter('r')!

/** Poll every 25 ms, 400 times (10 s). */
const POLL = { tries: 400, intervalMs: 25 }

test('Redis killed mid-use → local buckets without a failed call; back to Redis after a restart', async () => {
  // Shared: answers come from Redis (a promise), and the bucket is a Redis key.
  const first = guard.acquire()
  assert.ok(first instanceof Promise)
  assert.equal(await first, 0)
  assert.equal(await clients.check({ ip: '198.51.100.1', headers: {} }), null)
  assert.equal(await client.exists(`${redis.prefix}rl:{up:api}`), 1)
  const rs = reg.status().redis
  assert.equal(rs.configured && rs.ok, true)
  assert.equal(reg.degraded, false)

  await redis.kill()
  for (let i = 0; i < 50; i++) {
    const w = await guard.acquire() // must not throw or reject
    assert.ok(w >= 0)
    const c = await clients.check({ ip: '198.51.100.2', headers: {} })
    assert.ok(c === null || c.code === 'SLUICE_ERR_RATE_LIMITED', 'a client limit answers, never a Redis error')
  }
  const s = reg.status()
  assert.ok(s.redis.configured && !s.redis.ok && s.redis.lastError)
  assert.equal(reg.degraded, true)
  assert.equal(s.upstreams.api.budget.local, true)
  assert.equal(s.clients.r.local, true)
  assert.equal(typeof guard.acquire(), 'number', 'while down the local bucket answers synchronously')
  assert.equal(lines.filter((l) => /redis unavailable/.test(l.msg)).length, 1, 'the fallback is logged once')
  assert.ok(await valueOf(metrics.redisErrors, { op: 'ratelimit' }) >= 1)

  // The local bucket holds this replica's share: burst 10 / expectedReplicas 2.
  let allowed = 0
  for (let i = 0; i < 10; i++) if (clients.check({ ip: '198.51.100.3', headers: {} }) === null) allowed++
  assert.equal(allowed, 5)

  await redis.restart()
  await until('the limiter to notice Redis again', () => !reg.degraded, POLL)
  assert.equal(lines.filter((l) => /redis answers again/.test(l.msg)).length, 1)
  const again = guard.acquire()
  assert.ok(again instanceof Promise, 'shared again')
  assert.equal(await again, 0)
  assert.equal(await client.exists(`${redis.prefix}rl:{up:api}`), 1)
  assert.equal(reg.status().upstreams.api.budget.local, false)
})
