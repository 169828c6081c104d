// End to end: retries through a real gateway in front of a real origin (retry attempts 2).
// - An idempotent GET to an origin that resets the first connection (or answers 503 once) is
//   retried and succeeds; an origin that keeps resetting gets attempts + 1 tries, then 502.
// - A POST is not retried, unless the route sets retry.nonIdempotent (then its body is replayed);
//   a body larger than retry.maxBufferBytes streams and is never retried, opted in or not.
// - Every retry is counted in sluice_upstream_retries_total.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startOrigin } from '../helpers/origin.js'
import { startTestGateway } from '../helpers/gateway.js'
import { startRedis } from '../helpers/redis.js'
import { guardProcessHealth } from './helpers.js'
import { metric } from '../helpers/metrics.js'

guardProcessHealth()

const origin = await startOrigin()
const redis = await startRedis()
const MAX_BUFFER = 1024
// Budget and client limit in Redis, so every retry also takes a (Redis) budget token.
const g = await startTestGateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
redis: { url: "${redis.url}", keyPrefix: "${redis.prefix}" }
upstreams:
  main:
    url: ${origin.url}
    timeoutMs: 3000
    rateLimit: { requestsPerSecond: 1000, burst: 1000 }
    circuitBreaker: { enabled: false }
    # A roomy retry budget: these tests are about which requests are retried
    # (e2e-misbehaving.test.ts tests the budget).
    retry: { attempts: 2, backoffMs: 10, maxBackoffMs: 50, budgetMinRetries: 100, maxBufferBytes: ${MAX_BUFFER} }
routes:
  - name: post-retry
    match: { pathPrefix: /optin/ }
    upstream: main
    retry: { nonIdempotent: true }
  - name: main
    match: { pathPrefix: / }
    upstream: main
    rateLimit: { perClient: { requestsPerSecond: 1000, burst: 1000 } }
`, { level: 'warn' })

after(async () => {
  await g.close()
  await origin.close()
  await redis.stop()
})

const retries = () => metric(g.adminUrl, 'sluice_upstream_retries_total', { upstream: 'main' })

/** Fails the first `times` requests to a path with `fail`, then answers 200. */
function failTimes (path: string, times: number, fail: 'reset' | '503') {
  let n = 0
  origin.on(path, (req, res) => {
    if (n++ < times) {
      if (fail === 'reset') req.socket.destroy()
      else { res.writeHead(503, { 'content-type': 'text/plain' }); res.end('unavailable') }
      return
    }
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end(`ok ${req.method}`)
  })
}

async function send (path: string, method = 'GET', body?: string | Buffer) {
  const r = await request(g.url + path, { method: method as 'GET', body, headers: body === undefined ? {} : { 'content-type': 'text/plain' } })
  const text = await r.body.text()
  // Sluice's own errors are JSON; an origin's relayed 5xx is its text.
  const json = String(r.headers['content-type'] ?? '').includes('json')
  return { status: r.statusCode, text, code: json ? (JSON.parse(text) as { error: string }).error : undefined }
}

test('a GET to an origin that resets the first connection is retried and succeeds', async () => {
  const before = await retries()
  failTimes('/flaky-reset', 1, 'reset')
  const r = await send('/flaky-reset')
  assert.equal(r.status, 200)
  assert.equal(r.text, 'ok GET')
  assert.equal(origin.count('/flaky-reset'), 2, 'one reset attempt, one retry')
  assert.equal(await retries() - before, 1, 'one retry counted')
})

test('a GET answered 503 twice is retried twice and succeeds; one that keeps resetting stops after attempts + 1', async () => {
  const before = await retries()
  failTimes('/flaky-503', 2, '503')
  const r = await send('/flaky-503')
  assert.equal(r.status, 200)
  assert.equal(origin.count('/flaky-503'), 3)

  origin.on('/always-reset', (req) => { req.socket.destroy() })
  const r2 = await send('/always-reset')
  assert.equal(r2.status, 502)
  assert.equal(r2.code, 'SLUICE_ERR_UPSTREAM_RESET')
  assert.equal(origin.count('/always-reset'), 3, 'the first attempt and 2 retries, no more')
  assert.equal(await retries() - before, 4)

  // A 500 is not in retry.statuses: relayed as it is, once.
  origin.on('/five-hundred', (_req, res) => { res.writeHead(500); res.end('boom') })
  const r3 = await send('/five-hundred')
  assert.equal(r3.status, 500)
  assert.equal(origin.count('/five-hundred'), 1)
})

test('a POST is not retried, unless the route sets retry.nonIdempotent (then the body is replayed)', async () => {
  const before = await retries()
  failTimes('/post-once', 1, 'reset')
  const r = await send('/post-once', 'POST', 'payload')
  assert.equal(r.status, 502)
  assert.equal(r.code, 'SLUICE_ERR_UPSTREAM_RESET')
  assert.equal(origin.count('/post-once'), 1, 'the POST went once')

  failTimes('/post-503', 1, '503')
  const r1 = await send('/post-503', 'POST', 'payload')
  assert.equal(r1.status, 503, 'the upstream 503 is relayed, not retried')
  assert.equal(origin.count('/post-503'), 1)
  assert.equal(await retries(), before, 'no retry counted for a POST')

  failTimes('/optin/post', 1, 'reset')
  const r2 = await send('/optin/post', 'POST', 'payload')
  assert.equal(r2.status, 200)
  assert.equal(r2.text, 'ok POST')
  const seen = origin.seen.filter((s) => s.url === '/optin/post')
  assert.deepEqual(seen.map((s) => s.body.toString()), ['payload', 'payload'], 'retried once, with the same body')

  // A PUT is idempotent: retried without opting in, its body replayed.
  failTimes('/put-once', 1, '503')
  const r3 = await send('/put-once', 'PUT', 'x')
  assert.equal(r3.status, 200)
  assert.deepEqual(origin.seen.filter((s) => s.url === '/put-once').map((s) => s.body.toString()), ['x', 'x'])
  assert.equal(await retries() - before, 2)
})

test('a body larger than retry.maxBufferBytes is never retried, even on an opted-in route', async () => {
  const before = await retries()
  const big = Buffer.alloc(MAX_BUFFER * 4, 'b')
  failTimes('/optin/big', 1, '503')
  const r = await send('/optin/big', 'POST', big)
  assert.equal(r.status, 503, 'the 503 is relayed: the streamed body cannot be sent again')
  const seen = origin.seen.filter((s) => s.url === '/optin/big')
  assert.equal(seen.length, 1)
  assert.equal(seen[0].body.length, big.length, 'the body streamed through whole')
  failTimes('/big-put', 1, '503')
  const r2 = await send('/big-put', 'PUT', big)
  assert.equal(r2.status, 503)
  assert.equal(origin.count('/big-put'), 1)
  assert.equal(await retries(), before)
  // The gateway goes on serving (and retrying small bodies).
  failTimes('/optin/small', 1, '503')
  assert.equal((await send('/optin/small', 'POST', 'small')).status, 200)
  assert.equal(origin.count('/optin/small'), 2)
})
