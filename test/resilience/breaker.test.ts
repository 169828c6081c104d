// The breaker driven by real outcomes of real loopback HTTP exchanges: closed → open →
// half-open → closed, fast rejections while open, probes, 4xx never counting, connect errors
// counting, and state kept across a reload. Waits poll the state; nothing asserts durations.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { startOrigin } from '../helpers/origin.js'
import { createResilienceRegistry } from '../../src/resilience/registry.js'
import { loadedUpstreams, loadedRoutes } from './loaded-input.js'
import type { UpstreamGuard } from '../../src/resilience/guard.js'
import type { CircuitBreakerConfig } from '../../src/resilience/config.js'
import { isSluiceError, SluiceError } from '../../src/errors.js'
import { captureLog, freshMetrics, guardProcessHealth, sleep, valueOf } from './helpers.js'
import { until } from '../helpers/wait.js'

const origin = await startOrigin()
let failing = true
origin.on('/x', (_req, res) => { res.writeHead(failing ? 500 : 200); res.end('x') })
origin.on('/missing', (_req, res) => { res.writeHead(404); res.end() })
const metrics = freshMetrics()
const { log, lines } = captureLog()
const reg = createResilienceRegistry({ metrics, log, redis: null, redisPrefix: 'test:' })
after(async () => { reg.close(); await origin.close() })
guardProcessHealth()

const FAST: Partial<CircuitBreakerConfig> = { volumeThreshold: 5, errorThresholdPercent: 50, windowMs: 10000, resetTimeoutMs: 300 }

function guardOf (name: string, circuitBreaker: Partial<CircuitBreakerConfig>): UpstreamGuard {
  reg.reconcile(loadedUpstreams({ ...Object.fromEntries([...Object.keys(reg.status().upstreams)].map((n) => [n, {}])), [name]: { circuitBreaker } }), loadedRoutes([]))
  const g = reg.upstream(name)
  assert.ok(g)
  return g
}

/** One attempt as the upstream stage makes it: allow → send → record. */
async function attempt (g: UpstreamGuard, url = `${origin.url}/x`): Promise<number | 'rejected' | 'error'> {
  let ticket
  try { ticket = g.allow() } catch (err) {
    assert.ok(isSluiceError(err) && err.code === 'SLUICE_ERR_CIRCUIT_OPEN' && err.status === 503)
    assert.ok(Number(err.headers?.['retry-after']) >= 1)
    return 'rejected'
  }
  try {
    const res = await fetch(url)
    await res.arrayBuffer()
    g.record(ticket, { status: res.status })
    return res.status
  } catch (err) {
    g.record(ticket, { error: err })
    return 'error'
  }
}


/** Poll every 25 ms, 200 times (5 s). */
const POLL = { tries: 200, intervalMs: 25 }

const tick = () => new Promise((resolve) => setImmediate(resolve))

test('closed → open → half-open → closed, with fast rejections while open', async () => {
  const g = guardOf('cycle', FAST)
  failing = true
  const before = origin.count('/x')
  const results = []
  for (let i = 0; i < 12; i++) { results.push(await attempt(g)); await tick() }
  assert.deepEqual(results.slice(0, 5), [500, 500, 500, 500, 500], 'volumeThreshold failures reach the upstream')
  assert.deepEqual(results.slice(5), Array(7).fill('rejected'), 'then the open breaker answers at once')
  assert.equal(origin.count('/x') - before, 5)
  assert.equal(g.status().breaker.state, 'open')
  assert.equal(await valueOf(metrics.circuitState, { upstream: 'cycle' }), 2)

  await until('half-open', () => g.status().breaker.state === 'half-open', POLL)
  assert.equal(await valueOf(metrics.circuitState, { upstream: 'cycle' }), 1)
  failing = false
  const probe = g.allow()
  assert.throws(() => g.allow(), { code: 'SLUICE_ERR_CIRCUIT_OPEN' }, 'one probe at a time by default')
  const res = await fetch(`${origin.url}/x`)
  await res.arrayBuffer()
  g.record(probe, { status: res.status })
  await tick()
  assert.equal(g.status().breaker.state, 'closed')
  assert.equal(await attempt(g), 200)
  assert.equal(await valueOf(metrics.circuitState, { upstream: 'cycle' }), 0)
  for (const to of ['open', 'half-open', 'closed']) {
    assert.equal(await valueOf(metrics.circuitTransitions, { upstream: 'cycle', to }), 1, `one transition to ${to}`)
  }
  const logged = lines.filter((l) => l.upstream === 'cycle').map((l) => l.to)
  assert.deepEqual(logged, ['open', 'half-open', 'closed'], 'one log line per transition')
})

