// Per-client limits in memory: 429 headers, keys (ip, header, route), shadow mode.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createResilienceRegistry } from '../../src/resilience/registry.js'
import { addressKey } from '../../src/resilience/client-limiter.js'
import { loadedUpstreams, loadedRoutes } from './loaded-input.js'
import type { PerClientConfig } from '../../src/resilience/config.js'
import { captureLog, freshMetrics, guardProcessHealth, valueOf } from './helpers.js'

const metrics = freshMetrics()
const reg = createResilienceRegistry({ metrics, log: captureLog().log, redis: null, redisPrefix: 'test:' })
after(() => reg.close())
guardProcessHealth()

function limiterFor (route: string, perClient: Partial<PerClientConfig>) {
  reg.reconcile(loadedUpstreams({}), loadedRoutes([{ name: route, rateLimit: { perClient } }]))
  const l = reg.clientLimiter(route)
  assert.ok(l)
  return l
}

test('a route without a client limit has no limiter', () => {
  reg.reconcile(loadedUpstreams({}), loadedRoutes([{ name: 'open' }, { name: 'open2', rateLimit: {} }]))
  assert.equal(reg.clientLimiter('open'), null)
  assert.equal(reg.clientLimiter('open2'), null)
})

test('per IP: the burst passes synchronously, then 429 SLUICE_ERR_RATE_LIMITED with headers; other IPs are untouched', async () => {
  const l = limiterFor('by-ip', { requestsPerSecond: 1, burst: 2 })
  const a = { ip: '192.0.2.1', headers: {} }
  assert.equal(l.check(a), null)
  assert.equal(l.check(a), null)
  const err = l.check(a)
  assert.ok(err && !(err instanceof Promise))
  assert.equal(err.code, 'SLUICE_ERR_RATE_LIMITED')
  assert.equal(err.status, 429)
  assert.deepEqual(err.headers, { 'retry-after': '1', 'ratelimit-policy': '"client";q=2;w=2', ratelimit: '"client";r=0;t=1' })
  assert.equal(l.check({ ip: '192.0.2.2', headers: {} }), null)
  assert.equal(await valueOf(metrics.rateLimited, { scope: 'client', name: 'by-ip' }), 1)
})

test('Retry-After is rounded up to whole seconds', () => {
  const l = limiterFor('slow', { requestsPerSecond: 0.4, burst: 1 })
  const c = { ip: '192.0.2.3', headers: {} }
  assert.equal(l.check(c), null)
  const err = l.check(c)
  assert.ok(err && !(err instanceof Promise))
  assert.equal(err.headers?.['retry-after'], '3') // 2.5 s → 3
})

test('key header:<name> buckets by that header, and by IP when it is missing', () => {
  const l = limiterFor('by-key', { requestsPerSecond: 0.01, burst: 1, key: 'header:X-Api-Key' })
  assert.equal(l.check({ ip: '192.0.2.9', headers: { 'x-api-key': 'alpha' } }), null)
  assert.notEqual(l.check({ ip: '192.0.2.10', headers: { 'x-api-key': 'alpha' } }), null, 'same key from another IP shares the bucket')
  assert.equal(l.check({ ip: '192.0.2.9', headers: { 'x-api-key': 'beta' } }), null)
  assert.equal(l.check({ ip: '192.0.2.9', headers: {} }), null)
  assert.notEqual(l.check({ ip: '192.0.2.9', headers: {} }), null)
})

test('key route: every client shares one bucket', () => {
  const l = limiterFor('by-route', { requestsPerSecond: 0.01, burst: 2, key: 'route' })
  assert.equal(l.check({ ip: '192.0.2.20', headers: {} }), null)
  assert.equal(l.check({ ip: '192.0.2.21', headers: {} }), null)
  assert.notEqual(l.check({ ip: '192.0.2.22', headers: {} }), null)
})

test('shadow mode counts would-be rejections without rejecting', async () => {
  const l = limiterFor('shadowed', { requestsPerSecond: 0.01, burst: 1, shadow: true })
  const c = { ip: '192.0.2.30', headers: {} }
  for (let i = 0; i < 5; i++) assert.equal(l.check(c), null)
  assert.equal(await valueOf(metrics.rateLimited, { scope: 'client', name: 'shadowed' }), 4)
})

test('a reload that changes the limit keeps the buckets; removing the limit removes the limiter', () => {
  const l = limiterFor('reloaded', { requestsPerSecond: 0.01, burst: 1 })
  const c = { ip: '192.0.2.40', headers: {} }
  assert.equal(l.check(c), null)
  const l2 = limiterFor('reloaded', { requestsPerSecond: 0.02, burst: 1 })
  assert.equal(l2, l, 'same limiter object')
  assert.notEqual(l2.check(c), null, 'the spent token stays spent across the reload')
  reg.reconcile(loadedUpstreams({}), loadedRoutes([{ name: 'reloaded' }]))
  assert.equal(reg.clientLimiter('reloaded'), null)
})

test('an IPv6 client is keyed by its /64: new addresses in it share one bucket; IPv4 and IPv4-mapped addresses are keyed as they are', () => {
  assert.equal(addressKey('203.0.113.7'), '203.0.113.7')
  assert.equal(addressKey('::ffff:203.0.113.7'), '203.0.113.7')
  assert.equal(addressKey('2001:db8::1'), '2001:db8:0:0::/64')
  assert.equal(addressKey('2001:DB8:0:0:ffff::9'), '2001:db8:0:0::/64')
  assert.equal(addressKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64')
  assert.equal(addressKey('fe80::1%eth0'), 'fe80:0:0:0::/64')
  assert.equal(addressKey('::1'), '0:0:0:0::/64')
  assert.notEqual(addressKey('2001:db8:0:1::1'), addressKey('2001:db8:0:2::1'))
  const l = limiterFor('v6', { requestsPerSecond: 0.001, burst: 1 })
  assert.equal(l.check({ ip: '2001:db8::1', headers: {} }), null)
  for (let i = 2; i < 20; i++) assert.notEqual(l.check({ ip: `2001:db8::${i.toString(16)}`, headers: {} }), null, `2001:db8::${i.toString(16)} got a fresh bucket`)
  assert.equal(l.check({ ip: '2001:db8:0:1::1', headers: {} }), null, 'another /64 has its own')
})
