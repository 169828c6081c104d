// Review of the admin API with workers: ?worker= validation, a heap snapshot from a worker that
// never answers, /metrics when a worker is replaced, and /readyz while the primary drains.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { request } from 'undici'
import type { ServerResponse } from 'node:http'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestCluster, type TestCluster } from '../helpers/cluster.js'
import { metric } from '../helpers/metrics.js'
import { until } from '../helpers/wait.js'
import { foldRetired } from '../../src/cluster/primary.js'
import { StatusHistory, mergeHistories, type HistoryAnswer } from '../../src/observability/status.js'

const closers: (() => Promise<unknown> | unknown)[] = []
after(async () => { for (const c of closers.reverse()) await c() })

let origin: Origin
let c: TestCluster
before(async () => {
  origin = await startOrigin()
  closers.push(() => origin.close())
  c = await startTestCluster((port, adminPort) => `workers: 2
listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${adminPort} }
log: { level: warn, accessLog: false }
shutdownGraceMs: 20000
upstreams:
  api: { url: "${origin.url}" }
routes:
  - { name: all, match: { pathPrefix: / }, upstream: api }
`)
  closers.push(() => c.stop())
})

/** The workers' pids by index (the order ?worker=N counts in). */
async function workerPids (): Promise<number[]> {
  const r = await (await request(c.admin + '/readyz')).body.json() as { perWorker: { pid: number }[] }
  return r.perWorker.map((w) => w.pid)
}

test('?worker= with no value is a 400 {error, message}, not worker 0', async () => {
  for (const path of ['/admin/profile?seconds=1&worker=', '/admin/heap-snapshot?worker=', '/admin/heap-snapshot?worker=%20']) {
    const r = await request(c.admin + path, { method: 'POST' })
    const body = await r.body.json() as { error: string; message: string }
    assert.equal(r.statusCode, 400, path)
    assert.equal(body.error, 'SLUICE_ERR_ADMIN_BAD_REQUEST', path)
    assert.match(body.message, /worker must be a worker index/)
  }
})

test('a heap snapshot from a worker that never answers is a 504 {error, message} once ?timeout= passes', async () => {
  const [, pid] = await workerPids()
  process.kill(pid, 'SIGSTOP')
  try {
    // headersTimeout only keeps a hang (the bug) from stalling the file: it fails the test instead.
    const r = await request(c.admin + '/admin/heap-snapshot?worker=1&timeout=1', { method: 'POST', headersTimeout: 30_000 })
    const body = await r.body.json() as { error: string; message: string }
    assert.equal(r.statusCode, 504)
    assert.equal(body.error, 'SLUICE_ERR_ADMIN_TIMEOUT')
    assert.match(body.message, /worker 1 sent no heap snapshot data/)
  } finally {
    process.kill(pid, 'SIGCONT')
  }
  const bad = await request(c.admin + '/admin/heap-snapshot?worker=1&timeout=0', { method: 'POST' })
  assert.equal(bad.statusCode, 400)
  assert.equal((await bad.body.json() as { error: string }).error, 'SLUICE_ERR_ADMIN_BAD_REQUEST')
})

test('foldRetired sums a dead worker\'s counters and histograms by series and drops its gauges', () => {
  const counter = (v: number, route: string) => ({ name: 'c_total', help: 'h', type: 'counter', aggregator: 'sum', values: [{ value: v, labels: { route } }] })
  const hist = (v: number) => ({ name: 'h_seconds', help: 'h', type: 'histogram', aggregator: 'sum', values: [{ metricName: 'h_seconds_bucket', value: v, labels: { le: 0.1 } }, { metricName: 'h_seconds_count', value: v, labels: {} }] })
  const gauge = { name: 'g', help: 'h', type: 'gauge', aggregator: 'sum', values: [{ value: 7, labels: {} }] }
  const once = foldRetired([], [counter(2, 'a'), hist(3), gauge] as never)
  const twice = foldRetired(once, [counter(5, 'a'), counter(1, 'b'), hist(4), gauge] as never) as unknown as { name: string; values: { value: number; labels: Record<string, unknown>; metricName?: string }[] }[]
  assert.deepEqual(twice.map((m) => m.name).sort(), ['c_total', 'h_seconds'])
  const c = twice.find((m) => m.name === 'c_total')!
  assert.deepEqual(c.values.map((v) => [v.labels.route, v.value]), [['a', 7], ['b', 1]])
  assert.deepEqual(twice.find((m) => m.name === 'h_seconds')!.values.map((v) => [v.metricName, v.value]), [['h_seconds_bucket', 7], ['h_seconds_count', 7]])
  assert.equal((once as unknown as { values: { value: number }[] }[])[0].values[0].value, 2, 'the first fold is not changed by the second')
})

