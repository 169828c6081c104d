import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'

let origin: Origin
let gw: TestGateway
before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(simpleConfig(origin.url).replace('admin: { host: 127.0.0.1, port: 0 }', 'admin: { host: 127.0.0.1, port: 0, token: "t0ken-value" }').replace('log: {', 'redis: { url: "redis://:hunter2@127.0.0.1:1" }\nlog: {'))
})
after(async () => { await gw.close(); await origin.close() })

test('/healthz is 200 and /readyz reports degraded (still 200) when Redis is configured but unreachable', async () => {
  const h = await request(gw.adminUrl + '/healthz')
  assert.equal(h.statusCode, 200)
  assert.deepEqual(await h.body.json(), { status: 'ok' })
  const r = await request(gw.adminUrl + '/readyz')
  assert.equal(r.statusCode, 200)
  const body = await r.body.json() as { status: string; degraded: string[]; redis: { url: string } }
  assert.equal(body.status, 'degraded')
  assert.deepEqual(body.degraded, ['redis'])
  assert.doesNotMatch(JSON.stringify(body), /hunter2/)
})

test('/admin/* needs the bearer token when one is set', async () => {
  const none = await request(gw.adminUrl + '/admin/config')
  assert.equal(none.statusCode, 401)
  assert.equal((await none.body.json() as { error: string }).error, 'SLUICE_ERR_UNAUTHORIZED')
  const wrong = await request(gw.adminUrl + '/admin/config', { headers: { authorization: 'Bearer nope' } })
  assert.equal(wrong.statusCode, 401)
  await wrong.body.dump()
  const ok = await request(gw.adminUrl + '/admin/config', { headers: { authorization: 'Bearer t0ken-value' } })
  assert.equal(ok.statusCode, 200)
  const text = await ok.body.text()
  assert.doesNotMatch(text, /t0ken-value|hunter2/, 'secrets are redacted')
  assert.match(text, /\[redacted\]/)
  assert.ok(gw.logs.some((l) => l.msg === 'admin authentication failed'))
  assert.doesNotMatch(JSON.stringify(gw.logs), /t0ken-value|nope"/)
})

test('repeated admin authentication failures are rate limited', async () => {
  let last = 0
  for (let i = 0; i < 12; i++) {
    const r = await request(gw.adminUrl + '/admin/upstreams', { headers: { authorization: 'Bearer bad' } })
    last = r.statusCode
    await r.body.dump()
  }
  assert.equal(last, 429)
})

test('/admin/upstreams shows pool stats; /admin/purge validates its body', async () => {
  const g2 = await startTestGateway(simpleConfig(origin.url))
  try {
    const u = await request(g2.adminUrl + '/admin/upstreams')
    const body = await u.body.json() as Record<string, { url: string; pool: { size: number } }>
    assert.equal(body.origin.url, origin.url)
    assert.equal(typeof body.origin.pool.size, 'number')
    const bad = await request(g2.adminUrl + '/admin/purge', { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } })
    assert.equal(bad.statusCode, 400)
    assert.equal((await bad.body.json() as { error: string }).error, 'SLUICE_ERR_ADMIN_BAD_REQUEST')
    const good = await request(g2.adminUrl + '/admin/purge', { method: 'POST', body: '{"prefix":"/api/"}', headers: { 'content-type': 'application/json' } })
    assert.equal(good.statusCode, 200)
    assert.equal((await good.body.json() as { ok: boolean }).ok, true)
  } finally { await g2.close() }
})

test('/metrics serves the Prometheus text format with build info and reload counters', async () => {
  const m = await request(gw.adminUrl + '/metrics')
  assert.match(String(m.headers['content-type']), /text\/plain/)
  const text = await m.body.text()
  assert.match(text, /sluice_build_info\{version="[^"]+",node="v\d+/)
  assert.match(text, /sluice_config_reloads_total\{result="failure"\} 0/)
  assert.match(text, /sluice_config_last_reload_success_timestamp_seconds \d+/)
})
