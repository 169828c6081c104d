// End to end: misbehaving origins, through a real gateway in front of a real origin
// (retries themselves are in e2e-retry.test.ts).
// - An origin that resets mid-body: the client sees an aborted response, never a complete 200.
// - A slow-headers origin: 504 SLUICE_ERR_UPSTREAM_TIMEOUT while the origin still holds its answer.
// - A 5xx storm with retry attempts 2: nothing crashes, and retries stay within the retry budget.
// - A client leaving while queued for the budget, and an upstream 429 pausing the budget.
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
// Budgets and limits in Redis, so the Redis path runs under every scenario here too.
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
    retry: { attempts: 2, backoffMs: 10, maxBackoffMs: 50, budgetMinRetries: 100 }
  slow:
    url: ${origin.url}
    timeoutMs: 300
    retry: { attempts: 2, backoffMs: 10, maxBackoffMs: 50 }
  storm:
    url: ${origin.url}
    timeoutMs: 3000
    circuitBreaker: { enabled: false }
    retry: { attempts: 2, backoffMs: 1, maxBackoffMs: 5, budgetPercent: 20, budgetMinRetries: 3 }
  queued:
    url: ${origin.url}
    timeoutMs: 5000
    rateLimit: { requestsPerSecond: 1, burst: 1, maxQueueMs: 4000, adaptive: false }
  polite:
    url: ${origin.url}
    timeoutMs: 3000
    rateLimit: { requestsPerSecond: 1000, burst: 1000, maxQueueMs: 0, maxPauseMs: 60000 }
routes:
  - name: queued
    match: { pathPrefix: /queued/ }
    upstream: queued
  - name: polite
    match: { pathPrefix: /polite/ }
    upstream: polite
  - name: slow
    match: { pathPrefix: /slow/ }
    upstream: slow
  - name: storm
    match: { pathPrefix: /storm/ }
    upstream: storm
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

test('an origin that resets mid-body: the client sees an aborted response, not a complete 200', async () => {
  // With Content-Length: 1000 of 100000 bytes, then a reset.
  origin.on('/midbody-cl', (req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '100000' })
    res.write(Buffer.alloc(1000, 'a'), () => setTimeout(() => req.socket.destroy(), 20))
  })
  // Chunked: two chunks, then a reset before the last chunk.
  origin.on('/midbody-chunked', (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('first chunk ')
    res.write('second chunk', () => setTimeout(() => req.socket.destroy(), 20))
  })
  for (const path of ['/midbody-cl', '/midbody-chunked']) {
    const r = await request(g.url + path)
    assert.equal(r.statusCode, 200, 'the status was already sent')
    let received = 0
    const outcome = await (async () => {
      try {
        for await (const c of r.body) received += (c as Buffer).length
        return 'complete'
      } catch (err) {
        return 'aborted: ' + (err as Error).message
      }
    })()
    assert.match(outcome, /^aborted/, `${path}: the client must not see a complete body (got ${received} bytes, ${outcome})`)
    assert.equal(origin.count(path), 1, `${path}: a response already sent is never retried`)
  }
  // The gateway goes on serving.
  const ok = await request(g.url + '/after-midbody')
  assert.equal(ok.statusCode, 200)
  await ok.body.dump()
})

test('a slow-headers origin gets 504 within the route timeout, while the origin still holds its answer', async () => {
  let release!: () => void
  const held = new Promise<void>((resolve) => { release = resolve })
  let answered = false
  origin.on('/slow/headers', async (_req, res) => {
    await held
    answered = true
    if (!res.destroyed) res.end('too late')
  })
  const r = await request(g.url + '/slow/headers')
  const body = await r.body.json() as { error: string }
  assert.equal(r.statusCode, 504)
  assert.equal(body.error, 'SLUICE_ERR_UPSTREAM_TIMEOUT')
  assert.equal(answered, false, 'the 504 came before the origin answered (the deadline, not the origin, ended it)')
  assert.equal(origin.count('/slow/headers'), 1, 'a headers timeout is not retried (the deadline covers retries too)')
  release()
})