test('a worker that dies and is replaced keeps its requests in /metrics\'s counters (they do not go backwards)', async () => {
  origin.on('/m', (_req, res) => { res.end('ok') })
  for (let i = 0; i < 12; i++) await (await request(c.url + '/m', { reset: true })).body.dump()
  const st = await (await request(c.admin + '/admin/status')).body.json() as { perWorker: { pid: number; requests: number }[] }
  const victim = st.perWorker.find((w) => w.requests > 0)
  assert.ok(victim, JSON.stringify(st.perWorker))
  const before = await metric(c.admin, 'sluice_http_requests_total')
  const beforeCount = await metric(c.admin, 'sluice_http_request_duration_seconds_count')
  assert.equal(before, 12)
  process.kill(victim.pid, 'SIGKILL')
  await until('the killed worker is replaced', async () => {
    const pids = await workerPids()
    return pids.length === 2 && !pids.includes(victim.pid)
  }, { tries: 400 })
  assert.equal(await metric(c.admin, 'sluice_http_requests_total'), before, 'its requests are still counted')
  assert.equal(await metric(c.admin, 'sluice_http_request_duration_seconds_count'), beforeCount)
  await (await request(c.url + '/m', { reset: true })).body.dump()
  assert.equal(await metric(c.admin, 'sluice_http_requests_total'), before + 1)
})

test('/readyz while the primary drains is 503 not-ready at once, without asking the workers', async () => {
  // A request in flight keeps one worker draining (and answering IPC) after the SIGTERM.
  let held: ServerResponse | undefined
  origin.on('/slow', (_req, res) => { held = res })
  const slow = request(c.url + '/slow', { reset: true }).then(async (r) => { await r.body.text(); return r.statusCode })
  await until('the origin holds the request', () => held !== undefined)
  const exited = once(c.child, 'exit')
  c.child.kill('SIGTERM')
  let body: { status?: string; draining?: boolean; perWorker?: unknown; workers?: { configured: number } } = {}
  // Before the SIGTERM takes effect, a worker slow to answer on a loaded machine also makes
  // /readyz 503 (without draining): wait for the draining answer itself.
  await until('/readyz says not-ready, draining', async () => {
    const r = await request(c.admin + '/readyz')
    body = await r.body.json() as typeof body
    return r.statusCode === 503 && body.draining === true
  })
  assert.equal(body.status, 'not-ready', JSON.stringify(body))
  assert.equal(body.draining, true, JSON.stringify(body))
  assert.equal(body.perWorker, undefined, 'the workers were not asked: ' + JSON.stringify(body))
  assert.equal(body.workers?.configured, 2)
  // /admin/status says the same while the primary drains (it said ready: the workers answered).
  const st = await (await request(c.admin + '/admin/status')).body.json() as { status?: string }
  assert.equal(st.status, 'not-ready', JSON.stringify(st))
  held!.end('done')
  assert.equal(await slow, 200, 'the request in flight was drained')
  await exited
})

test('status history with workers: a point is held back while a worker that has sampled nothing after ?since= has not sampled it yet', async () => {
  // One worker's real history: a baseline and one sample, on an interval long enough that
  // both ticks fall on the same instant `t`.
  const family = { get: async () => ({ values: [{ labels: { cache: 'none' }, value: 1 }] }) }
  const h = new StatusHistory({ httpRequests: family, httpDuration: { get: async () => ({ values: [] }) }, upstreamDuration: { get: async () => ({ values: [] }) } }, { intervalMs: 1e12 })
  await h.tick(true)
  await h.tick()
  const [{ t }] = h.samples()
  // The page's poll: the samples after the last point it has. This worker has none past `t`...
  const behind = h.answer(t)
  assert.deepEqual(behind.samples, [])
  assert.equal(behind.latest, t)
  // ...while another has already sampled the next instant: that point must wait for it.
  const ahead: HistoryAnswer = { intervalMs: 1e12, capacity: 300, latest: t + 1e12, samples: [{ ...h.samples()[0], t: t + 1e12 }] }
  assert.deepEqual(mergeHistories([ahead, behind]).samples, [], 'not answered short (one worker\'s requests only)')
  // Once both have it, it is answered, summed.
  const both = mergeHistories([ahead, { ...ahead }])
  assert.deepEqual(both.samples.map((s) => [s.t, s.requests]), [[t + 1e12, 0]])
})
