// A request's attempts and its target's in-flight count around reloads and long bodies:
// a reload during a retry's backoff does not fail the retry on the closed old pool, and a
// response streaming its body stays in flight (for least-request and /admin/upstreams) until
// it ends. Real loopback origins; waits poll conditions, never durations.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { TestGateway } from '../helpers/gateway.js'
import { closedAfter } from '../helpers/closed-after.js'
import { startTestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'

const { origin, gateway } = closedAfter()
interface TargetView { inFlight: number }
async function targetsOf (g: TestGateway, name: string): Promise<TargetView[]> {
  const all = await (await fetch(g.adminUrl + '/admin/upstreams')).json() as Record<string, { targets: TargetView[] }>
  return all[name].targets
}

test('a reload that replaces the pools during a retry\'s backoff: the retry goes out on the new pool and gets 200', async () => {
  let n = 0
  const o = await origin((o) => o.on('*', (_q, res) => { n++; res.writeHead(n === 1 ? 503 : 200); res.end(n === 1 ? 'busy' : 'ok') }))
  const yaml = (conns: number) => `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
upstreams:
  api:
    url: "${o.url}"
    connections: ${conns}
    retry: { attempts: 2, backoffMs: 1000, maxBackoffMs: 1000 }
routes:
  - name: r
    upstream: api
`
  const g = await gateway(yaml(8))
  const p = fetch(g.url + '/x').then(async (r) => ({ status: r.status, body: await r.text() }))
  await until('the first attempt', () => n >= 1)
  g.write(yaml(16))
  assert.equal((await fetch(g.adminUrl + '/admin/reload', { method: 'POST' })).status, 200)
  const r = await p
  assert.deepEqual(r, { status: 200, body: 'ok' }, 'the retry reached the origin')
  assert.equal(n, 2)
})

test('a response still streaming its body counts as in flight on its target until the body ends', async () => {
  const ends: (() => void)[] = []
  const o = await origin((o) => o.on('*', (_q, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.write('start'); ends.push(() => res.end('end')) }))
  const g = await gateway(`listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
upstreams:
  api: { targets: ["${o.url}"] }
routes:
  - name: r
    upstream: api
`)
  const rs = await Promise.all([0, 1, 2].map(async () => await fetch(g.url + '/s')))
  assert.ok(rs.every((r) => r.status === 200))
  assert.equal((await targetsOf(g, 'api'))[0].inFlight, 3, 'three bodies still streaming')
  for (const end of ends) end()
  for (const r of rs) assert.equal(await r.text(), 'startend')
  await until('the count back to 0', async () => (await targetsOf(g, 'api'))[0].inFlight === 0)
})

test('a reload that removes the upstream during a retry\'s backoff: the retry goes out on the set it had (no 500)', async () => {
  let n = 0
  const o = await origin((o) => o.on('*', (_q, res) => { n++; res.writeHead(n === 1 ? 503 : 200); res.end(n === 1 ? 'busy' : 'ok') }))
  const yaml = (name: string) => `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
upstreams:
  ${name}:
    url: "${o.url}"
    retry: { attempts: 2, backoffMs: 1000, maxBackoffMs: 1000 }
routes:
  - name: r
    upstream: ${name}
`
  const g = await gateway(yaml('api'))
  const p = fetch(g.url + '/x').then(async (r) => ({ status: r.status, body: await r.text() }))
  await until('the first attempt', () => n >= 1)
  g.write(yaml('api2'))
  assert.equal((await fetch(g.adminUrl + '/admin/reload', { method: 'POST' })).status, 200)
  const r = await p
  assert.notEqual(r.status, 500, r.body)
  assert.equal(g.logs.some((l) => l.msg === 'internal error'), false)
})

test('a reload during a retry\'s backoff: the retry still avoids the target that failed', async () => {
  let bad = 0
  let good = 0
  const a = await origin((o) => o.on('*', (_q, res) => { bad++; res.writeHead(503); res.end('busy') }))
  const b = await origin((o) => o.on('*', (_q, res) => { good++; res.writeHead(200); res.end('ok') }))
  const yaml = (conns: number) => `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
upstreams:
  api:
    targets: ["${a.url}", "${b.url}"]
    connections: ${conns}
    outlierDetection: { consecutiveErrors: 1000 }
    retry: { attempts: 1, backoffMs: 500, maxBackoffMs: 500 }
routes:
  - name: r
    upstream: api
`
  const g = await gateway(yaml(8))
  let checked = 0
  for (let i = 0; i < 8 && checked < 3; i++) {
    bad = 0; good = 0
    const p = fetch(g.url + '/x').then((r) => r.status)
    await until('the first attempt', () => bad + good >= 1)
    const firstBad = bad === 1
    g.write(yaml(i % 2 === 0 ? 16 : 8))
    await (await fetch(g.adminUrl + '/admin/reload', { method: 'POST' })).text()
    const status = await p
    if (!firstBad) continue
    checked++
    assert.deepEqual({ status, bad, good }, { status: 200, bad: 1, good: 1 }, 'the retry went to the other target')
  }
  assert.ok(checked > 0, 'round robin sent a first attempt to the failing target')
})

test('a request cut at the end of a drain gets one access line (503 SLUICE_ERR_SHUTTING_DOWN), not an upstream error', async () => {
  let asked = 0
  await origin((o) => o.on('*', () => { asked++ })) // never answers
  const o2 = await origin((o) => o.on('*', () => { asked++ }))
  const g = await startTestGateway(`listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
log: { level: info, accessLog: true }
upstreams:
  api: { url: "${o2.url}", timeoutMs: 60000 }
routes:
  - name: r
    upstream: api
`)
  const p = fetch(g.url + '/hang').then((r) => r.status, () => 'cut')
  await until('the origin has the request', () => asked >= 1)
  await g.gw.close(100)
  assert.equal(await p, 'cut')
  const lines = g.logs.filter((l) => l.msg === 'request')
  assert.equal(lines.length, 1, JSON.stringify(g.logs.map((l) => l.msg)))
  assert.equal(lines[0].status, 503)
  assert.equal(lines[0].err, 'SLUICE_ERR_SHUTTING_DOWN')
  assert.equal(g.logs.some((l) => l.msg === 'upstream error'), false)
})
