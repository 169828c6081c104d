// End to end: the circuit breaker of an upstream, driven through a real gateway by a real
// origin that fails (5xx, then resets) and recovers: closed → open → half-open → open (a failed
// probe) → half-open → closed. While open, requests get a fast 503 SLUICE_ERR_CIRCUIT_OPEN with
// Retry-After and the origin sees none of them; sluice_circuit_state,
// sluice_circuit_transitions_total and /admin/upstreams show every state. A request admitted
// before the breaker opened that finishes while it is half-open decides nothing; the probe does.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startOrigin } from '../helpers/origin.js'
import { startTestGateway } from '../helpers/gateway.js'
import { startRedis } from '../helpers/redis.js'
import { guardProcessHealth } from './helpers.js'
import { until } from '../helpers/wait.js'
import { metric } from '../helpers/metrics.js'

guardProcessHealth()

const origin = await startOrigin()
const redis = await startRedis()
const VOLUME = 5
const RESET_MS = 1000
const g = await startTestGateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: false }
redis: { url: "${redis.url}", keyPrefix: "${redis.prefix}" }
upstreams:
  flaky:
    url: ${origin.url}
    timeoutMs: 3000
    rateLimit: { requestsPerSecond: 1000, burst: 1000 }
    circuitBreaker: { errorThresholdPercent: 50, volumeThreshold: ${VOLUME}, windowMs: 10000, resetTimeoutMs: ${RESET_MS} }
    retry: { attempts: 0 }
  other:
    url: ${origin.url}
    timeoutMs: 3000
  straggle:
    url: ${origin.url}
    timeoutMs: 3000
    circuitBreaker: { errorThresholdPercent: 50, volumeThreshold: ${VOLUME}, windowMs: 10000, resetTimeoutMs: ${RESET_MS} }
    retry: { attempts: 0 }
  budgeted:
    url: ${origin.url}
    timeoutMs: 3000
    rateLimit: { requestsPerSecond: 2, burst: ${VOLUME + 1}, maxQueueMs: 0, adaptive: false }
    circuitBreaker: { errorThresholdPercent: 50, volumeThreshold: ${VOLUME}, windowMs: 10000, resetTimeoutMs: ${RESET_MS} }
    retry: { attempts: 0 }
routes:
  - name: budgeted
    match: { pathPrefix: /budgeted/ }
    upstream: budgeted
  - name: straggle
    match: { pathPrefix: /straggle/ }
    upstream: straggle
  - name: other
    match: { pathPrefix: /other/ }
    upstream: other
  - name: all
    match: { pathPrefix: / }
    upstream: flaky
