// The cache store conformance suite: every EntryStore (the in-process L1, Redis L2 on one
// server, Redis L2 on a Redis Cluster) must pass the same tests, fill leases included.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import type { EntryStore, FillLeases } from '../../src/httpcache/store.js'
import type { CacheEntry } from '../../src/httpcache/entry.js'

export function entry (path: string, over: Partial<CacheEntry> = {}): CacheEntry {
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

export function storeConformance (name: string, make: () => EntryStore & FillLeases): void {
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

    test('a fill lease has one owner; the others wait and are counted; release tells how many waited', async () => {
      const s = make()
      const key = 'G|example.com|/lease'
      assert.equal(await s.lease(key, 'a', 5000, true), 'acquired')
      assert.equal(await s.lease(key, 'b', 5000, true), 'held')
      assert.equal(await s.lease(key, 'c', 5000, false), 'held')
      assert.equal(await s.release(key, 'b'), -1) // not b's
      assert.equal(await s.release(key, 'a'), 2)
      assert.equal(await s.release(key, 'a'), -1) // already given back
      assert.equal(await s.lease(key, 'b', 5000, true), 'acquired')
    })

    test('a pure miss that finds the entry stored meanwhile is told "filled"; a refresh takes the lease anyway', async () => {
      const s = make()
      const e = entry('/leased')
      await s.set(e, 60000)
      assert.equal(await s.lease(e.key, 'a', 5000, true), 'filled')
      assert.equal(await s.lease(e.key, 'a', 5000, false), 'acquired')
    })

    test('a lease runs out after its time to live', async () => {
      const s = make()
      const key = 'G|example.com|/lease-ttl'
      assert.equal(await s.lease(key, 'a', 100, true), 'acquired')
      await new Promise((r) => setTimeout(r, 250))
      assert.equal(await s.lease(key, 'b', 5000, true), 'acquired')
      assert.equal(await s.release(key, 'a'), -1)
    })
  })
}
