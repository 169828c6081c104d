import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'
import { metric } from '../helpers/metrics.js'

let origin: Origin
let other: Origin
before(async () => { origin = await startOrigin(); other = await startOrigin() })
after(async () => { await origin.close(); await other.close() })

async function get (url: string): Promise<{ status: number; body: string }> {
  const r = await request(url)
  return { status: r.statusCode, body: await r.body.text() }
}


/** Poll every 25 ms, 400 times (10 s). */
const POLL = { tries: 400, intervalMs: 25 }

const withRoute = (o: Origin, extra: string) => simpleConfig(o.url, extra)
const newRoute = `  - name: new
    match: { pathPrefix: /new/ }
    upstream: other
`
const twoUpstreams = (o1: Origin, o2: Origin, routes = '') => simpleConfig(o1.url, routes).replace('routes:', `  other:
    url: ${o2.url}
routes:`)

test('POST /admin/reload swaps in new routes and upstreams without a restart', async (t) => {
  const gw = await startTestGateway(withRoute(origin, ''))
  t.after(() => gw.close())
  other.on('/new/x', (_req, res) => { res.end('from other') })
  assert.equal((await get(gw.url + '/new/x')).body, `origin GET /new/x`)
  gw.write(twoUpstreams(origin, other, newRoute))
  const r = await request(gw.adminUrl + '/admin/reload', { method: 'POST' })
  const body = await r.body.json() as { ok: boolean; diff: string[] }
  assert.equal(r.statusCode, 200)
  assert.equal(body.ok, true)
  assert.deepEqual(body.diff.sort(), ['+ route new', '+ upstream other'])
  assert.equal((await get(gw.url + '/new/x')).body, 'from other')
  assert.equal(await metric(gw.adminUrl, 'sluice_config_reloads_total', { result: 'success' }), 1)
})

test('a bad file changes nothing: the old config serves, the error is logged with line and path, and counted', async (t) => {
  const gw = await startTestGateway(withRoute(origin, ''))
  t.after(() => gw.close())
  const version = gw.gw.holder.current().version
  gw.write(withRoute(origin, '').replace('timeoutMs: 2000', 'timeoutMs: soon'))
  const r = await request(gw.adminUrl + '/admin/reload', { method: 'POST' })
  assert.equal(r.statusCode, 422)
  const body = await r.body.json() as { error: string; errors: string[] }
  assert.equal(body.error, 'SLUICE_ERR_CONFIG_INVALID')
  assert.match(body.errors[0], /sluice\.yaml:\d+:\d+ upstreams\.origin\.timeoutMs: expected integer >= 1/)
  assert.equal(gw.gw.holder.current().version, version)
  assert.equal((await get(gw.url + '/still')).status, 200)
  assert.equal(await metric(gw.adminUrl, 'sluice_config_reloads_total', { result: 'failure' }), 1)
  const log = gw.logs.find((l) => l.msg === 'config reload failed; the previous config keeps serving')
  assert.ok(log && Array.isArray(log.errors))
  const ready = await (await request(gw.adminUrl + '/readyz')).body.json() as { status: string; degraded: string[] }
  assert.equal(ready.status, 'degraded')
  assert.deepEqual(ready.degraded, ['config'])
})

test('a change to the file reloads by itself, including an atomic rename into place', async (t) => {
  const gw = await startTestGateway(withRoute(origin, ''), { watch: true })
  t.after(() => gw.close())
  const v0 = gw.gw.holder.current().version
  writeFileSync(gw.file, withRoute(origin, '').replace('timeoutMs: 2000', 'timeoutMs: 3000'))
  await until('a reload after an in-place write', () => gw.gw.holder.current().version !== v0, POLL)
  const v1 = gw.gw.holder.current().version
  const tmp = join(gw.dir, '.sluice.yaml.tmp')
  writeFileSync(tmp, withRoute(origin, '').replace('timeoutMs: 2000', 'timeoutMs: 4000'))
  renameSync(tmp, gw.file)
  await until('a reload after an atomic rename', () => gw.gw.holder.current().version !== v1, POLL)
  assert.equal(gw.gw.holder.current().config.upstreams.origin.timeoutMs, 4000)
})

test('an open SSE stream survives a reload, and in-flight requests finish on their snapshot', async (t) => {
  const gw = await startTestGateway(withRoute(origin, ''))
  t.after(() => gw.close())
  let release!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  origin.on('/sse', async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write('data: before\n\n')
    await released
    res.end('data: after\n\n')
  })
  const r = await request(gw.url + '/sse')
  const it = r.body[Symbol.asyncIterator]()
  assert.equal(String((await it.next()).value), 'data: before\n\n')
  // Reload to a config where the upstream changed (new pool) and the route was renamed.
  gw.write(twoUpstreams(origin, other, '').replace('name: all', 'name: renamed').replace('timeoutMs: 2000', 'timeoutMs: 2500'))
  const rr = await request(gw.adminUrl + '/admin/reload', { method: 'POST' })
  assert.equal(rr.statusCode, 200)
  await rr.body.dump()
  release()
  let rest = ''
  for (;;) { const n = await it.next(); if (n.done) break; rest += String(n.value) }
  assert.equal(rest, 'data: after\n\n')
  const line = gw.logs.find((l) => l.msg === 'request' && l.url === '/sse')
  assert.equal(line?.route, 'all', 'the request finished on the snapshot it started with')
})

test('a reload changes log.level at once: at warn, info lines (the access lines among them) stop; back at info, they return', async (t) => {
  const gw = await startTestGateway(withRoute(origin, ''))
  t.after(() => gw.close())
  const accessLines = () => gw.logs.filter((l) => l.msg === 'request').length
  await get(gw.url + '/a')
  await until('the access line', () => accessLines() === 1)
  gw.write(withRoute(origin, '').replace('level: info', 'level: warn'))
  assert.equal((await request(gw.adminUrl + '/admin/reload', { method: 'POST' })).statusCode, 200)
  assert.ok(gw.logs.some((l) => l.msg === 'log level changed' && l.to === 'warn'))
  await get(gw.url + '/b')
  await sleep(50)
  assert.equal(accessLines(), 1, 'no info lines at warn')
  gw.write(withRoute(origin, ''))
  assert.equal((await request(gw.adminUrl + '/admin/reload', { method: 'POST' })).statusCode, 200)
  await get(gw.url + '/c')
  await until('access lines again', () => accessLines() === 2)
})

test('a reload warns about each changed key it cannot apply (cache.targetedField, metrics.maxLabelValues, workers), and not about cache.warmup, which it applies', async (t) => {
  const gw = await startTestGateway(withRoute(origin, ''))
  t.after(() => gw.close())
  const warned = () => gw.logs.filter((l) => typeof l.msg === 'string' && l.msg.endsWith('takes effect at the next restart')).map((l) => l.key as string)
  gw.write(withRoute(origin, '').replace('routes:', 'routes:').replace('log:', 'cache: { warmup: { paths: [/warm] } }\nlog:'))
  assert.equal((await request(gw.adminUrl + '/admin/reload', { method: 'POST' })).statusCode, 200)
  assert.deepEqual(warned(), [], 'cache.warmup applies at the reload')
  gw.write(withRoute(origin, '').replace('log:', 'cache: { targetedField: cdn-only }\nmetrics: { maxLabelValues: 50 }\nworkers: 1\nlog:'))
  assert.equal((await request(gw.adminUrl + '/admin/reload', { method: 'POST' })).statusCode, 200)
  assert.deepEqual(warned().sort(), ['cache.targetedField', 'metrics.maxLabelValues'])
})
