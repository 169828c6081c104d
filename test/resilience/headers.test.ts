import { test } from 'node:test'
import assert from 'node:assert/strict'
import { exhaustedForMs, parseRetryAfter, policyField, rejectionHeaders, retryAfterSeconds } from '../../src/resilience/headers.js'

test('Retry-After: delta-seconds, HTTP-date, junk', () => {
  const now = Date.parse('2026-01-01T00:00:00Z')
  assert.equal(parseRetryAfter('7', now), 7000)
  assert.equal(parseRetryAfter(['3', '9'], now), 3000)
  assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:05 GMT', now), 5000)
  assert.equal(parseRetryAfter('Wed, 31 Dec 2025 23:00:00 GMT', now), 0)
  assert.equal(parseRetryAfter('soon', now), null)
  assert.equal(parseRetryAfter('-1', now), null)
  assert.equal(parseRetryAfter(undefined, now), null)
})

test('RateLimit fields: exhausted only when remaining is 0', () => {
  assert.equal(exhaustedForMs({ ratelimit: '"default";r=0;t=12' }), 12000)
  assert.equal(exhaustedForMs({ ratelimit: '"default";r=1;t=12' }), null)
  assert.equal(exhaustedForMs({ ratelimit: 'limit=10, remaining=0, reset=4' }), 4000)
  assert.equal(exhaustedForMs({ 'ratelimit-remaining': '0', 'ratelimit-reset': '2' }), 2000)
  assert.equal(exhaustedForMs({ 'x-ratelimit-remaining': '3', 'x-ratelimit-reset': '2' }), null)
  assert.equal(exhaustedForMs({ 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': '1700000010' }, 1700000000000), 10000)
  assert.equal(exhaustedForMs({}), null)
})

test('rejection headers: Retry-After rounded up and never 0; policy as quota per refill time', () => {
  assert.equal(retryAfterSeconds(1), 1)
  assert.equal(retryAfterSeconds(0), 1)
  assert.equal(retryAfterSeconds(1001), 2)
  assert.equal(policyField('client', 50, 100), '"client";q=100;w=2')
  assert.equal(policyField('upstream', 5, 400), '"upstream";q=400;w=80')
  // A burst below the rate: the quota per second is the rate, not the burst.
  assert.equal(policyField('client', 50, 2), '"client";q=50;w=1')
  assert.equal(policyField('client', 10, 15), '"client";q=20;w=2')
  assert.equal(policyField('client', 0.5, 1), '"client";q=1;w=2')
  assert.equal(policyField('client', 0.3, 1), '"client";q=3;w=10', 'a fractional rate over a window that says it exactly')
  assert.deepEqual(rejectionHeaders('client', '"client";q=1;w=1', 2500), { 'retry-after': '3', 'ratelimit-policy': '"client";q=1;w=1', ratelimit: '"client";r=0;t=3' })
})
