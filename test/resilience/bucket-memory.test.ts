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

test('memory: a full store makes room in constant time, and a flood of new keys does not reset the buckets in use', () => {
  let now = 0
  const s = new MemoryBucketStore({ sweepAbove: 1000, maxKeys: 2000, now: () => now })
  // A budget in use: burst 5 at 1/s, drained.
  for (let i = 0; i < 5; i++) assert.equal(s.take('up:api', 1, 5, 0), 0)
  assert.ok(s.take('up:api', 1, 5, 0) < 0, 'drained')
  // 20,000 one-off keys with slow limits (none refills), 50 ms apart in total; the budget keeps being asked.
  for (let i = 0; i < 20_000; i++) {
    if (i % 400 === 0) { now += 1; assert.ok(s.take('up:api', 1, 5, 0) < 0, `the drained budget was reset at key ${i}`) }
    s.take(`client:${i}`, 5 / 60, 5, 0)
    assert.ok(s.size <= 2000)
  }
  // Its state survived: after 50 ms it still has no token to give.
  assert.ok(s.take('up:api', 1, 5, 0) < 0, 'the budget kept its state through the flood')
})

test('memory: at capacity, a new key costs about what an existing one does (no scan per insert)', () => {
  let now = 0
  const s = new MemoryBucketStore({ sweepAbove: 10_000, maxKeys: 20_000, now: () => now })
  for (let i = 0; i < 20_000; i++) s.take(`fill:${i}`, 5 / 60, 5, 0)
  // 20,000 more new keys within the same second: with a scan per insert that is 4e8 visits.
  // Counted, not timed: the number of sweeps stays at most one a second.
  const sweep = (s as unknown as { sweep: (now: number) => void })
  let sweeps = 0
  const orig = sweep.sweep.bind(s)
  sweep.sweep = (n: number) => { sweeps++; orig(n) }
  for (let i = 0; i < 20_000; i++) { now += 0.01; s.take(`new:${i}`, 5 / 60, 5, 0) }
  assert.ok(sweeps <= 1, `${sweeps} full sweeps for 20,000 inserts in 200 ms`)
  assert.equal(s.size, 20_000)
})
