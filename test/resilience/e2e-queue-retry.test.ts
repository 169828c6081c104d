// The budget queue, retries and the half-open breaker together (found by a review): a queue
// wait does not eat the upstream's timeoutMs, nor count against the breaker; a client that
// leaves while queued gives its reserved token back; a retry that
// cannot be sent answers with the upstream's own answer; a request queued before an upstream
// 429 waits out its pause; half-open runs no more probes than halfOpenMaxRequests while one
// hangs.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startOrigin } from '../helpers/origin.js'
import { startTestGateway } from '../helpers/gateway.js'
import { guardProcessHealth, sleep } from './helpers.js'

guardProcessHealth()

const origin = await startOrigin()
const g = await startTestGateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: warn, accessLog: false }
upstreams:
  queued:
    url: ${origin.url}
    timeoutMs: 300
    rateLimit: { requestsPerSecond: 1, burst: 1, maxQueueMs: 3000, adaptive: false }
    circuitBreaker: { enabled: false }
    retry: { attempts: 0 }
  queuedcb:
    url: ${origin.url}
    timeoutMs: 300
    rateLimit: { requestsPerSecond: 1, burst: 1, maxQueueMs: 3000, adaptive: false }
    circuitBreaker: { errorThresholdPercent: 40, volumeThreshold: 2, windowMs: 10000, resetTimeoutMs: 60000 }
    retry: { attempts: 0 }
  leak:
    url: ${origin.url}
    timeoutMs: 5000
    rateLimit: { requestsPerSecond: 1, burst: 1, maxQueueMs: 1500, adaptive: false }
    circuitBreaker: { enabled: false }
    retry: { attempts: 0 }
  paused:
    url: ${origin.url}
    timeoutMs: 5000
    rateLimit: { requestsPerSecond: 100, burst: 100, maxQueueMs: 1000, adaptive: true }
    circuitBreaker: { enabled: false }
    retry: { attempts: 1, backoffMs: 10, maxBackoffMs: 50, budgetMinRetries: 100 }
  tripping:
    url: ${origin.url}
    timeoutMs: 5000
    circuitBreaker: { errorThresholdPercent: 1, volumeThreshold: 1, windowMs: 10000, resetTimeoutMs: 60000 }
    retry: { attempts: 1, backoffMs: 10, maxBackoffMs: 50, budgetMinRetries: 100 }
  pauseq:
    url: ${origin.url}
    timeoutMs: 5000
    rateLimit: { requestsPerSecond: 1, burst: 2, maxQueueMs: 3000, adaptive: true }
    circuitBreaker: { enabled: false }
    retry: { attempts: 0 }
  tripc:
    url: ${origin.url}
    timeoutMs: 5000
    circuitBreaker: { errorThresholdPercent: 1, volumeThreshold: 1, windowMs: 10000, resetTimeoutMs: 60000 }
    retry: { attempts: 1, backoffMs: 10, maxBackoffMs: 50, budgetMinRetries: 100 }
  slowbody:
    url: ${origin.url}
    timeoutMs: 1500
    bodyTimeoutMs: 6000
    circuitBreaker: { enabled: false }
    retry: { attempts: 1, backoffMs: 10, maxBackoffMs: 50, budgetMinRetries: 100 }
  onepool:
    url: ${origin.url}
    timeoutMs: 300
    connections: 1
    circuitBreaker: { errorThresholdPercent: 1, volumeThreshold: 1, windowMs: 10000, resetTimeoutMs: 60000 }
    retry: { attempts: 0 }
  hang:
    url: ${origin.url}
    timeoutMs: 6000
    circuitBreaker: { errorThresholdPercent: 1, volumeThreshold: 1, windowMs: 10000, resetTimeoutMs: 300, halfOpenMaxRequests: 1 }
    retry: { attempts: 0 }
routes:
  - { name: pauseq, match: { pathPrefix: /pauseq/ }, upstream: pauseq }
  - { name: hang, match: { pathPrefix: /hang/ }, upstream: hang }
  - { name: onepool, match: { pathPrefix: /onepool/ }, upstream: onepool, timeoutMs: 60000 }
  - { name: onepool-short, match: { pathPrefix: /onepool-short/ }, upstream: onepool }
  - { name: tripc, match: { pathPrefix: /tripc/ }, upstream: tripc, cache: { enabled: true } }
  - { name: slowbody, match: { pathPrefix: /slowbody/ }, upstream: slowbody }
  - { name: queued, match: { pathPrefix: /queued/ }, upstream: queued }
  - { name: queuedcb, match: { pathPrefix: /queuedcb/ }, upstream: queuedcb }
  - { name: leak, match: { pathPrefix: /leak/ }, upstream: leak }
  - { name: paused, match: { pathPrefix: /paused/ }, upstream: paused }
  - { name: tripping, match: { pathPrefix: /tripping/ }, upstream: tripping }
