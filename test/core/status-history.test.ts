// The status page's numbers and its token (found by a review): the page's own polling never
// locks its address out of the admin API, the chart's upstream errors count neither a client
// that hung up nor one attempt twice, and with workers a point is answered only once every
// worker has sampled it.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:net'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'
import { createMetrics } from '../../src/observability/metrics.js'
import { StatusHistory, historyOf, mergeHistories, type HistorySample } from '../../src/observability/status.js'
import { DASHBOARD_HTML } from '../../src/observability/dashboard.js'

const TOKEN = 'status-token'
let origin: Origin
let raw: Server
let rawUrl: string
const held: Array<() => void> = []

before(async () => {
  origin = await startOrigin()
  origin.on('/slow', (_req, res) => { held.push(() => res.end('late')) })
  // An upstream answering a status outside 100..599.
  raw = createServer((s) => {
    s.once('data', () => s.end('HTTP/1.1 600 Weird\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok'))
  })
  await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve))
  rawUrl = `http://127.0.0.1:${(raw.address() as { port: number }).port}`
})
after(async () => {
  for (const h of held) h()
  await origin?.close()
  raw?.close()
})

async function withGateway (yaml: string, fn: (g: TestGateway) => Promise<void>): Promise<void> {
  const g = await startTestGateway(yaml)
  try { await fn(g) } finally { await g.close() }
}

test('requests with no token are refused but not counted as failed logins, and the page stops polling after a 401', async () => {
  const yaml = simpleConfig(origin.url).replace('admin: { host: 127.0.0.1, port: 0 }', `admin: { host: 127.0.0.1, port: 0, token: "${TOKEN}" }`)
  await withGateway(yaml, async (g) => {
    // What the page sends every 2 s before a token is typed in, and what a cross-site GET sends.
    for (let i = 0; i < 12; i++) {
      const r = await request(g.adminUrl + '/admin/status', { headers: { 'sec-fetch-site': 'same-origin' } })
      await r.body.dump()
      assert.equal(r.statusCode, 401)
    }
    const ok = await request(g.adminUrl + '/admin/status', { headers: { authorization: 'Bearer ' + TOKEN } })
    await ok.body.dump()
    assert.equal(ok.statusCode, 200, 'the right token still works')
    // Wrong tokens are still counted: the lockout against guessing stays.
    for (let i = 0; i < 10; i++) {
      const r = await request(g.adminUrl + '/admin/status', { headers: { authorization: 'Bearer wrong' } })
      await r.body.dump()
    }
    const locked = await request(g.adminUrl + '/admin/status', { headers: { authorization: 'Bearer ' + TOKEN } })
    await locked.body.dump()
    assert.equal(locked.statusCode, 429)
  })
  // The page: a 401 sets needToken, and tick() does nothing until a token is submitted.
  assert.match(DASHBOARD_HTML, /if \(needToken\) return/)
  assert.match(DASHBOARD_HTML, /res\.status === 401\) \{ needToken = true/)
})

test('the chart\'s upstream errors leave out a client that hung up before the upstream answered', async () => {
  await withGateway(simpleConfig(origin.url), async (g) => {
    const h = historyOf(g.gw.metrics)!
    await h.tick(true)
    const ac = new AbortController()
    const p = request(g.url + '/slow', { signal: ac.signal }).catch(() => null)
    await until('the origin holds it', () => origin.count('/slow') >= 1)
    ac.abort()
    await p
    await until('the attempt is over', async () => (await g.gw.metrics.targetRequests.get()).values.some((x) => x.labels.class === 'error' && x.value > 0))
    await h.tick()
    assert.equal(h.samples().at(-1)!.upstreamErrors, 0)
  })
})

test('an upstream status outside 100..599 is one upstream error on the chart, not two', async () => {
  await withGateway(simpleConfig(rawUrl), async (g) => {
    const h = historyOf(g.gw.metrics)!
    await h.tick(true)
    const r = await request(g.url + '/x', { method: 'POST', body: 'a' })
    await r.body.dump()
    await h.tick()
    assert.equal(h.samples().at(-1)!.upstreamErrors, 1, `status ${r.statusCode}`)
  })
})

