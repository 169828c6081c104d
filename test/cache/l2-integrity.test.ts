// L2 bookkeeping that must stay right over time and under concurrency: tag sets outlive their
// members and are capped without overshoot, variant indexes shed expired variants, purge by key
// reads paths that contain `|`, and a damaged record is a counted miss, never a short body.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { RedisStore } from '../../src/httpcache/redis-store.js'
import type { CacheEntry } from '../../src/httpcache/entry.js'
import { startRedis, type RedisHandle } from '../helpers/redis.js'

let redis: RedisHandle
before(async () => { redis = await startRedis() })
after(async () => { await redis.stop() })

function entry (path: string, over: Partial<CacheEntry> = {}): CacheEntry {
  const key = `G|example.com|${path}`
  return {
    key, base: key, path, status: 200, headers: {}, body: Buffer.from('body of ' + path),
    requestTime: 0, responseTime: 0, lifetimeMs: 60000, initialAgeMs: 0, swrMs: 0, sieMs: 0,
    mustRevalidate: false, noCache: false, tags: [], varyNames: [], authOk: false, ...over
  }
}

const esc = (s: string) => s.replace(/[*?[\]\\]/g, '\\$&')

function setup (name: string) {
  const prefix = redis.prefix + name + ':'
  const c = redis.client()
  const errors: string[] = []
  const store = new RedisStore(c, prefix, (op, err) => { errors.push(`${op}: ${err.message}`) })
  /** The Redis key of a variant's record. */
  const recordKey = async (key: string) => (await c.keys(`${esc(prefix)}{*}c:${esc(key)}`))[0]
  const clean = async () => { const left = await c.keys(esc(prefix) + '*'); if (left.length) await c.del(...left) }
  return { prefix, c, errors, store, recordKey, clean }
}

/** Store `n` entries, `batch` at a time concurrently (as many replicas filling at once would). */
async function fill (store: RedisStore, n: number, make: (i: number) => CacheEntry, ttlMs: number, batch = 250): Promise<void> {
  for (let i = 0; i < n; i += batch) await Promise.all(Array.from({ length: Math.min(batch, n - i) }, (_, j) => store.set(make(i + j), ttlMs)))
}

test('a tag set lives as long as its longest-lived member: a short-lived entry does not shorten it', async () => {
  const { prefix, c, errors, store, clean } = setup('tagttl')
  await store.set(entry('/long', { tags: ['t'] }), 3_600_000)
  await store.set(entry('/short', { tags: ['t'] }), 1000)
  const pttl = await c.pttl(`${prefix}t:{t}`)
  assert.ok(pttl > 3_500_000, `the tag set expires in ${pttl} ms, before /long (1 hour)`)
  assert.equal(await store.purge({ tag: 't' }), 2)
  assert.deepEqual(errors, [])
  await clean()
})

test('concurrent stores keep a tag set at exactly its cap, and a purge by tag then misses only the excess', async () => {
  const { prefix, c, errors, store, clean } = setup('tagcap')
  await fill(store, 10_050, (i) => entry(`/p/${i}`, { tags: ['products'] }), 3_600_000)
  assert.equal((await store.stats()).entries, 10_050)
  assert.equal(await c.scard(`${prefix}t:{products}`), 10_000, 'no overshoot, and no more members dropped than the cap requires')
  assert.equal(await store.purge({ tag: 'products' }), 10_000)
  assert.equal((await store.stats()).entries, 50, 'only the 50 past the cap were left')
  assert.deepEqual(errors, [])
  await clean()
})

test('a full tag set drops members whose entries are gone before live ones', async () => {
  const { prefix, c, errors, store, clean } = setup('tagdead')
  await fill(store, 10_000, (i) => entry(`/${i % 2 ? 'live' : 'gone'}/${i}`, { tags: ['t'] }), 3_600_000)
  assert.equal(await store.purge({ prefix: '/gone/' }), 5000) // their keys stay in the tag set
  assert.equal(await c.scard(`${prefix}t:{t}`), 10_000)
  for (let i = 0; i < 10; i++) await store.set(entry(`/late/${i}`, { tags: ['t'] }), 3_600_000)
  assert.ok(await c.scard(`${prefix}t:{t}`) <= 10_000)
  assert.equal(await store.purge({ tag: 't' }), 5010, 'every live entry was still in the tag set')
  assert.equal((await store.stats()).entries, 0)
  assert.deepEqual(errors, [])
  await clean()
})

