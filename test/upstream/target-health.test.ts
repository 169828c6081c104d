// Target health across its three sources: active checks, passive ejection and reloads, and the
// merged view of several workers. Real loopback origins; the balancer and the merge are pure
// logic and are driven directly.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { TestGateway } from '../helpers/gateway.js'
import type { Origin } from '../helpers/origin.js'
import { closedAfter } from '../helpers/closed-after.js'
import { until } from '../helpers/wait.js'
import { Balancer, TargetState } from '../../src/upstream/balancer.js'
import type { UpstreamEntry } from '../../src/config/snapshot.js'
import { mergeUpstreams } from '../../src/cluster/upstreams.js'

const { origin, gateway } = closedAfter({ level: 'debug' })

type TargetView = { target: string, healthy: boolean, ejected: boolean, ejections: number, consecutiveErrors: number }

async function targetsOf (g: TestGateway): Promise<TargetView[]> {
  const st = await (await fetch(g.adminUrl + '/admin/upstreams')).json() as Record<string, { targets: TargetView[] }>
  return st.api.targets
}

async function targetOf (g: TestGateway, o: Origin): Promise<TargetView> {
  const t = (await targetsOf(g)).find((x) => x.target === `127.0.0.1:${o.port}`)
  assert.ok(t, `target 127.0.0.1:${o.port} listed`)
  return t
}

async function healthyGauge (g: TestGateway): Promise<string[]> {
  return (await (await fetch(g.adminUrl + '/metrics')).text()).split('\n').filter((l) => l.startsWith('sluice_upstream_target_healthy{'))
}

test('a passing health check ends a passive ejection of a target that stayed healthy', async () => {
  // /health passes while live traffic gets 500s: ejected passively, never unhealthy by checks.
  const bad = await origin((o) => {
    o.on('/health', (_q, res) => { res.writeHead(200); res.end('ok') })
    o.on('*', (_q, res) => { res.writeHead(500); res.end('bad') })
  })
  const good = await origin((o) => o.on('*', (_q, res) => { res.writeHead(200); res.end('good') }))
  const g = await gateway(`upstreams:
  api:
    targets: ["${bad.url}", "${good.url}"]
    healthCheck: { path: /health, intervalMs: 200, timeoutMs: 150, healthyThreshold: 1, unhealthyThreshold: 3 }
    outlierDetection: { consecutiveErrors: 2, ejectMs: 600000, maxEjectedPercent: 50 }
    circuitBreaker: { enabled: false }
routes:
  - name: r
    upstream: api
`)
  await until('bad target ejected by live 500s', async () => {
    await (await fetch(g.url + '/x')).text()
    return (await targetOf(g, bad)).ejections >= 1
  }, { tries: 40 })
  assert.equal((await targetOf(g, bad)).healthy, true, 'the checks never failed')
  // ejectMs is ten minutes: only a passing check can end the ejection within the bound.
  await until('a passing check ends the ejection', async () => (await targetOf(g, bad)).ejected === false,
    { tries: 100, intervalMs: 50, detail: async () => await targetOf(g, bad) })
  const line = (await healthyGauge(g)).find((l) => l.includes(`target="127.0.0.1:${bad.port}"`))
  assert.match(line ?? '', / 1$/, 'the gauge says it is back in rotation')
  assert.ok(g.logs.some((l) => l.msg === 'upstream target passed a health check: ejection ended early'))
})

test('a reload that replaces the targets\' pools keeps sluice_upstream_target_healthy for them', async () => {
  const a = await origin((o) => o.on('*', (_q, res) => { res.writeHead(200); res.end('a') }))
  const b = await origin((o) => o.on('*', (_q, res) => { res.writeHead(200); res.end('b') }))
  const yaml = (conns: number) => `upstreams:
  api:
    targets: ["${a.url}", "${b.url}"]
    connections: ${conns}
routes:
  - name: r
    upstream: api
`
  const g = await gateway(yaml(8))
  assert.equal((await healthyGauge(g)).length, 2)
  // connections is part of the pool's key: both targets get new pools under the same labels.
  g.write(yaml(16))
  assert.equal((await fetch(g.adminUrl + '/admin/reload', { method: 'POST' })).status, 200)
  const lines = await healthyGauge(g)
  assert.equal(lines.length, 2, `both targets keep the gauge: ${JSON.stringify(lines)}`)
  assert.ok(lines.every((l) => l.endsWith(' 1')), JSON.stringify(lines))
})

