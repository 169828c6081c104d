// One conformance suite for both cache stores: the in-process L1 and Redis L2.
import { test, after, before, describe } from 'node:test'
import assert from 'node:assert/strict'
import { MemoryStore } from '../../src/httpcache/memory.js'
import { RedisStore } from '../../src/httpcache/redis-store.js'
import type { EntryStore } from '../../src/httpcache/store.js'
import type { CacheEntry } from '../../src/httpcache/entry.js'
import { encodeEntry, decodeEntry } from '../../src/httpcache/entry.js'
import { startRedis, type RedisHandle } from '../helpers/redis.js'

function entry (path: string, over: Partial<CacheEntry> = {}): CacheEntry {
  const base = `G|example.com|${path}`
  return {
    key: base, base, path, status: 200,
    headers: { 'content-type': 'application/octet-stream', etag: '"x"' },
    body: Buffer.from([0, 1, 2, 255, 254, 10, 13]),
    requestTime: Date.now(), responseTime: Date.now(), lifetimeMs: 60000, initialAgeMs: 0,
    swrMs: 0, sieMs: 0, mustRevalidate: false, noCache: false, tags: [], varyNames: [], authOk: false,
    ...over
  }
}

let redis: RedisHandle
before(async () => { redis = await startRedis() })
after(async () => { await redis.stop() })

const stores: [string, () => EntryStore][] = [
  ['memory', () => new MemoryStore(1 << 20, 1 << 19)],
  ['redis', () => new RedisStore(redis.client(), redis.prefix + Math.random().toString(36).slice(2) + ':', (op, err) => { throw new Error(`${op}: ${err.message}`) })]
]

for (const [name, make] of stores) {
  describe(`${name} cache store`, () => {
    test('stores and returns an entry with its bytes intact', async () => {
      const s = make()
      const e = entry('/bytes', { gzip: Buffer.from('gz'), br: Buffer.from('brotli') })
      await s.set(e, 60000)
      const got = await s.get(e.key)
      assert.ok(got)
      assert.deepEqual(got.body, e.body)
      assert.deepEqual(got.gzip, e.gzip)
      assert.deepEqual(got.br, e.br)
      assert.equal(got.headers.etag, '"x"')
      assert.equal(await s.get('G|example.com|/missing'), undefined)
    })

    test('remembers the Vary names of a base key', async () => {
      const s = make()
      const e = entry('/vary', { varyNames: ['accept-language'], key: 'G|example.com|/vary\naccept-language:fr' })
      await s.set(e, 60000)
      assert.deepEqual(await s.getVary('G|example.com|/vary'), ['accept-language'])
      assert.deepEqual(await s.getVary('G|example.com|/never'), undefined)
    })

    test('deleteBase removes every variant of a URL', async () => {
      const s = make()
      await s.set(entry('/v', { key: 'G|example.com|/v\nx:1', varyNames: ['x'] }), 60000)
      await s.set(entry('/v', { key: 'G|example.com|/v\nx:2', varyNames: ['x'] }), 60000)
      await s.set(entry('/other'), 60000)
      assert.equal(await s.deleteBase('G|example.com|/v'), 2)
      assert.equal(await s.get('G|example.com|/v\nx:1'), undefined)
      assert.ok(await s.get('G|example.com|/other'))
    })

    test('purges by exact key, by prefix and by tag', async () => {
      const s = make()
      await s.set(entry('/api/a', { tags: ['t1'] }), 60000)
      await s.set(entry('/api/b?x=1', { tags: ['t1', 't2'] }), 60000)
      await s.set(entry('/static/c', { tags: ['t2'] }), 60000)
      await s.set(entry('/api/bb'), 60000)
      assert.equal(await s.purge({ key: '/api/b?x=1' }), 1)
      assert.equal(await s.purge({ tag: 't2' }), 1)
      assert.equal(await s.purge({ prefix: '/api/' }), 2)
      assert.equal((await s.stats()).entries, 0)
    })

    test('entries expire after their time to live', async () => {
      const s = make()
      await s.set(entry('/short'), 150)
      assert.ok(await s.get('G|example.com|/short'))
      await new Promise((r) => setTimeout(r, 300))
      assert.equal(await s.get('G|example.com|/short'), undefined)
    })
  })
}

test('the memory store evicts the least recently used entries to stay within maxBytes', () => {
  const s = new MemoryStore(5000, 2500)
  const big = (p: string) => entry(p, { body: Buffer.alloc(800) })
  s.set(big('/1'), 60000)
  s.set(big('/2'), 60000)
  s.get('G|example.com|/1') // /1 is now more recent than /2
  s.set(big('/3'), 60000)
  assert.ok(s.stats().bytes <= 5000)
  assert.ok(s.get('G|example.com|/1'))
  assert.equal(s.get('G|example.com|/2'), undefined)
  assert.equal(s.set(entry('/huge', { body: Buffer.alloc(5000) }), 60000), false, 'larger than maxEntryBytes is refused')
})

test('a Redis record is one binary value, not JSON with base64 bodies', () => {
  const e = entry('/bin', { body: Buffer.alloc(1000, 7) })
  const rec = encodeEntry(e)
  assert.ok(rec.length < 1000 + 800, `record is ${rec.length} bytes`)
  assert.ok(rec.includes(Buffer.alloc(1000, 7)), 'the body bytes are in the record as they are')
  assert.deepEqual(decodeEntry(rec)?.body, e.body)
})
