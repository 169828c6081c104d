// The registry across reloads: create / keep / update / drop, pass-through for unlisted
// upstreams, the client-limit seam, status(), and a Redis client that has not connected yet.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { createResilienceRegistry } from '../../src/resilience/registry.js'
import { loadedUpstreams, loadedRoutes } from './loaded-input.js'
import { reservePort } from '../helpers/ports.js'
import { captureLog, freshMetrics, guardProcessHealth } from './helpers.js'

const metrics = freshMetrics()
const reg = createResilienceRegistry({ metrics, log: captureLog().log, redis: null, redisPrefix: 'test:' })
after(() => reg.close())
guardProcessHealth()

test('reconcile keeps unchanged and changed entries (with their state) and drops removed ones', () => {
  reg.reconcile(loadedUpstreams({ a: { rateLimit: { requestsPerSecond: 0.01, burst: 1 } }, b: {} }), loadedRoutes([{ name: 'r', rateLimit: { perClient: { requestsPerSecond: 1, burst: 1 } } }]))
  const a = reg.upstream('a')
  assert.equal(a.acquire(), 0)
  assert.throws(() => a.acquire(), { code: 'SLUICE_ERR_UPSTREAM_BUDGET' })
  reg.reconcile(loadedUpstreams({ a: { rateLimit: { requestsPerSecond: 0.01, burst: 1 } }, b: {} }), loadedRoutes([{ name: 'r', rateLimit: { perClient: { requestsPerSecond: 1, burst: 1 } } }]))
  assert.equal(reg.upstream('a'), a, 'unchanged: same guard')
  reg.reconcile(loadedUpstreams({ a: { rateLimit: { requestsPerSecond: 0.02, burst: 1, maxQueueMs: 0 } } }), loadedRoutes([]))
  assert.equal(reg.upstream('a'), a, 'changed: same guard, updated')
  assert.throws(() => a.acquire(), { code: 'SLUICE_ERR_UPSTREAM_BUDGET' }, 'the spent token stays spent')
  assert.equal(reg.status().upstreams.a.budget.requestsPerSecond, 0.02)
  assert.deepEqual(Object.keys(reg.status().upstreams), ['a'])
  assert.deepEqual(Object.keys(reg.status().clients), [])
  reg.reconcile(loadedUpstreams({ a: {} }), loadedRoutes([]))
  assert.equal(a.acquire(), 0, 'budget removed: free again')
})

test('an upstream the config no longer lists gets a pass-through guard', () => {
  reg.reconcile(loadedUpstreams({ a: {} }), loadedRoutes([]))
  const g = reg.upstream('gone')
  assert.equal(g.acquire(), 0)
  const t = g.allow()
  g.record(t, { status: 503 })
  g.observeResponse(429, { 'retry-after': '10' })
  assert.equal(g.retryDelayMs(1, { method: 'GET', status: 503, bodyReplayable: true, routeAllowsNonIdempotent: false }), null)
  assert.equal(g.acquire(), 0)
})

test('check(route, ip, headers) is the pipeline seam: null without a limit, 429 past it', () => {
  reg.reconcile(loadedUpstreams({}), loadedRoutes([{ name: 'limited', rateLimit: { perClient: { requestsPerSecond: 0.01, burst: 1 } } }, { name: 'free' }]))
  assert.equal(reg.check({ name: 'free' }, '203.0.113.1', {}), null)
  assert.equal(reg.check({ name: 'limited' }, '203.0.113.1', {}), null)
  const err = reg.check({ name: 'limited' }, '203.0.113.1', {})
  assert.ok(err !== null && !(err instanceof Promise) && err.code === 'SLUICE_ERR_RATE_LIMITED')
})

test('status() reports breaker, budget and retry state per upstream, and Redis as not configured', () => {
  reg.reconcile(loadedUpstreams({ s: { rateLimit: { requestsPerSecond: 5, burst: 10 }, retry: { attempts: 2 } } }), loadedRoutes([]))
  const s = reg.status()
  assert.deepEqual(s.redis, { configured: false })
  assert.equal(reg.degraded, false)
  assert.equal(s.upstreams.s.breaker.state, 'closed')
  assert.equal(s.upstreams.s.budget.configured, true)
  assert.equal(s.upstreams.s.budget.local, true)
  assert.equal(s.upstreams.s.retry.maxAttempts, 2)
})

test('until the Redis client first connects, limits answer locally and it is not called an outage', async () => {
  // A port nothing listens on (the client never connects).
  const port = await reservePort()
  const client = new Redis(`redis://127.0.0.1:${port}`, { lazyConnect: true })
  client.on('error', () => {})
  const { log, lines } = captureLog()
  const r = createResilienceRegistry({ metrics: freshMetrics(), log, redis: client, redisPrefix: 'test:' })
  try {
    r.reconcile(loadedUpstreams({ u: { rateLimit: { requestsPerSecond: 10, burst: 4, expectedReplicas: 2 } } }), loadedRoutes([]))
    assert.equal(r.upstream('u').acquire(), 0, 'synchronous: the local bucket answered')
    assert.equal(r.degraded, false)
    assert.equal(lines.filter((l) => l.level >= 40).length, 0)
  } finally {
    r.close()
    client.disconnect()
  }
})
