import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MemoryBucketStore } from '../../src/resilience/bucket-memory.js'
import { bucketConformance } from './bucket-conformance.js'
import { guardProcessHealth } from './helpers.js'

guardProcessHealth()
const store = new MemoryBucketStore()
bucketConformance('memory', () => store)

test('memory: the answer is synchronous (a number, not a promise)', () => {
  const s = new MemoryBucketStore()
  assert.equal(typeof s.take('k', 1, 1, 0), 'number')
})

test('memory: refilled buckets are swept once the store grows, and maxKeys bounds it', () => {
  let now = 0
  const s = new MemoryBucketStore({ sweepAbove: 100, maxKeys: 150, now: () => now })
  for (let i = 0; i < 100; i++) s.take(`a${i}`, 10, 1, 0)
  assert.equal(s.size, 100)
  now = 5000 // every bucket has refilled: indistinguishable from absent
  s.take('b', 10, 1, 0)
  assert.equal(s.size, 1)
  for (let i = 0; i < 300; i++) s.take(`c${i}`, 10, 1, 0) // none refills: the cap evicts the oldest
  assert.ok(s.size <= 150, `size ${s.size}`)
})
