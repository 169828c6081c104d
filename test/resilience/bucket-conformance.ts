// One conformance suite for every BucketStore (memory and Redis): the same calls give the
// same decisions. Assertions are on counts and on ordering, never on how long things took;
// where time must pass the sleeps are generous, and a longer sleep cannot change the outcome.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { GIVE_BACK, type BucketStore } from '../../src/resilience/bucket-store.js'
import { sleep } from './helpers.js'

export function bucketConformance (label: string, store: () => BucketStore): void {
  let n = 0
  const key = () => `conf:${label}:${n++}:${Math.random().toString(36).slice(2, 8)}`

  test(`${label}: a fresh bucket grants its burst at once, then denies with a retry time under one token's refill`, async () => {
    const k = key()
    const got: number[] = []
    for (let i = 0; i < 6; i++) got.push(await store().take(k, 1, 5, 0))
    assert.deepEqual(got.slice(0, 5), [0, 0, 0, 0, 0])
    assert.ok(got[5] < 0 && -got[5] >= 1 && -got[5] <= 1000, `denied with retry in 1..1000 ms, got ${got[5]}`)
  })

  test(`${label}: keys are independent`, async () => {
    const a = key()
    const b = key()
    assert.equal(await store().take(a, 1, 1, 0), 0)
    assert.ok(await store().take(a, 1, 1, 0) < 0)
    assert.equal(await store().take(b, 1, 1, 0), 0)
  })

  test(`${label}: refill never exceeds the burst`, async () => {
    const k = key()
    assert.equal(await store().take(k, 20, 2, 0), 0)
    assert.equal(await store().take(k, 20, 2, 0), 0)
    assert.ok(await store().take(k, 20, 2, 0) < 0)
    await sleep(400) // 8 tokens' worth of time, capped at 2
    assert.equal(await store().take(k, 20, 2, 0), 0)
    assert.equal(await store().take(k, 20, 2, 0), 0)
    assert.ok(await store().take(k, 20, 2, 0) < 0)
  })

  test(`${label}: tokens come back with time, and a denial consumes nothing`, async () => {
    const k = key()
    assert.equal(await store().take(k, 10, 1, 0), 0)
    for (let i = 0; i < 5; i++) assert.ok(await store().take(k, 10, 1, 0) < 0)
    await sleep(250) // a token takes 100 ms; denials must not have pushed it further away
    assert.equal(await store().take(k, 10, 1, 0), 0)
  })

  test(`${label}: a fractional rate works (one token per 2 s)`, async () => {
    const k = key()
    assert.equal(await store().take(k, 0.5, 1, 0), 0)
    const r = await store().take(k, 0.5, 1, 0)
    assert.ok(r < 0 && -r > 1000 && -r <= 2000, `retry within 1..2 s, got ${r}`)
  })

  test(`${label}: maxWaitMs reserves future tokens in order (FIFO), then denies`, async () => {
    const k = key()
    const got: number[] = []
    for (let i = 0; i < 5; i++) got.push(await store().take(k, 1, 1, 3000))
    // burst 1 + three reservations of 1 s each fit in 3 s; the fifth does not.
    assert.equal(got[0], 0)
    assert.ok(got[1] > 0 && got[1] <= 1000, `first wait ${got[1]}`)
    assert.ok(got[2] > got[1] && got[2] <= 2000, `second wait ${got[2]}`)
    assert.ok(got[3] > got[2] && got[3] <= 3000, `third wait ${got[3]}`)
    assert.ok(got[4] < 0 && -got[4] <= 1000, `denied, retry within 1 s: ${got[4]}`)
  })

  test(`${label}: a give-back (GIVE_BACK) returns one reserved token, never past the burst`, async () => {
    const k = key()
    assert.equal(await store().take(k, 0.5, 1, 0), 0) // the only token
    const reserved = await store().take(k, 0.5, 1, 5000) // a reservation: about 2 s away
    assert.ok(reserved > 1000, `reserved ${reserved} ms ahead`)
    assert.equal(await store().take(k, 0.5, 1, GIVE_BACK), 0) // its request left: the token comes back
    const next = await store().take(k, 0.5, 1, 5000)
    assert.ok(next > 1000 && next <= reserved, `the next take waits no longer than the one given back did (${next} <= ${reserved})`)
    const fresh = key()
    assert.equal(await store().take(fresh, 1, 2, GIVE_BACK), 0) // nothing to give back to: no effect
    assert.equal(await store().take(fresh, 1, 2, 0), 0)
    assert.equal(await store().take(fresh, 1, 2, 0), 0)
    assert.ok(await store().take(fresh, 1, 2, 0) < 0, 'still the burst, not burst + 1')
  })

  test(`${label}: many concurrent takes grant exactly the burst`, async () => {
    const k = key()
    const results = await Promise.all(Array.from({ length: 50 }, () => store().take(k, 0.01, 20, 0)))
    assert.equal(results.filter((r) => r >= 0).length, 20)
    assert.equal(results.filter((r) => r < 0).length, 30)
  })
}