`, { level: 'warn' })

after(async () => {
  await g.close()
  await origin.close()
})

async function get (path: string, signal?: AbortSignal) {
  const r = await request(g.url + path, { signal })
  const text = await r.body.text()
  const json = String(r.headers['content-type'] ?? '').includes('json')
  return { status: r.statusCode, headers: r.headers, text, code: json ? (JSON.parse(text) as { error: string }).error : undefined }
}

async function breakerState (name: string): Promise<string> {
  const body = await (await request(g.adminUrl + '/admin/upstreams')).body.json() as Record<string, { breaker: { state: string } }>
  return body[name].breaker.state
}

test('a request that waited in the budget queue longer than timeoutMs is sent, not answered 504 unsent', async () => {
  const a = get('/queued/x')
  await sleep(20)
  const b = get('/queued/x') // queued about 1 s for a token (maxQueueMs 3000)
  const [ra, rb] = await Promise.all([a, b])
  assert.equal(ra.status, 200)
  assert.equal(origin.count('/queued/x'), 2, `the queued request never reached the origin; it got ${rb.status} ${rb.code}`)
  assert.notEqual(rb.status, 504)
})

test('a budget queue wait past timeoutMs is not counted as an upstream failure by the breaker', async () => {
  const a = get('/queuedcb/x')
  await sleep(20)
  const b = get('/queuedcb/x')
  const [ra, rb] = await Promise.all([a, b])
  assert.equal(ra.status, 200)
  // The origin answered everything it saw; the breaker must stay closed.
  assert.equal(await breakerState('queuedcb'), 'closed', `breaker opened though the origin answered 200 to all it saw (2nd: ${rb.status} ${rb.code})`)
  const c = await get('/queuedcb/y')
  assert.notEqual(c.code, 'SLUICE_ERR_CIRCUIT_OPEN')
})

test('a client that leaves while queued for the budget gives its token back', async () => {
  const a = await get('/leak/x') // takes the only token
  assert.equal(a.status, 200)
  const ac = new AbortController()
  const b = get('/leak/x', ac.signal).catch(() => null) // queued about 1 s
  await sleep(50)
  ac.abort()
  await b
  await sleep(50)
  // Without B's reservation, C waits under 1 s (within maxQueueMs 1500); with it, about 1.9 s: 429.
  const c = await get('/leak/y')
  assert.equal(c.status, 200, `got ${c.status} ${c.code}: the abandoned request kept its token`)
  assert.equal(origin.count('/leak/x'), 1, 'the abandoned request never reached the origin')
})

test('a retry the budget refuses does not replace the upstream answer with 429', async () => {
  origin.on('/paused/x', (_req, res) => {
    res.writeHead(503, { 'content-type': 'text/plain', 'ratelimit-remaining': '0', 'ratelimit-reset': '5' })
    res.end('origin busy')
  })
  const r = await get('/paused/x')
  assert.equal(origin.count('/paused/x'), 1)
  assert.equal(r.status, 503, `client got ${r.status} ${r.code} instead of the origin's 503`)
  assert.equal(r.text, 'origin busy')
})

test('a retry the breaker refuses does not replace the upstream answer with CIRCUIT_OPEN', async () => {
  origin.on('/tripping/x', (_req, res) => {
    res.writeHead(503, { 'content-type': 'text/plain' })
    res.end('origin down')
  })
  const r = await get('/tripping/x')
  assert.equal(origin.count('/tripping/x'), 1)
  assert.equal(r.code, undefined, `client got ${r.status} ${r.code} instead of the origin's own 503`)
  assert.equal(r.text, 'origin down')
})

async function budgetPausedMs (name: string): Promise<number> {
  const body = await (await request(g.adminUrl + '/admin/upstreams')).body.json() as Record<string, { limiter?: { pausedForMs: number } }>
  return body[name].limiter?.pausedForMs ?? -1
}

