// Two registries (as two Sluice replicas would have) with their own Redis clients share one
// upstream budget: their combined admissions stay within rate × elapsed + burst.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { startRedis } from '../helpers/redis.js'
import { createResilienceRegistry } from '../../src/resilience/registry.js'
import { loadedUpstreams, loadedRoutes } from './loaded-input.js'
import type { UpstreamGuard } from '../../src/resilience/guard.js'
import { captureLog, freshMetrics, guardProcessHealth, sleep } from './helpers.js'

const redis = await startRedis()
const clients = [redis.client(), redis.client()]
// Until its client is connected a replica decides locally (its share); start shared.
await Promise.all(clients.map((c) => c.ping()))
const regs = clients.map((c) => createResilienceRegistry({ metrics: freshMetrics(), log: captureLog().log, redis: c, redisPrefix: redis.prefix, commandTimeoutMs: 1000 }))
after(async () => { for (const r of regs) r.close(); await redis.stop() })
guardProcessHealth()

const RATE = 20
const BURST = 5
// Tolerance: one token for the time between our clock reads and the Redis TIME reads.
const TOLERANCE = 1

test('two replicas sharing one Redis share one bucket', async () => {
  for (const r of regs) r.reconcile(loadedUpstreams({ shared: { rateLimit: { requestsPerSecond: RATE, burst: BURST, expectedReplicas: 2 } } }), loadedRoutes([]))
  const guards = regs.map((r) => r.upstream('shared') as UpstreamGuard)
  const granted = [0, 0]
  const started = Date.now()
  const end = started + 1500
  await Promise.all(guards.map(async (g, i) => {
    while (Date.now() < end) {
      try { await g.acquire(); granted[i]++ } catch { /* 429: the shared bucket is empty */ }
      await sleep(3)
    }
  }))
  const elapsedS = (Date.now() - started) / 1000
  const total = granted[0] + granted[1]
  const bound = RATE * elapsedS + BURST + TOLERANCE
  assert.ok(total <= bound, `combined ${total} (${granted}) within ${bound.toFixed(1)}`)
  // Separate buckets would have admitted about twice the bound; each replica got a share.
  assert.ok(total >= RATE * 1.5 * 0.5, `the budget was used: ${total}`)
  assert.ok(granted[0] > 0 && granted[1] > 0, `both replicas were admitted: ${granted}`)
  for (const r of regs) {
    assert.equal(r.degraded, false)
    assert.equal(r.status().upstreams.shared.budget.local, false, 'decided in Redis')
  }
})
