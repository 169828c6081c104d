// Review of upstreams with several targets: reloads that replace a target's pool while a
// request is still on its way (an Expect: 100-continue upload, a late failure on the old
// pool), and targets that share a host:port. Real loopback origins and gateways; waits poll
// conditions, never durations.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { once } from 'node:events'
import type { TestGateway } from '../helpers/gateway.js'
import { closedAfter } from '../helpers/closed-after.js'
import { until } from '../helpers/wait.js'
import { assertRefused } from '../helpers/config-error.js'

const { origin, gateway } = closedAfter({ level: 'debug' })

async function reload (g: TestGateway, yaml: string): Promise<void> {
  g.write(yaml)
  const r = await fetch(g.adminUrl + '/admin/reload', { method: 'POST' })
  assert.equal(r.status, 200, await r.text())
}

test('an Expect: 100-continue upload that spans a reload replacing the pools goes out on the new pool (not 502 on the closed one)', async () => {
  const a = await origin((o) => o.on('*', (_q, res, body) => { res.writeHead(200); res.end('a:' + body.toString()) }))
  const b = await origin((o) => o.on('*', (_q, res, body) => { res.writeHead(200); res.end('b:' + body.toString()) }))
  const yaml = (timeoutMs: number) => `upstreams:
  api:
    targets: ["${a.url}", "${b.url}"]
    timeoutMs: ${timeoutMs}
routes:
  - name: r
    upstream: api
`
  const g = await gateway(yaml(10000))
  const port = Number(new URL(g.url).port)
  const s = connect(port, '127.0.0.1')
  await once(s, 'connect')
  let got = ''
  s.setEncoding('latin1')
  s.on('data', (d: string) => { got += d })
  s.write('POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n')
  await until('the 100 Continue', () => got.startsWith('HTTP/1.1 100'))
  // A reload that changes the pool settings: every target gets a new pool, the old ones close.
  await reload(g, yaml(9000))
  s.write('hello')
  await once(s, 'end')
  const head = got.slice(got.indexOf('\r\n\r\n') + 4)
  assert.match(head, /^HTTP\/1\.1 200/, got)
  assert.match(got, /\r\n[ab]:hello\r\n/, got)
})

test('a failure on a pool a reload retired does not eject its successor or zero its sluice_upstream_target_healthy', async () => {
  const held: (() => void)[] = []
  const bad = await origin((o) => o.on('*', (_q, res) => { held.push(() => { res.writeHead(500); res.end('bad') }) }))
  const good = await origin((o) => o.on('*', (_q, res) => { res.writeHead(200); res.end('good') }))
  const yaml = (timeoutMs: number) => `upstreams:
  api:
    targets: ["${bad.url}", "${good.url}"]
    timeoutMs: ${timeoutMs}
    retry: { attempts: 0 }
    circuitBreaker: { enabled: false }
    outlierDetection: { consecutiveErrors: 2, ejectMs: 600000, maxEjectedPercent: 50 }
routes:
  - name: r
    upstream: api
`
  const g = await gateway(yaml(10000))
  const rs = Array.from({ length: 4 }, async () => await fetch(g.url + '/x').then(async (r) => { await r.text(); return r.status }))
  await until('two requests held by the bad target', () => held.length === 2)
  // The operator raises timeoutMs: the targets get new pools; the two requests finish on the old one.
  await reload(g, yaml(9000))
  for (const h of held) h()
  const statuses = (await Promise.all(rs)).sort()
  assert.deepEqual(statuses, [200, 200, 500, 500])
  const st = await (await fetch(g.adminUrl + '/admin/upstreams')).json() as Record<string, { targets: { target: string, ejected: boolean, healthy: boolean }[] }>
  const t = st.api.targets.find((x) => x.target === `127.0.0.1:${bad.port}`)
  assert.deepEqual({ ejected: t?.ejected, healthy: t?.healthy }, { ejected: false, healthy: true }, 'the live target was never ejected')
  const gauge = (await (await fetch(g.adminUrl + '/metrics')).text()).split('\n').find((l) => l.startsWith('sluice_upstream_target_healthy{') && l.includes(`target="127.0.0.1:${bad.port}"`))
  assert.match(gauge ?? '', / 1$/, 'the gauge agrees with /admin/upstreams')
})

test('two targets with the same host:port (the target label) are refused at load, naming the key path', () => {
  const yaml = `upstreams:
  api:
    targets: ["http://127.0.0.1:8080/a", "http://127.0.0.1:8080/b"]
routes:
  - name: r
    upstream: api
`
  assertRefused(yaml, /upstreams\.api\.targets\[1\].*127\.0\.0\.1:8080/)
})

test('a retry fails over to another target too: the failover allowance is per attempt, not spent by the first attempt', async () => {
  const { reservePort } = await import('../helpers/ports.js')
  const { startOrigin } = await import('../helpers/origin.js')
  const { Balancer, TargetState } = await import('../../src/upstream/balancer.js')
  const pa = await reservePort()
  const pb = await reservePort()
  // A key that hashes to A: the retry, with both targets tried, goes to A first.
  const entry = (p: number) => ({ id: `127.0.0.1:${p}`, origin: `http://127.0.0.1:${p}`, basePath: '', hostHeader: `127.0.0.1:${p}`, weight: 1 })
  const ts = [new TargetState(entry(pa)), new TargetState(entry(pb))]
  const bal = new Balancer({ balance: 'hash', outlier: { consecutiveErrors: 5, ejectMs: 1, maxEjectedPercent: 50 } } as never, ts)
  let key = 0
  while (bal.pick(0, String(key), null) !== ts[0]) key++
  const g = await gateway(`upstreams:
  api:
    targets: ["http://127.0.0.1:${pa}", "http://127.0.0.1:${pb}"]
    balance: hash
    hashKey: header:x-k
    retry: { attempts: 1, backoffMs: 400, maxBackoffMs: 400 }
    circuitBreaker: { enabled: false }
    outlierDetection: { consecutiveErrors: 100 }
routes:
  - name: r
    upstream: api
`)
  const p = fetch(g.url + '/x', { headers: { 'x-k': String(key) } }).then(async (r) => ({ status: r.status, body: await r.text() }))
  // Both refuse the first attempt; B comes up during the backoff, A stays down.
  await until('the first attempt failed on both targets', () => g.logs.some((l) => l.msg === 'retrying upstream request'), { intervalMs: 10 })
  const b = await startOrigin({ port: pb })
  b.on('*', (_q, res) => { res.writeHead(200); res.end('b') })
  try {
    assert.deepEqual(await p, { status: 200, body: 'b' })
  } finally { await b.close() }
})