test('a request queued for the budget is not sent while the budget is paused by an upstream 429', async () => {
  let releaseC: () => void = () => {}
  origin.on('/pauseq/c', async (_req, res) => {
    await new Promise<void>((resolve) => { releaseC = resolve })
    res.writeHead(429, { 'retry-after': '5', 'content-type': 'text/plain' })
    res.end('slow down')
  })
  let pausedWhenBArrived = -1
  origin.on('/pauseq/b', async (_req, res) => {
    pausedWhenBArrived = await budgetPausedMs('pauseq')
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end('b')
  })
  assert.equal((await get('/pauseq/a')).status, 200) // token 1
  const c = get('/pauseq/c') // token 2; the origin holds its answer
  await sleep(50)
  const b = get('/pauseq/b') // bucket empty: queued ~1 s
  await sleep(100)
  releaseC() // 429 Retry-After: 5 -> the budget pauses for 5 s
  assert.equal((await c).status, 429)
  assert.ok(await budgetPausedMs('pauseq') > 0, 'paused')
  const rb = await b
  assert.ok(!(origin.count('/pauseq/b') === 1 && pausedWhenBArrived > 0), `B (queued before the pause) reached the origin while the budget was paused (${pausedWhenBArrived} ms left), status ${rb.status}`)
})

test('half-open admits only halfOpenMaxRequests probes while a probe is still running', async () => {
  let mode: 'fail' | 'hang' = 'fail'
  let inFlight = 0
  let maxInFlight = 0
  const releases: Array<() => void> = []
  origin.on('/hang/x', async (_req, res) => {
    if (mode === 'fail') { res.writeHead(500); res.end('fail'); return }
    inFlight++
    maxInFlight = Math.max(maxInFlight, inFlight)
    await new Promise<void>((resolve) => releases.push(resolve))
    inFlight--
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end('ok')
  })
  assert.equal((await get('/hang/x')).status, 500) // opens (volume 1, 1 %)
  assert.equal(await breakerState('hang'), 'open')
  mode = 'hang'
  for (let i = 0; i < 100 && await breakerState('hang') !== 'half-open'; i++) await sleep(25)
  assert.equal(await breakerState('hang'), 'half-open')
  const probes: Array<Promise<unknown>> = []
  // One request every 300 ms for ~2.4 s while the first probe is still waiting on the origin.
  for (let i = 0; i < 8; i++) { probes.push(get('/hang/x').catch(() => null)); await sleep(300) }
  const seen = inFlight
  for (const r of releases) r()
  await Promise.all(probes)
  assert.equal(maxInFlight, 1, `${seen} probes were in flight at once with halfOpenMaxRequests: 1`)
})

test('on a cached route too, a retry the breaker refuses answers with the upstream\'s 503 (the cache fill streams the kept answer)', async () => {
  origin.on('/tripc/x', (_req, res) => {
    res.writeHead(503, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' })
    res.end('origin down')
  })
  const r = await get('/tripc/x')
  assert.equal(origin.count('/tripc/x'), 1)
  assert.equal(r.status, 503, `got ${r.status} ${r.text}`)
  assert.equal(r.text, 'origin down')
})

test('a retry is not held back by the previous 503\'s body: one not whole when the backoff ends is let go', async () => {
  let n = 0
  const held: Array<() => void> = []
  origin.on('/slowbody/x', async (_req, res) => {
    n++
    if (n === 1) {
      res.writeHead(503, { 'content-type': 'text/plain' })
      res.write('partial ')
      await new Promise<void>((resolve) => held.push(resolve))
      res.end('done')
      return
    }
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end('ok')
  })
  try {
    const r = await get('/slowbody/x')
    assert.equal(r.status, 200, `got ${r.status} ${r.text}: the retry waited for the 503's body (bodyTimeoutMs), past timeoutMs`)
  } finally {
    for (const h of held) h()
  }
})

test('an attempt waiting for a pooled connection keeps its deadline: 504, and it never reaches the upstream', async () => {
  let release: () => void = () => {}
  origin.on('/onepool/held', async (_req, res) => {
    await new Promise<void>((resolve) => { release = resolve })
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end('held')
  })
  // The route's own timeoutMs (60 s) lets the first request hold the only connection.
  const first = get('/onepool/held')
  for (let i = 0; i < 100 && origin.count('/onepool/held') === 0; i++) await sleep(10)
  assert.equal(origin.count('/onepool/held'), 1)
  try {
    // The upstream's timeoutMs (300 ms) applies to this one, queued behind the first.
    const queued = await get('/onepool-short/x')
    assert.equal(queued.status, 504, `got ${queued.status} ${queued.code}`)
    assert.equal(queued.code, 'SLUICE_ERR_UPSTREAM_TIMEOUT')
    assert.equal(origin.count('/onepool-short/x'), 0, 'the queued attempt was withdrawn, never sent')
  } finally {
    release()
  }
  assert.equal((await first).status, 200)
  // Withdrawn before it was sent, it was no failure of the upstream's: the breaker (1 % of 1
  // request opens it) stays closed.
  origin.on('/onepool-short/after', (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('ok') })
  const later = await get('/onepool-short/after')
  assert.equal(later.status, 200, `got ${later.status} ${later.code}`)
})
