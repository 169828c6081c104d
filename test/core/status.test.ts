import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, tempConfig, type TestGateway } from '../helpers/gateway.js'
import { cliCommand } from '../helpers/cli.js'
import { createMetrics, LabelGuard } from '../../src/observability/metrics.js'
import { quantileFromBuckets } from '../../src/observability/status.js'

let origin: Origin
let gw: TestGateway
before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(simpleConfig(origin.url))
  for (let i = 0; i < 5; i++) await (await request(gw.url + '/warm')).body.dump()
})
after(async () => { await gw.close(); await origin.close() })

test('GET /admin/status summarises routes with latency percentiles, upstreams and memory', async () => {
  const s = await (await request(gw.adminUrl + '/admin/status')).body.json() as Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any
  assert.equal(s.status, 'ready')
  assert.equal(s.routes[0].name, 'all')
  assert.equal(s.routes[0].latency.count, 5)
  assert.ok(s.routes[0].latency.p50 > 0 && s.routes[0].latency.p99 >= s.routes[0].latency.p50)
  assert.equal(s.upstreams.origin.url, origin.url)
  assert.ok(s.memory.rssBytes > 0)
})

test('GET /dashboard is a self-contained HTML page (no external resources)', async () => {
  const r = await request(gw.adminUrl + '/dashboard')
  assert.match(String(r.headers['content-type']), /text\/html/)
  const html = await r.body.text()
  assert.match(html, /<title>Sluice status<\/title>/)
  assert.match(html, /\/admin\/status/)
  assert.doesNotMatch(html, /https?:\/\//, 'no CDN or external URL')
})

test('POST /admin/profile returns a CPU profile; POST /admin/heap-snapshot streams a heap snapshot', async () => {
  const p = await request(gw.adminUrl + '/admin/profile?seconds=0.2', { method: 'POST' })
  assert.equal(p.statusCode, 200)
  const profile = await p.body.json() as { nodes: unknown[]; startTime: number }
  assert.ok(Array.isArray(profile.nodes) && profile.nodes.length > 0)
  const bad = await request(gw.adminUrl + '/admin/profile?seconds=9999', { method: 'POST' })
  assert.equal(bad.statusCode, 400)
  await bad.body.dump()
  const h = await request(gw.adminUrl + '/admin/heap-snapshot', { method: 'POST' })
  assert.equal(h.statusCode, 200)
  const text = await h.body.text()
  assert.ok(text.startsWith('{"snapshot":'))
  assert.ok(JSON.parse(text).nodes.length > 0)
})

// The gateway runs in this process: the CLI must be awaited, never spawned synchronously.
const run = async (args: string[]) => {
  const [cmd, argv] = cliCommand(args)
  try {
    const r = await promisify(execFile)(cmd, argv, { encoding: 'utf8' })
    return { status: 0, stdout: r.stdout, stderr: r.stderr }
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string }
    return { status: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

test('`sluice status`, `sluice purge` and `sluice config diff` talk to the admin API', async () => {
  const st = await run(['status', '--admin', gw.adminUrl])
  assert.equal(st.status, 0, st.stderr)
  assert.match(st.stdout, /^sluice .* ready/)
  assert.match(st.stdout, /^all\s+\/\s+origin/m)
  const pg = await run(['purge', '--tag', 'products', '--admin', gw.adminUrl])
  assert.equal(pg.status, 0, pg.stderr)
  assert.match(pg.stdout, /"ok":true/)
  const { file } = tempConfig(simpleConfig(origin.url, `  - name: extra
    match: { pathPrefix: /extra/ }
    upstream: origin
`).replace('timeoutMs: 2000', 'timeoutMs: 2500'))
  const df = await run(['config', 'diff', file, '--admin', gw.adminUrl])
  assert.equal(df.status, 0, df.stderr)
  assert.deepEqual(df.stdout.trim().split('\n').sort(), ['+ route extra', '~ route all', '~ upstream origin'], 'the route inherits the upstream timeout, so it changes too')
})

test('the label guard folds values past the cap into _other and counts them', async () => {
  const m = createMetrics({ processMetrics: false, maxLabelValues: 2 })
  m.forRoute('a').observe('GET', 200, 'none', 0.01)
  m.forRoute('b').observe('GET', 200, 'none', 0.01)
  m.forRoute('c').observe('GET', 200, 'none', 0.01)
  m.forRoute('d').observe('GET', 200, 'none', 0.01)
  const text = await m.registry.metrics()
  assert.match(text, /sluice_http_requests_total\{route="_other",method="GET",status_class="2xx",cache="none"\} 2/)
  assert.match(text, /sluice_metrics_label_overflow_total\{label="route"\} 2/)
  const g = new LabelGuard('x', 1, m.labelOverflow)
  assert.equal(g.value('one'), 'one')
  assert.equal(g.value('one'), 'one')
  assert.equal(g.value('two'), '_other')
})

test('quantiles are interpolated inside histogram buckets', () => {
  const b = [{ le: 0.1, count: 50 }, { le: 0.2, count: 100 }, { le: Infinity, count: 100 }]
  assert.equal(quantileFromBuckets(0.5, b), 0.1)
  assert.ok(Math.abs(quantileFromBuckets(0.75, b)! - 0.15) < 1e-9)
  assert.equal(quantileFromBuckets(0.5, [{ le: Infinity, count: 0 }]), null)
})