test('workers: a point is answered only once every worker has sampled it, so the page never keeps a short one', async () => {
  const A = new StatusHistory(createMetrics({ processMetrics: false }), { intervalMs: 2000, capacity: 10 })
  const B = new StatusHistory(createMetrics({ processMetrics: false }), { intervalMs: 2000, capacity: 10 })
  const ring = (x: StatusHistory) => (x as unknown as { ring: HistorySample[] }).ring
  const sample = (t: number, requests: number): HistorySample => ({ t, seconds: 2, requests, rps: requests / 2, p50: 0.01, p99: 0.02, cacheLookups: 0, cacheHits: 0, hitRatio: null, upstreamErrors: 0, upstreamErrorsPerSecond: 0 })
  // At one poll worker A has sampled t=4000 and worker B (a few ms later) has not yet.
  ring(A).push(sample(2000, 100), sample(4000, 100))
  ring(B).push(sample(2000, 100))
  const first = mergeHistories([A.answer(), B.answer()])
  assert.deepEqual(first.samples.map((s) => [s.t, s.rps]), [[2000, 100]], 't=4000 waits for worker B')
  ring(B).push(sample(4000, 100))
  const next = mergeHistories([A.answer(2000), B.answer(2000)])
  assert.deepEqual(next.samples.map((s) => [s.t, s.rps]), [[4000, 100]], 'and comes whole on the next poll')
  // A worker with no samples yet (just started) holds nothing back.
  const C = new StatusHistory(createMetrics({ processMetrics: false }), { intervalMs: 2000, capacity: 10 })
  assert.equal(mergeHistories([A.answer(), B.answer(), C.answer()]).samples.length, 2)
})

test('workers: the merged p50 and p99 are those of every worker\'s requests together (the latency histograms are summed), not a mix of each worker\'s percentiles', async () => {
  // One hour per sample, so both workers' ticks round to the same instant.
  const opts = { intervalMs: 3_600_000, capacity: 10 }
  const [ma, mb, mall] = [0, 1, 2].map(() => createMetrics({ processMetrics: false }))
  const [A, B, All] = [ma, mb, mall].map((m) => new StatusHistory(m, opts))
  for (const h of [A, B, All]) await h.tick(true)
  // Worker A answers 90 fast requests, worker B 10 slow ones; All sees the same 100 requests.
  for (let i = 0; i < 90; i++) for (const m of [ma, mall]) m.forRoute('r').observe('GET', 200, 'hit', 0.002)
  for (let i = 0; i < 10; i++) for (const m of [mb, mall]) m.forRoute('r').observe('GET', 200, 'miss', 0.4)
  for (const h of [A, B, All]) await h.tick()
  const merged = mergeHistories([A.answer(undefined, true), B.answer(undefined, true)]).samples
  const one = All.samples()
  assert.equal(merged.length, 1)
  assert.equal(merged[0].requests, 100)
  assert.equal(merged[0].p50, one[0].p50, 'p50 as one process with all the requests')
  assert.equal(merged[0].p99, one[0].p99, 'p99 as one process with all the requests')
  assert.ok(merged[0].p99! < B.samples()[0].p99!, `not the slowest worker's p99 (${merged[0].p99} vs ${B.samples()[0].p99})`)
  assert.equal(merged[0].latency, undefined, 'the counts are not in the answer')
  assert.equal(A.answer().samples[0].latency, undefined, 'nor in a process\'s own /admin/status/history')
  assert.equal(A.answer().le, undefined)
})

test('workers: a worker that has answered no request yet (no latency buckets at all) does not turn the others\' merged p50 and p99 back into estimates', async () => {
  const opts = { intervalMs: 3_600_000, capacity: 10 }
  const [ma, mb, mc, mall] = [0, 1, 2, 3].map(() => createMetrics({ processMetrics: false }))
  const [A, B, C, All] = [ma, mb, mc, mall].map((m) => new StatusHistory(m, opts))
  for (const h of [A, B, C, All]) await h.tick(true)
  for (let i = 0; i < 90; i++) for (const m of [ma, mall]) m.forRoute('r').observe('GET', 200, 'hit', 0.002)
  for (let i = 0; i < 10; i++) for (const m of [mb, mall]) m.forRoute('r').observe('GET', 200, 'miss', 0.4)
  // C, idle since it started, has no histogram children: its answer has no bounds.
  for (const h of [A, B, C, All]) await h.tick()
  const merged = mergeHistories([C.answer(undefined, true), A.answer(undefined, true), B.answer(undefined, true)]).samples
  const one = All.samples()
  assert.equal(merged.length, 1)
  assert.equal(merged[0].requests, 100)
  assert.equal(merged[0].p50, one[0].p50, 'p50 as one process with all the requests')
  assert.equal(merged[0].p99, one[0].p99, 'p99 as one process with all the requests')
})
