// The Redis layout of L2: the records of one URL share a hash tag (one Cluster slot) and are
// invalidated together without a SCAN; the gauges measure Redis at a bounded cost per tick.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { RedisStore } from '../../src/httpcache/redis-store.js'
import type { CacheEntry } from '../../src/httpcache/entry.js'
import { startRedis, type RedisHandle } from '../helpers/redis.js'

let redis: RedisHandle
before(async () => { redis = await startRedis() })
after(async () => { await redis.stop() })

function entry (i: number): CacheEntry {
  const key = `G|example.com|/n/${i}`
  return {
    key, base: key, path: `/n/${i}`, status: 200, headers: {}, body: Buffer.alloc(100, 1),
    requestTime: 0, responseTime: 0, lifetimeMs: 60000, initialAgeMs: 0, swrMs: 0, sieMs: 0,
    mustRevalidate: false, noCache: false, tags: [], varyNames: [], authOk: false
  }
}

test('sampleStats counts every entry over several bounded steps and estimates bytes from samples', async () => {
  const prefix = redis.prefix + 'stats:'
  const c = redis.client()
  const errors: string[] = []
  const store = new RedisStore(c, prefix, (op) => { errors.push(op) })
  for (let i = 0; i < 1200; i += 100) await Promise.all(Array.from({ length: 100 }, (_, j) => store.set(entry(i + j), 60000)))
  await c.set(`${prefix}other`, 'x', 'PX', 60000) // not an entry
  let calls = 0
  let s: { entries: number; bytes: number } | null = null
  while (s === null && calls < 1000) { s = await store.sampleStats(100, 4); calls++ }
  assert.ok(s)
  assert.ok(calls > 1, 'the pass took more than one step')
  assert.equal(s.entries, 1200)
  assert.equal(s.entries, (await store.stats()).entries, 'the same count as the exact scan')
  assert.ok(s.bytes > 1200 * 100, 'at least the bodies')
  assert.deepEqual(errors, [])
  assert.equal(await store.purge({ prefix: '/n/' }), 1200)
  await clean(c, prefix)
})

/** Leave a shared server as it was. */
async function clean (c: ReturnType<RedisHandle['client']>, prefix: string): Promise<void> {
  const left = await c.keys(prefix.replace(/[*?[\]\\]/g, '\\$&') + '*')
  if (left.length) await c.del(...left)
}

test('the entry, Vary record and variant index of one URL share a hash tag; deleteBase removes them all', async () => {
  const prefix = redis.prefix + 'layout:'
  const c = redis.client()
  const store = new RedisStore(c, prefix, (op, err) => { throw new Error(`${op}: ${err.message}`) })
  const base = 'G|example.com|/odd/{braces}?q=1'
  const variant = (v: string): CacheEntry => ({ ...entry(0), key: `${base}\naccept-language:${v}`, base, path: '/odd/{braces}?q=1', varyNames: ['accept-language'] })
  await store.set(variant('en'), 60000)
  await store.set(variant('de'), 120000)
  const keys = (await c.keys(prefix.replace(/[*?[\]\\]/g, '\\$&') + '*')).sort()
  assert.equal(keys.length, 4, 'two variants, one Vary record, one index')
  const tags = new Set(keys.map((k) => k.slice(prefix.length, k.indexOf('}') + 1)))
  assert.equal(tags.size, 1, `one hash tag for all: ${keys.join(' ')}`)
  assert.match([...tags][0], /^\{[A-Za-z0-9_-]+\}$/, 'a digest, so braces in the URL cannot split the slot')
  const vary = keys.find((k) => k.includes('}v:'))!
  assert.ok(await c.pttl(vary) > 60000, 'the Vary record lives as long as the longest variant')
  assert.equal(await store.deleteBase(base), 2)
  assert.deepEqual(await c.keys(prefix.replace(/[*?[\]\\]/g, '\\$&') + '*'), [])
})

test('sampleStats reports a Redis failure and answers null', async () => {
  const c = redis.client()
  const errors: string[] = []
  const store = new RedisStore(c, redis.prefix + 'gone:', (op) => { errors.push(op) })
  c.disconnect()
  assert.equal(await store.sampleStats(), null)
  assert.deepEqual(errors, ['cache_stats'])
})

test('a purge is logged before it deletes: purgedSince lists other stores\' purges with when they began, never the store\'s own', async () => {
  const prefix = redis.prefix + 'plog:'
  const c = redis.client()
  const a = new RedisStore(c, prefix, (op, err) => { throw new Error(`${op}: ${err.message}`) })
  const b = new RedisStore(c, prefix, (op, err) => { throw new Error(`${op}: ${err.message}`) })
  const t0 = Date.now()
  await a.purge({ key: '/x' })
  await a.purge({ prefix: '/p/' })
  await a.purge({ tag: 'catalog' })
  await b.purge({ key: '/mine' })
  const seen = await b.purgedSince(t0 - 1)
  assert.deepEqual(seen?.map((p) => p.sel), [{ key: '/x' }, { prefix: '/p/' }, { tag: 'catalog' }])
  for (const p of seen ?? []) assert.ok(p.at >= t0 - 1 && p.at <= Date.now())
  assert.deepEqual((await a.purgedSince(t0 - 1))?.map((p) => p.sel), [{ key: '/mine' }])
  assert.deepEqual(await b.purgedSince(Date.now() + 1000), [])
  assert.ok(await c.pttl(`${prefix}purges`) > 0, 'the log expires')
})
