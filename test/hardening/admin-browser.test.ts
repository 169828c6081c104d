// The admin port against browsers and reloads: a page on another site cannot drive it (CSRF),
// a tokenless port answers only for loopback host names (DNS rebinding), a reload cannot drop
// the token of the running listener, /admin/config hides header values that carry API keys,
// and profiling conflicts answer 409 in the project's error format.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'

let origin: Origin
before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

test('without a token: a cross-site POST gets 403 and changes nothing; a host name that is not loopback gets 403; the same site and curl work', async (t) => {
  const gw = await startTestGateway(simpleConfig(origin.url))
  t.after(() => gw.close())
  const host = new URL(gw.adminUrl).host
  const reloads = () => gw.logs.filter((l) => l.msg === 'config unchanged' || l.msg === 'config reloaded').length
  for (const headers of [{ origin: 'http://evil.example', 'content-type': 'text/plain' }, { 'sec-fetch-site': 'cross-site' }, { 'sec-fetch-site': 'same-site' }, { origin: 'null' }]) {
    const r = await request(gw.adminUrl + '/admin/reload', { method: 'POST', headers, body: 'x' })
    assert.equal(r.statusCode, 403, JSON.stringify(headers))
    assert.equal((await r.body.json() as { error: string }).error, 'SLUICE_ERR_ADMIN_FORBIDDEN')
  }
  // The same with the path percent-encoded (Fastify routes /%61dmin/reload to /admin/reload).
  const enc = await request(gw.adminUrl + '/%61dmin/reload', { method: 'POST', headers: { origin: 'http://evil.example', 'sec-fetch-site': 'cross-site' } })
  assert.equal(enc.statusCode, 403)
  await enc.body.dump()
  assert.equal(reloads(), 0, 'no reload ran')
  // DNS rebinding: the page's own host name, resolved to 127.0.0.1.
  const port = new URL(gw.adminUrl).port
  for (const path of ['/admin/config', '/admin/status', '/dashboard', '/%61dmin/status']) {
    const r = await request(gw.adminUrl + path, { headers: { host: `evil.example:${port}` } })
    assert.equal(r.statusCode, 403, path)
    await r.body.dump()
  }
  // The same origin (the status page), a plain client, and the public endpoints still work.
  assert.equal((await request(gw.adminUrl + '/admin/reload', { method: 'POST', headers: { origin: `http://${host}`, 'sec-fetch-site': 'same-origin' } })).statusCode, 200)
  assert.equal((await request(gw.adminUrl + '/admin/reload', { method: 'POST' })).statusCode, 200)
  assert.equal((await request(`http://localhost:${port}/admin/status`)).statusCode, 200)
  assert.equal((await request(gw.adminUrl + '/metrics', { headers: { host: `evil.example:${port}` } })).statusCode, 200)
})

test('a reload cannot change the running admin listener\'s token (it needs a restart), so it cannot turn auth off', async (t) => {
  const withToken = simpleConfig(origin.url).replace('admin: { host: 127.0.0.1, port: 0 }', 'admin: { host: 127.0.0.1, port: 0, token: tok-A }')
  const gw = await startTestGateway(withToken)
  t.after(() => gw.close())
  gw.write(simpleConfig(origin.url))
  const r = await request(gw.adminUrl + '/admin/reload', { method: 'POST', headers: { authorization: 'Bearer tok-A' } })
  assert.equal(r.statusCode, 200)
  await r.body.dump()
  assert.ok(gw.logs.some((l) => l.key === 'admin' && String(l.msg).endsWith('takes effect at the next restart')))
  assert.equal((await request(gw.adminUrl + '/admin/config')).statusCode, 401, 'still guarded')
  assert.equal((await request(gw.adminUrl + '/admin/config', { headers: { authorization: 'Bearer tok-A' } })).statusCode, 200)
})

test('/admin/config hides the values of route header edits and of the OTLP exporter\'s headers', async (t) => {
  const yaml = simpleConfig(origin.url, `    headers: { request: { set: { authorization: "Bearer UPSTREAM-KEY-1" } }, response: { set: { x-note: "NOTE-2" } } }\n`)
    .replace('upstreams:', 'tracing: { otlp: { url: "http://127.0.0.1:9/v1/traces", headers: { x-api-key: "OTLP-KEY-3" } }, sampleRatio: 0 }\nupstreams:')
  const gw = await startTestGateway(yaml)
  t.after(() => gw.close())
  const text = await (await request(gw.adminUrl + '/admin/config')).body.text()
  for (const s of ['UPSTREAM-KEY-1', 'NOTE-2', 'OTLP-KEY-3']) assert.equal(text.includes(s), false, s)
  const c = JSON.parse(text) as { config: { routes: { headers: { request: { set: Record<string, string> } } }[] } }
  assert.deepEqual(c.config.routes[0].headers.request.set, { authorization: '[redacted]' }, 'the header names stay visible')
})

test('a heap snapshot while a CPU profile runs answers 409 SLUICE_ERR_ADMIN_BUSY, and so does a second profile', async (t) => {
  const gw = await startTestGateway(simpleConfig(origin.url))
  t.after(() => gw.close())
  const first = request(gw.adminUrl + '/admin/profile?seconds=2', { method: 'POST' })
  await until('the first profile started', () => gw.logs.some((l) => l.msg === 'CPU profile started'))
  for (const path of ['/admin/profile?seconds=1', '/admin/heap-snapshot']) {
    const r = await request(gw.adminUrl + path, { method: 'POST' })
    assert.equal(r.statusCode, 409, path)
    assert.equal((await r.body.json() as { error: string }).error, 'SLUICE_ERR_ADMIN_BUSY')
  }
  const done = await first
  assert.equal(done.statusCode, 200)
  await done.body.dump()
})