test('the variant index of a URL sheds variants whose records expired and converges to the live set', async () => {
  const { prefix, c, errors, store, clean } = setup('index')
  const base = 'G|example.com|/home'
  const variant = (v: string) => entry('/home', { key: `${base}\nuser-agent:${v}`, base, varyNames: ['user-agent'] })
  for (let i = 0; i < 300; i++) await store.set(variant(`old-${i}`), 3_600_000)
  const idx = (await c.keys(`${esc(prefix)}{*}i:${esc(base)}`))[0]
  assert.equal(await c.scard(idx), 300)
  // Expire the 300 old variants now, as their TTLs would.
  const old = await c.smembers(idx)
  await Promise.all(old.map((k) => c.del(k)))
  for (let i = 0; i < 200; i++) await store.set(variant(`new-${i}`), 3_600_000)
  const members = await c.smembers(idx)
  const live = (await Promise.all(members.map((k) => c.exists(k)))).filter((x) => x === 1).length
  assert.equal(live, 200, 'every live variant is in the index')
  assert.ok(members.length <= 210, `the index holds ${members.length} keys for 200 live variants`)
  assert.equal(await store.deleteBase(base), 200)
  assert.deepEqual(errors, [])
  await clean()
})

test('purge by key and by prefix read a path that contains `|`, with or without key headers after it', async () => {
  const { errors, store, clean } = setup('pipe')
  await store.set(entry('/search?q=a|b'), 60000)
  await store.set(entry('/search?q=a'), 60000)
  // A route with key headers: `|name=value` follows the path in the key.
  const k = 'G|example.com|/x?f=1|2|x-tenant=acme'
  await store.set(entry('/x?f=1|2', { key: k, base: k }), 60000)
  assert.equal(await store.purge({ key: '/search?q=a|b' }), 1)
  assert.ok(await store.get('G|example.com|/search?q=a'), 'a purge of /search?q=a|b leaves /search?q=a')
  assert.equal(await store.purge({ key: '/x?f=1' }), 0, 'a path is not cut at its `|`')
  assert.equal(await store.purge({ key: '/x?f=1|2' }), 1)
  await store.set(entry('/search?q=a|b'), 60000)
  assert.equal(await store.purge({ prefix: '/search?q=a|' }), 1)
  assert.ok(await store.get('G|example.com|/search?q=a'))
  assert.deepEqual(errors, [])
  await clean()
})

test('a record whose declared lengths do not add up is a counted miss, not a short body', async () => {
  const { c, errors, store, recordKey, clean } = setup('trunc')
  const e = entry('/t', { body: Buffer.from('abcdefghijklmnopqrstuvwxyz'), gzip: Buffer.from('GZIPBYTES') })
  await store.set(e, 60000)
  const rk = await recordKey(e.key)
  const full = await c.getBuffer(rk)
  assert.ok(full)
  assert.deepEqual((await store.get(e.key))?.gzip, e.gzip)
  await c.set(rk, full.subarray(0, full.length - 20), 'PX', 60000) // cut into the body
  assert.equal(await store.get(e.key), undefined)
  await c.set(rk, full.subarray(0, full.length - 1), 'PX', 60000) // one gzip byte short
  assert.equal(await store.get(e.key), undefined)
  await c.set(rk, Buffer.concat([full, Buffer.from('x')]), 'PX', 60000) // a byte too many
  assert.equal(await store.get(e.key), undefined)
  assert.equal(errors.length, 3, `each counted as a failed get: ${errors.join('; ')}`)
  assert.ok(errors.every((x) => x.startsWith('cache_get')))
  await clean()
})