test('a failed probe reopens the breaker', async () => {
  const g = guardOf('reopen', FAST)
  failing = true
  for (let i = 0; i < 5; i++) { await attempt(g); await tick() }
  assert.equal(g.status().breaker.state, 'open')
  await until('half-open', () => g.status().breaker.state === 'half-open', POLL)
  assert.equal(await attempt(g), 500)
  await tick()
  assert.equal(g.status().breaker.state, 'open')
  assert.equal(await valueOf(metrics.circuitTransitions, { upstream: 'reopen', to: 'open' }), 2)
})

test('half-open admits halfOpenMaxRequests probes at once', async () => {
  const g = guardOf('probes', { ...FAST, halfOpenMaxRequests: 3 })
  failing = true
  for (let i = 0; i < 5; i++) { await attempt(g); await tick() }
  await until('half-open', () => g.status().breaker.state === 'half-open', POLL)
  const tickets = [g.allow(), g.allow(), g.allow()]
  assert.throws(() => g.allow(), { code: 'SLUICE_ERR_CIRCUIT_OPEN' })
  assert.equal(g.status().breaker.probesInFlight, 3)
  g.record(tickets[2], { status: 200 }) // the first probe to finish decides, whichever it is
  await tick()
  assert.equal(g.status().breaker.state, 'closed')
  for (const t of tickets.slice(0, 2)) g.record(t, { status: 200 })
  await tick()
  assert.equal(g.status().breaker.state, 'closed')
})

test('a half-open probe that never reached the upstream (client gone, body too large, no target) decides nothing: the next probe does', async () => {
  const g = guardOf('neutral-probe', FAST)
  failing = true
  for (let i = 0; i < 5; i++) { await attempt(g); await tick() }
  await until('half-open', () => g.status().breaker.state === 'half-open', POLL)
  for (const code of ['SLUICE_ERR_CLIENT_CLOSED', 'SLUICE_ERR_BODY_TOO_LARGE', 'SLUICE_ERR_NO_HEALTHY_TARGET'] as const) {
    g.record(g.allow(), { error: new SluiceError(code) })
    await tick()
    assert.equal(g.status().breaker.state, 'half-open', `${code} closed the breaker although the upstream never answered`)
    assert.equal(g.status().breaker.probesInFlight, 0, 'its slot is free')
  }
  // A probe that reached the upstream decides.
  assert.equal(await attempt(g), 500)
  await tick()
  assert.equal(g.status().breaker.state, 'open')
  await until('half-open again', () => g.status().breaker.state === 'half-open', POLL)
  failing = false
  assert.equal(await attempt(g), 200)
  await tick()
  assert.equal(g.status().breaker.state, 'closed')
})

test('a probe never reported does not wedge the breaker half-open', async () => {
  const g = guardOf('lost-probe', FAST)
  // A probe is taken for lost once it has run longer than any attempt may (here 200 ms, the
  // upstream's timeoutMs as the registry passes it) plus a second.
  g.breaker.setLongestAttemptMs(200)
  failing = true
  for (let i = 0; i < 5; i++) { await attempt(g); await tick() }
  await until('half-open', () => g.status().breaker.state === 'half-open', POLL)
  g.allow() // a caller that forgets record()
  assert.throws(() => g.allow(), { code: 'SLUICE_ERR_CIRCUIT_OPEN' })
  let admitted = null
  await until('a new probe slot', () => { try { admitted = g.allow(); return true } catch { return false } }, POLL)
  assert.ok(admitted)
  failing = false
  g.record(admitted, { status: 200 })
  await tick()
  assert.equal(g.status().breaker.state, 'closed')
})