`)

after(async () => {
  await g.close()
  await origin.close()
  await redis.stop()
})

let mode: 'ok' | '500' | 'reset' | 'hold' = '500'
let release: () => void = () => {}
origin.on('/item', async (req, res) => {
  if (mode === 'reset') { req.socket.destroy(); return }
  if (mode === 'hold') await new Promise<void>((resolve) => { release = resolve })
  res.writeHead(mode === 'ok' ? 200 : 500, { 'content-type': 'text/plain' })
  res.end(mode)
})

interface BreakerView { state: string; retryAfterSeconds: number; window: { requests: number; failures: number } }
async function breaker (): Promise<BreakerView> {
  const body = await (await request(g.adminUrl + '/admin/upstreams')).body.json() as Record<string, { breaker: BreakerView }>
  return body.flaky.breaker
}

/** Polls /admin/upstreams (bounded) until the breaker reaches a state. */
async function untilState (state: string): Promise<void> {
  await until(`the breaker to reach ${state}`, async () => (await breaker()).state === state, { tries: 200, intervalMs: 25, detail: breaker })
}

async function get (path = '/item') {
  const r = await request(g.url + path)
  const text = await r.body.text()
  return { status: r.statusCode, headers: r.headers, text }
}

const transitions = async (to: string) => metric(g.adminUrl, 'sluice_circuit_transitions_total', { upstream: 'flaky', to })

async function expectOpen (): Promise<void> {
  await untilState('open')
  assert.equal(await metric(g.adminUrl, 'sluice_circuit_state', { upstream: 'flaky' }), 2, 'gauge: 2 open')
  const seenBefore = origin.count('/item')
  for (let i = 0; i < 10; i++) {
    const r = await get()
    assert.equal(r.status, 503)
    assert.equal(JSON.parse(r.text).error, 'SLUICE_ERR_CIRCUIT_OPEN')
    const ra = r.headers['retry-after'] as string
    assert.match(ra, /^\d+$/)
    assert.ok(Number(ra) >= 1 && Number(ra) <= Math.ceil(RESET_MS / 1000), `Retry-After ${ra} is the time to half-open, rounded up`)
  }
  assert.equal(origin.count('/item'), seenBefore, 'while open, the origin sees nothing')
  const b = await breaker()
  assert.equal(b.state, 'open')
  assert.ok(b.retryAfterSeconds >= 1)
}

test('closed → open → half-open → open → half-open → closed, visible in /metrics, /admin/upstreams and logs', async () => {
  // Closed, and healthy.
  mode = 'ok'
  assert.equal((await get()).status, 200)
  assert.equal((await breaker()).state, 'closed')
  assert.equal(await metric(g.adminUrl, 'sluice_circuit_state', { upstream: 'flaky' }), 0, 'gauge: 0 closed')

  // The origin fails: 500s pass through as they are, until the window has VOLUME requests at ≥ 50% errors.
  mode = '500'
  const statuses: number[] = []
  for (let i = 0; i < VOLUME; i++) statuses.push((await get()).status)
  // 1 success + VOLUME failures: the breaker needs VOLUME requests in the window, so it
  // opened at request VOLUME - 1 at the latest; later ones may already be refused.
  assert.ok(statuses.slice(0, VOLUME - 2).every((s) => s === 500), `the 500s are relayed: ${statuses}`)
  assert.ok(statuses.every((s) => s === 500 || s === 503), `${statuses}`)
  await expectOpen()
  assert.equal(await transitions('open'), 1)

  // The origin now resets connections. After resetTimeoutMs, half-open admits one probe; it fails: open again.
  mode = 'reset'
  await untilState('half-open')
  assert.equal(await metric(g.adminUrl, 'sluice_circuit_state', { upstream: 'flaky' }), 1, 'gauge: 1 half-open')
  assert.equal(await transitions('half-open'), 1)
  const before = origin.count('/item')
  const probe = await get()
  assert.equal(probe.status, 502, 'the probe met a reset')
  assert.equal(JSON.parse(probe.text).error, 'SLUICE_ERR_UPSTREAM_RESET')
  assert.equal(origin.count('/item'), before + 1, 'one probe reached the origin')
  await expectOpen()
  assert.equal(await transitions('open'), 2)

  // The origin recovers (slowly): half-open admits one probe (halfOpenMaxRequests 1); while it
  // is in flight, other requests are refused at once and never reach the origin.
  mode = 'hold'
  await untilState('half-open')
  assert.equal(await transitions('half-open'), 2)
  const beforeProbe = origin.count('/item')
  const slowProbe = get()
  while (origin.count('/item') === beforeProbe) await new Promise((resolve) => setTimeout(resolve, 5))
  const beside = await Promise.all([get(), get(), get()])
  assert.deepEqual(beside.map((r) => r.status), [503, 503, 503], 'one probe at a time')
  assert.ok(beside.every((r) => JSON.parse(r.text).error === 'SLUICE_ERR_CIRCUIT_OPEN' && /^\d+$/.test(String(r.headers['retry-after']))))
  assert.equal(origin.count('/item'), beforeProbe + 1)
  mode = 'ok'
  release()
  const ok = await slowProbe
  assert.equal(ok.status, 200)
  assert.equal(ok.text, 'ok')
  await untilState('closed')
  assert.equal(await metric(g.adminUrl, 'sluice_circuit_state', { upstream: 'flaky' }), 0)
  assert.equal(await transitions('closed'), 1)
  for (let i = 0; i < 5; i++) assert.equal((await get()).status, 200, 'closed: traffic flows again')

  // Another upstream on the same origin was never affected.
  assert.equal((await get('/other/x')).status, 200)
  assert.equal(await metric(g.adminUrl, 'sluice_circuit_transitions_total', { upstream: 'other' }), 0)

  // One log line per transition: open, half-open, open, half-open, closed.
  const lines = g.logs.filter((l) => /^circuit of upstream flaky/.test(String(l.msg))).map((l) => l.to)
  assert.deepEqual(lines, ['open', 'half-open', 'open', 'half-open', 'closed'])
})

test('a 4xx storm never opens the breaker', async () => {
  origin.on('/missing', (_req, res) => { res.writeHead(404); res.end('nope') })
  for (let i = 0; i < VOLUME * 2; i++) assert.equal((await get('/missing')).status, 404)
  assert.equal((await breaker()).state, 'closed')
  assert.equal(await transitions('open'), 2, 'no new opening')
})

test('an open breaker stays open across a reload that changes its settings, then still half-opens and closes', async () => {
  const { readFileSync, writeFileSync } = await import('node:fs')
  mode = '500'
  // The window still holds the earlier successes (and 404s): fail until the error rate passes 50%.
  for (let i = 0; i < 60 && (await breaker()).state !== 'open'; i++) await get()
  await untilState('open')
  const opens = await transitions('open')
  // Change the breaker's own settings and the upstream's timeout, then reload.
  writeFileSync(g.file, readFileSync(g.file, 'utf8').replace('windowMs: 10000', 'windowMs: 12000').replace('timeoutMs: 3000\n    rateLimit', 'timeoutMs: 3500\n    rateLimit'))
  const r = await request(g.adminUrl + '/admin/reload', { method: 'POST' })
  const body = await r.body.json() as { ok: boolean; diff: unknown }
  assert.equal(r.statusCode, 200, JSON.stringify(body))
  const seen = origin.count('/item')
  const after = await get()
  assert.equal(after.status, 503, 'still open after the reload')
  assert.equal(JSON.parse(after.text).error, 'SLUICE_ERR_CIRCUIT_OPEN')
  assert.equal(origin.count('/item'), seen)
  assert.equal(await transitions('open'), opens, 'restoring the state is not a transition')
  mode = 'ok'
  await untilState('half-open')
  assert.equal((await get()).status, 200)
  await untilState('closed')
  assert.equal(await metric(g.adminUrl, 'sluice_circuit_state', { upstream: 'flaky' }), 0)
})

test('a request sent before the breaker opened does not decide the half-open state when it finishes late; the probe does', async () => {
  const view = async () => ((await (await request(g.adminUrl + '/admin/upstreams')).body.json()) as Record<string, { breaker: BreakerView }>).straggle.breaker
  const untilS = (state: string) => until(`the straggle breaker to reach ${state}`, async () => (await view()).state === state, { tries: 200, intervalMs: 25, detail: view })
  const held = new Map<string, (status: number) => void>()
  origin.on('/straggle/held', async (req, res) => {
    const status = await new Promise<number>((resolve) => held.set(String(req.headers['x-id']), resolve))
    res.writeHead(status, { 'content-type': 'text/plain' })
    res.end(String(status))
  })
  origin.on('/straggle/fail', (_req, res) => { res.writeHead(500); res.end('fail') })
  const sendHeld = async (id: string) => {
    const p = request(g.url + '/straggle/held', { headers: { 'x-id': id } }).then(async (r) => { await r.body.dump(); return r.statusCode })
    for (let i = 0; i < 200 && !held.has(id); i++) await new Promise((resolve) => setTimeout(resolve, 5))
    assert.ok(held.has(id), `${id} reached the origin`)
    return { done: p } // wrapped: an async function returning a promise would wait for it
  }
  const sTransitions = async (to: string) => metric(g.adminUrl, 'sluice_circuit_transitions_total', { upstream: 'straggle', to })

  // 1. A straggler that succeeds while half-open, before any probe, does not close the breaker.
  const early = await sendHeld('early-ok')
  for (let i = 0; i < VOLUME; i++) { const r = await request(g.url + '/straggle/fail'); await r.body.dump() }
  await untilS('open')
  await untilS('half-open')
  held.get('early-ok')!(200)
  assert.equal(await early.done, 200, 'the straggler itself is answered')
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.equal((await view()).state, 'half-open', 'a success sent before the breaker opened is no probe')
  assert.equal(await sTransitions('closed'), 0)

  // The probe closes it.
  const probe = await request(g.url + '/straggle/ok')
  assert.equal(probe.statusCode, 200)
  await probe.body.dump()
  await untilS('closed')

  // 2. A straggler that fails while a probe is in flight does not reopen the breaker: the probe decides.
  const straggler = await sendHeld('late-fail')
  for (let i = 0; i < 2 * VOLUME && (await view()).state !== 'open'; i++) { const r = await request(g.url + '/straggle/fail'); await r.body.dump() }
  await untilS('open')
  await untilS('half-open')
  const opensBefore = await sTransitions('open')
  const slowProbe = await sendHeld('probe')
  held.get('late-fail')!(500)
  assert.equal(await straggler.done, 500)
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.equal((await view()).state, 'half-open', 'a failure sent before the breaker opened does not reopen it while the probe runs')
  held.get('probe')!(200)
  assert.equal(await slowProbe.done, 200)
  await untilS('closed')
  assert.equal(await sTransitions('open'), opensBefore, 'no reopening')
})

test('an open breaker refuses before the upstream budget: refused requests take no token and are 503, never 429', async () => {
  const bView = async () => ((await (await request(g.adminUrl + '/admin/upstreams')).body.json()) as Record<string, { breaker: BreakerView }>).budgeted.breaker
  let failing = true
  origin.on('/budgeted/x', (_req, res) => { res.writeHead(failing ? 500 : 200); res.end(failing ? 'fail' : 'ok') })
  // VOLUME failures open it; the budget (burst VOLUME + 1, 2/s) had room for all of them.
  for (let i = 0; i < VOLUME; i++) {
    const r = await request(g.url + '/budgeted/x')
    await r.body.dump()
    assert.equal(r.statusCode, 500)
  }
  for (let i = 0; i < 100 && (await bView()).state !== 'open'; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  assert.equal((await bView()).state, 'open')
  const limitedBefore = await metric(g.adminUrl, 'sluice_rate_limited_total', { scope: 'upstream', name: 'budgeted' })
  const seen = origin.count('/budgeted/x')
  // Far more requests than the budget holds: every one is refused by the breaker.
  const codes: string[] = []
  for (let i = 0; i < 4 * (VOLUME + 1); i++) {
    const r = await request(g.url + '/budgeted/x')
    codes.push(`${r.statusCode} ${(await r.body.json() as { error: string }).error}`)
  }
  assert.deepEqual([...new Set(codes)], ['503 SLUICE_ERR_CIRCUIT_OPEN'])
  assert.equal(origin.count('/budgeted/x'), seen)
  assert.equal(await metric(g.adminUrl, 'sluice_rate_limited_total', { scope: 'upstream', name: 'budgeted' }), limitedBefore, 'no budget rejection')
  // The budget was left for the recovery.
  failing = false
  for (let i = 0; i < 200 && (await bView()).state !== 'half-open'; i++) await new Promise((resolve) => setTimeout(resolve, 25))
  const probe = await request(g.url + '/budgeted/x')
  await probe.body.dump()
  assert.equal(probe.statusCode, 200, 'the probe had a token')
  assert.equal((await bView()).state, 'closed')
})