test('panic mode: the last target in rotation is not ejected when the other is out by active checks', async () => {
  const down = await origin((o) => o.on('*', (_q, res) => { res.writeHead(503); res.end('down') }))
  const flaky = await origin((o) => {
    o.on('/health', (_q, res) => { res.writeHead(200); res.end('ok') })
    o.on('*', (_q, res) => { res.writeHead(500); res.end('flaky') })
  })
  const g = await gateway(`upstreams:
  api:
    targets: ["${down.url}", "${flaky.url}"]
    healthCheck: { path: /health, intervalMs: 500, timeoutMs: 400, healthyThreshold: 2, unhealthyThreshold: 1 }
    outlierDetection: { consecutiveErrors: 3, ejectMs: 600000, maxEjectedPercent: 50 }
    circuitBreaker: { enabled: false }
routes:
  - name: r
    upstream: api
`)
  await until('down unhealthy by checks', async () => (await targetOf(g, down)).healthy === false)
  const seen: number[] = []
  for (let i = 0; i < 8; i++) { const r = await fetch(g.url + '/x'); await r.text(); seen.push(r.status) }
  assert.deepEqual(seen, Array(8).fill(500), 'every request reaches the failing target still in rotation (no 503)')
  const t = await targetOf(g, flaky)
  assert.equal(t.ejected, false)
  assert.equal(t.ejections, 0)
})

test('balancer: targets out of rotation for any reason count against maxEjectedPercent, and the last one in rotation stays', () => {
  const upstream = (pct: number) => ({ name: 'u', balance: 'round-robin', outlier: { consecutiveErrors: 1, ejectMs: 60000, maxEjectedPercent: pct } }) as unknown as UpstreamEntry
  const states = (n: number) => Array.from({ length: n }, (_, i) => new TargetState({ id: `t${i}`, weight: 1 } as never))

  // 100%: one unhealthy by checks, one ejected; the third fails but is the last in rotation.
  let ts = states(3)
  let b = new Balancer(upstream(100), ts)
  ts[0].healthy = false
  assert.equal(b.record(ts[1], 'failure'), true, 'two of three still in rotation: eject')
  assert.equal(b.record(ts[2], 'failure'), false, 'the last one in rotation is never ejected')
  assert.equal(b.anyAvailable(Date.now(), null), true)

  // 50% of four = two: two unhealthy by checks use up the allowance.
  ts = states(4)
  b = new Balancer(upstream(50), ts)
  ts[0].healthy = false
  ts[1].healthy = false
  assert.equal(b.record(ts[2], 'failure'), false, 'two of four already out of rotation')
  ts[1].healthy = true
  assert.equal(b.record(ts[2], 'failure'), true, 'one out: one more may be ejected')
  assert.equal(b.record(ts[3], 'failure'), false)
})

test('mergeUpstreams: a target some workers lack is listed, and healthy only when every worker has it in rotation', () => {
  const t = (target: string, healthy = true) => ({ target, healthy, ejected: false, inFlight: 1, pool: { connected: 1 } })
  const m = mergeUpstreams([
    { pid: 1, upstreams: { api: { targets: [t('a:1'), t('b:1')] } } },
    { pid: 2, upstreams: { api: { targets: [t('a:1'), t('c:1')] } } }
  ]) as Record<string, { targets: { target: string, healthy: boolean, healthyIn: number, inFlight: number }[] }>
  const by = Object.fromEntries(m.api.targets.map((x) => [x.target, x]))
  assert.deepEqual(Object.keys(by).sort(), ['a:1', 'b:1', 'c:1'], 'a target only the second worker has is listed')
  assert.equal(by['a:1'].healthy, true)
  assert.equal(by['a:1'].healthyIn, 2)
  assert.equal(by['a:1'].inFlight, 2)
  assert.equal(by['b:1'].healthy, false, 'worker 2 does not have b:1 in rotation')
  assert.equal(by['b:1'].healthyIn, 1)
  assert.equal(by['c:1'].healthy, false, 'worker 1 does not have c:1 in rotation')
  assert.equal(by['c:1'].healthyIn, 1)
})