test('one failure never trips the breaker (default volumeThreshold), and a 4xx never counts', async () => {
  const g = guardOf('tolerant', {})
  failing = true
  assert.equal(await attempt(g), 500)
  await tick()
  assert.equal(g.status().breaker.state, 'closed')
  const h = guardOf('fourxx', FAST)
  for (let i = 0; i < 30; i++) assert.equal(await attempt(h, `${origin.url}/missing`), 404)
  await tick()
  assert.equal(h.status().breaker.state, 'closed')
  assert.equal(h.status().breaker.window.failures, 0)
})

test('connect errors count as failures; a client abort does not', async () => {
  const dead = await startOrigin()
  const url = `${dead.url}/x`
  await dead.close() // nothing listens on that port now
  const g = guardOf('refused', FAST)
  const results = []
  for (let i = 0; i < 7; i++) { results.push(await attempt(g, url)); await tick() }
  assert.deepEqual(results, ['error', 'error', 'error', 'error', 'error', 'rejected', 'rejected'])

  const h = guardOf('aborted', FAST)
  for (let i = 0; i < 10; i++) {
    const t = h.allow()
    h.record(t, { error: new DOMException('client went away', 'AbortError') })
  }
  await tick()
  assert.equal(h.status().breaker.state, 'closed')
})

test('an open breaker stays open across a reload that changes its settings, and the new settings apply', async () => {
  const g = guardOf('reload', { ...FAST, resetTimeoutMs: 60000 })
  failing = true
  for (let i = 0; i < 5; i++) { await attempt(g); await tick() }
  assert.equal(g.status().breaker.state, 'open')
  const g2 = guardOf('reload', { ...FAST, resetTimeoutMs: 200 })
  assert.equal(g2, g, 'same guard object')
  assert.equal(g2.status().breaker.state, 'open')
  await until('half-open under the new resetTimeoutMs', () => g2.status().breaker.state === 'half-open', POLL)
  failing = false
  assert.equal(await attempt(g2), 200)
  await tick()
  assert.equal(g2.status().breaker.state, 'closed')
})

test('a reload keeps an open breaker\'s schedule: it goes half-open resetTimeoutMs after it opened, not after the reload', async () => {
  const g = guardOf('schedule', { ...FAST, resetTimeoutMs: 60000 })
  failing = true
  for (let i = 0; i < 5; i++) { await attempt(g); await tick() }
  assert.equal(g.status().breaker.state, 'open')
  // Pretend it opened 59.8 s ago; a reload that changes another setting must not restart the 60 s.
  const b = g.breaker as unknown as { openedAt: number }
  b.openedAt -= 59800
  guardOf('schedule', { ...FAST, resetTimeoutMs: 60000, failureStatuses: [500, 502] })
  assert.equal(g.status().breaker.state, 'open')
  await until('half-open 60 s after it opened', () => g.status().breaker.state === 'half-open', POLL)
  failing = false
  assert.equal(await attempt(g), 200)
  await tick()
  assert.equal(g.status().breaker.state, 'closed')

  // Past its time at the reload: half-open at once, as a counted transition with a probe round.
  failing = true
  const h = guardOf('overdue', { ...FAST, resetTimeoutMs: 60000 })
  for (let i = 0; i < 5; i++) { await attempt(h); await tick() }
  assert.equal(h.status().breaker.state, 'open')
  ;(h.breaker as unknown as { openedAt: number }).openedAt -= 61000
  const before = await valueOf(metrics.circuitTransitions, { upstream: 'overdue', to: 'half-open' })
  guardOf('overdue', { ...FAST, resetTimeoutMs: 60000, failureStatuses: [500, 502] })
  assert.equal(h.status().breaker.state, 'half-open')
  assert.equal(await valueOf(metrics.circuitTransitions, { upstream: 'overdue', to: 'half-open' }), before + 1)
  assert.equal(await valueOf(metrics.circuitState, { upstream: 'overdue' }), 1)
  failing = false
  assert.equal(await attempt(h), 200)
  await tick()
  assert.equal(h.status().breaker.state, 'closed')
})

test('a disabled breaker admits everything', async () => {
  const g = guardOf('off', { ...FAST, enabled: false })
  failing = true
  for (let i = 0; i < 10; i++) assert.equal(await attempt(g), 500)
})

