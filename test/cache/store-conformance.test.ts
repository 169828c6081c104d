// One conformance suite for both cache stores: the in-process L1 and Redis L2.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { MemoryStore } from '../../src/httpcache/memory.js'
import { RedisStore } from '../../src/httpcache/redis-store.js'
import type { EntryStore, FillLeases } from '../../src/httpcache/store.js'
import { encodeEntry, decodeEntry } from '../../src/httpcache/entry.js'
import { startRedis, type RedisHandle } from '../helpers/redis.js'
import { storeConformance, entry } from './store-suite.js'

let redis: RedisHandle
before(async () => { redis = await startRedis() })
after(async () => { await redis.stop() })

const stores: [string, () => EntryStore & FillLeases][] = [
  ['memory', () => new MemoryStore(1 << 20, 1 << 19)],
  ['redis', () => new RedisStore(redis.client(), redis.prefix + Math.random().toString(36).slice(2) + ':', (op, err) => { throw new Error(`${op}: ${err.message}`) })]
]

for (const [name, make] of stores) storeConformance(name, make)

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
