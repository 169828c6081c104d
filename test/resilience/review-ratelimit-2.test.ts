// Rate-limit review, second pass: config reloads against buckets already in Redis and in
// memory, the RateLimit-Policy of fractional rates, and per-client keys of two routes on the
// cluster primary's shared store.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import { createResilienceRegistry } from '../../src/resilience/registry.js'
import { MemoryBucketStore } from '../../src/resilience/bucket-memory.js'
import { Limiter } from '../../src/resilience/limiter.js'
import { policyField } from '../../src/resilience/headers.js'
import { IpcBucketStore } from '../../src/cluster/ipc-buckets.js'
import { isSluiceError, type SluiceError } from '../../src/errors.js'
import { startRedis } from '../helpers/redis.js'
import { loadedUpstreams, loadedRoutes } from './loaded-input.js'
import { captureLog, freshMetrics, guardProcessHealth } from './helpers.js'

guardProcessHealth()

const redis = await startRedis()
after(async () => { await redis.stop() })

async function rejection (fn: () => unknown): Promise<SluiceError | null> {
  try {
    const r = await fn()
    return isSluiceError(r) ? r : null
  } catch (err) {
    assert.ok(isSluiceError(err))
    return err
  }
}

/** Spend a bucket until it rejects (at most `max` calls); the number of calls let through. */
async function drain (fn: () => unknown, max = 20): Promise<number> {
  for (let i = 0; i < max; i++) if (await rejection(fn) !== null) return i
  assert.fail('never rejected')
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** q and w of a RateLimit-Policy value. */
function qw (policy: string | undefined): { q: number; w: number } {
  const m = /;q=(\d+);w=(\d+)$/.exec(policy ?? '')
  assert.ok(m, `a policy with q and w: ${policy}`)
  return { q: Number(m[1]), w: Number(m[2]) }
}

test('a reload that lowers the rate holds at once on buckets already in Redis (their expiry followed the old rate)', async () => {
  const client = redis.client()
  await client.ping()
  const prefix = redis.prefix + 'reload:'
  const reg = createResilienceRegistry({ metrics: freshMetrics(), log: captureLog().log, redis: client, redisPrefix: prefix })
  try {
    // Fast: a drained bucket refills (and its key expires) within about 1.2 s.
    const fast = { requestsPerSecond: 10, burst: 2, expectedReplicas: 1 }
    const slow = { requestsPerSecond: 0.01, burst: 2, expectedReplicas: 1 }
    reg.reconcile(loadedUpstreams({ u: { rateLimit: { ...fast, maxQueueMs: 0 } } }), loadedRoutes([{ name: 'r', rateLimit: { perClient: fast } }]))
    const c = reg.clientLimiter('r')!
    const g = reg.upstream('u')
    await drain(() => c.check({ ip: '192.0.2.1', headers: {} }))
    await drain(() => g.acquire())

    // One token per 100 s from now on.
    reg.reconcile(loadedUpstreams({ u: { rateLimit: { ...slow, maxQueueMs: 0 } } }), loadedRoutes([{ name: 'r', rateLimit: { perClient: slow } }]))
    // Past the expiry the old rate gave the keys: at the new rate the buckets hold ~0.02 tokens.
    await pause(1500)
    const e = await rejection(() => c.check({ ip: '192.0.2.1', headers: {} }))
    assert.ok(e !== null, 'the client bucket is still empty at the new rate')
    assert.ok(Number(e.headers?.['retry-after']) > 5, `Retry-After ${e.headers?.['retry-after']}`)
    const b = await rejection(() => g.acquire())
    assert.ok(b !== null, 'the upstream budget is still empty at the new rate')
    // And the keys now live as long as the new rate takes to refill them.
    const ttl = await client.pttl(`${prefix}rl:{cl:r:192.0.2.1}`)
    assert.ok(ttl > 5_000, `PTTL ${ttl}`)
  } finally {
    reg.close()
    client.disconnect()
  }
})

test('a reload that lowers the burst clamps buckets already in Redis to it', async () => {
  const client = redis.client()
  await client.ping()
  const prefix = redis.prefix + 'burst:'
  const reg = createResilienceRegistry({ metrics: freshMetrics(), log: captureLog().log, redis: client, redisPrefix: prefix })
  try {
    const wide = { requestsPerSecond: 0.01, burst: 10, expectedReplicas: 1 }
    const narrow = { requestsPerSecond: 0.01, burst: 2, expectedReplicas: 1 }
    reg.reconcile(loadedUpstreams({}), loadedRoutes([{ name: 'r', rateLimit: { perClient: wide } }]))
    const c = reg.clientLimiter('r')!
    assert.equal(await c.check({ ip: '192.0.2.2', headers: {} }), null) // 9 tokens left
    reg.reconcile(loadedUpstreams({}), loadedRoutes([{ name: 'r', rateLimit: { perClient: narrow } }]))
    assert.equal(await drain(() => c.check({ ip: '192.0.2.2', headers: {} })), 2, 'the new burst, not the 9 tokens left')
  } finally {
    reg.close()
    client.disconnect()
  }
})

test('a reload that lowers the rate holds on local buckets too (a sweep judged them by the old rate)', () => {
  let t = 10_000
  const local = new MemoryBucketStore({ sweepAbove: 1, now: () => t })
  const l = new Limiter('x', local, null, { requestsPerSecond: 10, burst: 2, expectedReplicas: 1 })
  assert.ok((l.take('a', 0) as number) >= 0)
  assert.ok((l.take('a', 0) as number) >= 0)
  assert.ok((l.take('a', 0) as number) < 0)
  l.update({ requestsPerSecond: 0.01, burst: 2, expectedReplicas: 1 })
  t += 2000 // refilled at the old rate, 0.02 tokens at the new one
  l.take('b', 0) // a new key: the store sweeps refilled buckets
  assert.ok((l.take('a', 0) as number) < 0, 'bucket a is still empty at the new rate')
})

test('RateLimit-Policy states a fractional rate exactly: q/w is the configured rate', async () => {
  for (const [rate, burst] of [[0.333, 1], [1 / 3, 1], [0.3, 1], [123.456, 10], [0.7, 3], [10, 15], [50, 2], [0.02, 4]]) {
    const { q, w } = qw(policyField('client', rate, burst))
    assert.ok(Math.abs(q / w - rate) <= rate * 1e-9, `${rate}/s burst ${burst}: q=${q};w=${w} says ${q / w}/s`)
    assert.ok(q >= burst, `${rate}/s burst ${burst}: q=${q} below the burst`)
  }
  // And on the wire: a 429 of 0.333/s with burst 1.
  const reg = createResilienceRegistry({ metrics: freshMetrics(), log: captureLog().log, redis: null, redisPrefix: 'test:' })
  try {
    reg.reconcile(loadedUpstreams({}), loadedRoutes([{ name: 'r', rateLimit: { perClient: { requestsPerSecond: 0.333, burst: 1, expectedReplicas: 1 } } }]))
    const c = reg.clientLimiter('r')!
    await drain(() => c.check({ ip: '192.0.2.3', headers: {} }))
    const e = await rejection(() => c.check({ ip: '192.0.2.3', headers: {} }))
    assert.equal(e?.headers?.['ratelimit-policy'], '"client";q=333;w=1000')
  } finally { reg.close() }
})

test('workers on the primary\'s store: two routes\' per-client limits keep a bucket each for one client, and share it across workers', async () => {
  const here = dirname(fileURLToPath(import.meta.url))
  const compiled = import.meta.url.endsWith('.js')
  const child = fork(join(here, '..', 'scale', 'fixtures', compiled ? 'bucket-primary.js' : 'bucket-primary.ts'), [], {
    execArgv: compiled ? [] : ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  const [hello] = await once(child, 'message')
  assert.equal(hello, 'ready')
  const s1 = new IpcBucketStore(child, 2000)
  const s2 = new IpcBucketStore(child, 2000)
  const mk = (s: IpcBucketStore) => createResilienceRegistry({ metrics: freshMetrics(), log: captureLog().log, redis: null, redisPrefix: 'test:', sharedBuckets: s })
  const w1 = mk(s1)
  const w2 = mk(s2)
  try {
    const pc = { requestsPerSecond: 0.01, burst: 3, expectedReplicas: 2 }
    const routes = loadedRoutes([{ name: 'a', rateLimit: { perClient: pc } }, { name: 'b', rateLimit: { perClient: pc } }, { name: 'a.b', rateLimit: { perClient: { ...pc, key: 'route' } } }])
    w1.reconcile(loadedUpstreams({}), routes)
    w2.reconcile(loadedUpstreams({}), routes)
    const req = { ip: '192.0.2.4', headers: {} }
    // Route a, alternately on both workers: one bucket of 3 (not 3 per worker, not the local share).
    let passed = 0
    for (let i = 0; i < 8; i++) if (await (i % 2 ? w1 : w2).clientLimiter('a')!.check(req) === null) passed++
    assert.equal(passed, 3)
    // Route b and route a.b, same client: buckets of their own.
    assert.equal(await drain(() => w2.clientLimiter('b')!.check(req)), 3)
    assert.equal(await drain(() => w1.clientLimiter('a.b')!.check(req)), 3)
  } finally {
    w1.close(); w2.close(); s1.close(); s2.close()
    child.kill('SIGKILL')
    await once(child, 'exit').catch(() => {})
  }
})

test('an upstream RateLimit field listing several policies pauses the budget when any of them is exhausted', async () => {
  const reg = createResilienceRegistry({ metrics: freshMetrics(), log: captureLog().log, redis: null, redisPrefix: 'test:' })
  try {
    reg.reconcile(loadedUpstreams({ u: { rateLimit: { requestsPerSecond: 100, burst: 100, maxQueueMs: 0, maxPauseMs: 60_000 } } }), loadedRoutes([]))
    const b = reg.upstream('u').budget
    // A per-minute quota with requests left, and a daily one spent (draft-ietf-httpapi-ratelimit-headers: a List).
    b.observeResponse(200, { ratelimit: '"minute";r=50;t=10, "day";r=0;t=3600' })
    const e = await rejection(() => b.acquire())
    assert.ok(e !== null, 'paused: the daily quota is spent')
    assert.equal(e.headers?.['retry-after'], '60', 'for the longest exhausted reset, within maxPauseMs')
  } finally { reg.close() }
})

test('workers on the primary\'s store: a reload that lowers the rate holds on the primary\'s buckets (its sweep judged them by the old rate)', async () => {
  const here = dirname(fileURLToPath(import.meta.url))
  const compiled = import.meta.url.endsWith('.js')
  const child = fork(join(here, '..', 'scale', 'fixtures', compiled ? 'bucket-primary.js' : 'bucket-primary.ts'), [], {
    execArgv: compiled ? [] : ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  const [hello] = await once(child, 'message')
  assert.equal(hello, 'ready')
  const s1 = new IpcBucketStore(child, 5000)
  const w1 = createResilienceRegistry({ metrics: freshMetrics(), log: captureLog().log, redis: null, redisPrefix: 'test:', sharedBuckets: s1 })
  try {
    const fast = { requestsPerSecond: 10, burst: 2, expectedReplicas: 1 }
    const slow = { requestsPerSecond: 0.01, burst: 2, expectedReplicas: 1 }
    w1.reconcile(loadedUpstreams({}), loadedRoutes([{ name: 'r', rateLimit: { perClient: fast } }]))
    const req = { ip: '192.0.2.5', headers: {} }
    await drain(() => w1.clientLimiter('r')!.check(req))
    w1.reconcile(loadedUpstreams({}), loadedRoutes([{ name: 'r', rateLimit: { perClient: slow } }]))
    // Enough other keys for the primary's store to sweep (above 10 000), then a second for its
    // once-a-second sweep to be due, by when the old rate would have refilled the bucket.
    await Promise.all(Array.from({ length: 10_001 }, (_, i) => s1.take(`other:${i}`, 1, 1, 0)))
    await pause(1200)
    await s1.take('other:new', 1, 1, 0) // a new key: the primary sweeps refilled buckets
    const e = await rejection(() => w1.clientLimiter('r')!.check(req))
    assert.ok(e !== null, 'still empty at the new rate')
  } finally {
    w1.close(); s1.close()
    child.kill('SIGKILL')
    await once(child, 'exit').catch(() => {})
  }
})