test('while closed, opossum is not called per request: the breaker only counts (opossum decides open, half-open and close)', async () => {
  failing = false
  const g = guardOf('countsonly', { ...FAST, volumeThreshold: 1000 })
  for (let i = 0; i < 20; i++) assert.equal(await attempt(g), 200)
  const opossum = (g.breaker as unknown as { cb: { stats: { fires: number } } }).cb
  assert.equal(opossum.stats.fires, 0, 'no closed-state attempt went through opossum')
  const w = g.breaker.status().window
  assert.deepEqual(w, { requests: 20, failures: 0, successes: 20 })
  // Under the volume threshold nothing opens; over it, the failure rate decides.
  failing = true
  const g2 = guardOf('countsonly2', { ...FAST, volumeThreshold: 4, errorThresholdPercent: 50 })
  assert.equal(await attempt(g2), 500)
  assert.equal(await attempt(g2), 500)
  assert.equal(await attempt(g2), 500)
  assert.equal(g2.breaker.state, 'closed', '3 attempts are under volumeThreshold 4')
  assert.equal(await attempt(g2), 500)
  await until('the breaker opens', () => g2.breaker.state === 'open')
  assert.equal(await attempt(g2), 'rejected')
  failing = false
})

test('a reload while half-open keeps the probe in flight: its verdict decides the breaker in use, whether or not the breaker settings changed', async () => {
  for (const [name, next] of [
    ['probe-reload-same', FAST],
    ['probe-reload-changed', { ...FAST, windowMs: 12000 }]
  ] as const) {
    for (const verdict of [200, 500]) {
      const n = `${name}-${verdict}`
      const g = guardOf(n, FAST)
      failing = true
      for (let i = 0; i < 5; i++) { await attempt(g); await tick() }
      await until('half-open', () => g.status().breaker.state === 'half-open', POLL)
      const probe = g.allow()
      guardOf(n, next)
      assert.equal(g.status().breaker.state, 'half-open', `${n}: the reload keeps half-open`)
      assert.throws(() => g.allow(), { code: 'SLUICE_ERR_CIRCUIT_OPEN' }, `${n}: the probe still holds its slot`)
      g.record(probe, { status: verdict })
      await tick()
      assert.equal(g.status().breaker.state, verdict === 200 ? 'closed' : 'open', `${n}: the probe's ${verdict} decides`)
      assert.equal(await valueOf(metrics.circuitState, { upstream: n }), verdict === 200 ? 0 : 2)
    }
  }
})

test('disabling an open or half-open breaker by reload drops its sluice_circuit_state series (as a disabled breaker has none); enabling it again starts closed', async () => {
  const series = async (n: string) => (await metrics.circuitState.get()).values.filter((v) => v.labels.upstream === n)
  for (const state of ['open', 'half-open'] as const) {
    const n = `disabled-${state}`
    const g = guardOf(n, { ...FAST, resetTimeoutMs: state === 'open' ? 60000 : 300 })
    failing = true
    for (let i = 0; i < 5; i++) { await attempt(g); await tick() }
    await until(state, () => g.status().breaker.state === state, POLL)
    assert.equal((await series(n))[0]?.value, state === 'open' ? 2 : 1)
    const probe = state === 'half-open' ? g.allow() : null
    guardOf(n, { ...FAST, resetTimeoutMs: 300, enabled: false })
    assert.deepEqual(await series(n), [], `${n}: no series while disabled`)
    // Disabled, it admits everything, and nothing it sees (a late probe, failures) moves it.
    if (probe !== null) g.record(probe, { status: 500 })
    for (let i = 0; i < 10; i++) assert.equal(await attempt(g), 500)
    await sleep(400) // past resetTimeoutMs: an open opossum circuit would have gone half-open by now
    await tick()
    assert.deepEqual(await series(n), [], `${n}: still no series`)
    assert.equal(g.status().breaker.enabled, false)
    guardOf(n, { ...FAST, resetTimeoutMs: 300 })
    assert.equal(g.status().breaker.state, 'closed', `${n}: re-enabled, it starts closed`)
    assert.equal((await series(n))[0]?.value, 0)
  }
  failing = false
})
