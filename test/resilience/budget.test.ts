// Upstream budget: 429 with headers, the bounded FIFO queue, abort while queued, and the
// adaptive pause on the upstream's Retry-After / RateLimit fields. Memory store.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createResilienceRegistry } from '../../src/resilience/registry.js'
import { loadedUpstreams, loadedRoutes, type UpstreamPartial } from './loaded-input.js'
import { isSluiceError, type SluiceError } from '../../src/errors.js'
import { captureLog, freshMetrics, guardProcessHealth, valueOf } from './helpers.js'

const metrics = freshMetrics()
const { log } = captureLog()
const reg = createResilienceRegistry({ metrics, log, redis: null, redisPrefix: 'test:' })
after(() => reg.close())
guardProcessHealth()

function guardWith (name: string, rateLimit: UpstreamPartial['rateLimit']) {
  reg.reconcile(loadedUpstreams({ [name]: { rateLimit } }), loadedRoutes([]))
  const g = reg.upstream(name)
  assert.ok(g)
  return g
}

function catchSync (fn: () => unknown): SluiceError {
  try { fn() } catch (err) { assert.ok(isSluiceError(err)); return err }
  assert.fail('expected a throw')
}

test('no budget configured: acquire is synchronous and free', () => {
  const g = guardWith('free', null)
  for (let i = 0; i < 1000; i++) assert.equal(g.acquire(), 0)
})

test('an empty bucket with maxQueueMs 0 throws 429 SLUICE_ERR_UPSTREAM_BUDGET with Retry-After and RateLimit fields', async () => {
  const g = guardWith('tight', { requestsPerSecond: 1, burst: 2 })
  assert.equal(g.acquire(), 0)
  assert.equal(g.acquire(), 0)
  const err = catchSync(() => g.acquire())
  assert.equal(err.code, 'SLUICE_ERR_UPSTREAM_BUDGET')
  assert.equal(err.status, 429)
  assert.deepEqual(err.headers, { 'retry-after': '1', 'ratelimit-policy': '"upstream";q=2;w=2', ratelimit: '"upstream";r=0;t=1' })
  assert.equal(await valueOf(metrics.rateLimited, { scope: 'upstream', name: 'tight' }), 1)
})

test('requests wait in FIFO order up to maxQueueMs, then the next one gets 429 at once', async () => {
  const g = guardWith('queued', { requestsPerSecond: 10, burst: 1, maxQueueMs: 300 })
  assert.equal(g.acquire(), 0)
  const order: number[] = []
  const waits = [1, 2, 3].map((i) => {
    const p = g.acquire()
    assert.ok(p instanceof Promise, 'a queued acquire is a promise')
    return p.then((ms) => { order.push(i); return ms })
  })
  const err = catchSync(() => g.acquire()) // 100 + 200 + 300 ms of reservations fill the queue
  assert.equal(err.code, 'SLUICE_ERR_UPSTREAM_BUDGET')
  const ms = await Promise.all(waits)
  assert.deepEqual(order, [1, 2, 3])
  assert.ok(ms[0] > 0 && ms[0] < ms[1] && ms[1] < ms[2] && ms[2] <= 300, `waits ${ms}`)
  const { values } = await metrics.upstreamQueueWait.get()
  const count = values.find((v) => v.metricName === 'sluice_upstream_queue_wait_seconds_count' && v.labels.upstream === 'queued')
  assert.equal(count?.value, 4)
})

test('a queued request whose client goes away rejects with the abort reason and leaves no timer', async () => {
  const g = guardWith('abort', { requestsPerSecond: 1, burst: 1, maxQueueMs: 5000 })
  assert.equal(g.acquire(), 0)
  const ac = new AbortController()
  const p = g.acquire(ac.signal)
  assert.ok(p instanceof Promise)
  ac.abort()
  await assert.rejects(p as Promise<number>, { name: 'AbortError' })
})

test('a 429 with Retry-After pauses the budget: rejected at once when it exceeds maxQueueMs', () => {
  const g = guardWith('paused', { requestsPerSecond: 100, burst: 100 })
  assert.equal(g.acquire(), 0)
  g.observeResponse(429, { 'retry-after': '2' })
  const err = catchSync(() => g.acquire())
  assert.equal(err.code, 'SLUICE_ERR_UPSTREAM_BUDGET')
  assert.equal(err.headers?.['retry-after'], '2')
  const s = reg.status().upstreams.paused.budget
  assert.ok(s.pausedForMs > 1000 && s.pausedForMs <= 2000, `paused for ${s.pausedForMs}`)
})

test('a 503 with Retry-After within maxQueueMs makes requests wait for the pause, then go', async () => {
  const g = guardWith('waits', { requestsPerSecond: 100, burst: 100, maxQueueMs: 5000 })
  g.observeResponse(503, { 'retry-after': '1' })
  const p = g.acquire()
  assert.ok(p instanceof Promise, 'waits for the pause')
  assert.ok(await p > 0)
  assert.equal(g.acquire(), 0, 'after the pause the budget flows again')
})

test('RateLimit fields saying the quota is exhausted pause the budget, in both draft syntaxes and the X- pair', () => {
  const cases: Array<Record<string, string>> = [
    { ratelimit: '"default";r=0;t=3' },
    { ratelimit: 'limit=100, remaining=0, reset=3' },
    { 'ratelimit-remaining': '0', 'ratelimit-reset': '3' },
    { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(Math.floor(Date.now() / 1000) + 3) }
  ]
  for (const [i, h] of cases.entries()) {
    const g = guardWith(`fields${i}`, { requestsPerSecond: 100, burst: 100 })
    g.observeResponse(200, h)
    const s = reg.status().upstreams[`fields${i}`].budget
    assert.ok(s.pausedForMs > 1000 && s.pausedForMs <= 3000, `${JSON.stringify(h)} paused for ${s.pausedForMs}`)
  }
  const g = guardWith('notexhausted', { requestsPerSecond: 100, burst: 100 })
  g.observeResponse(200, { ratelimit: '"default";r=5;t=3' })
  assert.equal(reg.status().upstreams.notexhausted.budget.pausedForMs, 0)
})

test('a pause is capped by maxPauseMs, and adaptive: false ignores the upstream', () => {
  const g = guardWith('capped', { requestsPerSecond: 100, burst: 100, maxPauseMs: 1500 })
  g.observeResponse(429, { 'retry-after': '86400' })
  assert.ok(reg.status().upstreams.capped.budget.pausedForMs <= 1500)
  const h = guardWith('deaf', { requestsPerSecond: 100, burst: 100, adaptive: false })
  h.observeResponse(429, { 'retry-after': '30' })
  assert.equal(h.acquire(), 0)
})

test('a bare 429 halves the rate (it recovers later); a 4xx other than 429 does not', () => {
  const g = guardWith('slowed', { requestsPerSecond: 100, burst: 100 })
  g.observeResponse(404, {})
  assert.equal(reg.status().upstreams.slowed.budget.rateFactor, 1)
  g.observeResponse(429, {})
  const f1 = reg.status().upstreams.slowed.budget.rateFactor
  assert.ok(f1 >= 0.5 && f1 < 0.6, `factor ${f1}`)
  g.observeResponse(429, {})
  const f2 = reg.status().upstreams.slowed.budget.rateFactor
  assert.ok(f2 < f1 && f2 >= 0.25, `factor ${f2}`)
})