test('a 5xx storm crashes nothing and retries stay within the retry budget', async () => {
  origin.on('/storm/x', (_req, res) => { res.writeHead(503, { 'content-type': 'text/plain' }); res.end('down') })
  origin.on('/storm/reset', (req) => { req.socket.destroy() })
  const before = await metric(g.adminUrl, 'sluice_upstream_retries_total', { upstream: 'storm' })
  const N = 60
  const statuses: number[] = []
  // 6 concurrent clients, N requests in all, half answered 503 and half reset by the origin.
  let next = 0
  await Promise.all(Array.from({ length: 6 }, async () => {
    while (next < N) {
      const i = next++
      const r = await request(g.url + (i % 2 === 0 ? '/storm/x' : '/storm/reset'))
      statuses.push(r.statusCode)
      await r.body.dump()
    }
  }))
  assert.equal(statuses.length, N)
  assert.ok(statuses.every((s) => s === 503 || s === 502), `only 503 (relayed) and 502 (reset): ${[...new Set(statuses)]}`)
  const sent = origin.count('/storm/x') + origin.count('/storm/reset')
  const retries = await metric(g.adminUrl, 'sluice_upstream_retries_total', { upstream: 'storm' }) - before
  assert.equal(sent, N + retries, 'every request the origin saw beyond the first attempts is a counted retry')
  // Budget: 20% of the first attempts in the window, or budgetMinRetries (3), whichever is more.
  assert.ok(retries <= Math.max(3, Math.floor(N * 0.2)), `${retries} retries for ${N} requests stays within the 20% budget`)
  assert.ok(retries >= 1, 'some retries were made (the budget allows at least 3)')
  // Still serving, and healthy.
  const ok = await request(g.url + '/after-storm')
  assert.equal(ok.statusCode, 200)
  await ok.body.dump()
  const health = await request(g.adminUrl + '/healthz')
  assert.equal(health.statusCode, 200)
  await health.body.dump()
})

test('a client that leaves while queued for the upstream budget is not an internal error', async () => {
  // The budget (1/s, burst 1) lets the first request through; the second waits in the queue.
  const first = await request(g.url + '/queued/a')
  assert.equal(first.statusCode, 200)
  await first.body.dump()
  const ac = new AbortController()
  const pending = request(g.url + '/queued/b', { signal: ac.signal }).then(() => 'answered', () => 'aborted')
  await new Promise((resolve) => setTimeout(resolve, 100)) // let it reach the queue
  ac.abort()
  assert.equal(await pending, 'aborted')
  await new Promise((resolve) => setTimeout(resolve, 100))
  assert.equal(origin.count('/queued/b'), 0, 'the abandoned request never went upstream')
  const internal = g.logs.filter((l) => l.msg === 'internal error')
  assert.deepEqual(internal.map((l) => (l.err as { message?: string })?.message), [], 'no internal error logged')
  assert.equal(await metric(g.adminUrl, 'sluice_http_requests_total', { route: 'queued', status_class: '5xx' }), 0, 'not counted as a 5xx')
})

test('adaptive budget: an upstream 429 with Retry-After pauses the budget, so the next requests never reach it', async () => {
  let n = 0
  origin.on('/polite/x', (_req, res) => {
    if (n++ === 0) { res.writeHead(429, { 'retry-after': '30', 'content-type': 'text/plain' }); res.end('slow down'); return }
    res.end('ok')
  })
  const r1 = await request(g.url + '/polite/x')
  assert.equal(r1.statusCode, 429, 'the upstream 429 is relayed')
  await r1.body.dump()
  for (let i = 0; i < 3; i++) {
    const r = await request(g.url + '/polite/x')
    const body = await r.body.json() as { error: string }
    assert.equal(r.statusCode, 429)
    assert.equal(body.error, 'SLUICE_ERR_UPSTREAM_BUDGET')
    const ra = Number(r.headers['retry-after'])
    assert.ok(ra >= 1 && ra <= 30, `Retry-After ${ra} follows the upstream's pause`)
  }
  assert.equal(origin.count('/polite/x'), 1, 'paused: the origin saw only the first request')
  const up = await (await request(g.adminUrl + '/admin/upstreams')).body.json() as { polite: { limiter: { pausedForMs: number } } }
  assert.ok(up.polite.limiter.pausedForMs > 0, 'the pause shows in /admin/upstreams')
})
