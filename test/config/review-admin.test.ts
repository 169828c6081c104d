// Admin API edge cases an operator hits with everyday tools (curl -d '', wget --post-data=,
// a client that spells the auth scheme in lower case).
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'

let origin: Origin
let gw: TestGateway
const AUTH = { authorization: 'Bearer t0ken' }
before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(simpleConfig(origin.url).replace('admin: { host: 127.0.0.1, port: 0 }', 'admin: { host: 127.0.0.1, port: 0, token: "t0ken" }'))
})
after(async () => { await gw.close(); await origin.close() })

test('POST /admin/reload with an empty body reloads whatever its Content-Type (curl -d \'\', wget --post-data=)', async () => {
  for (const type of ['application/x-www-form-urlencoded', 'application/json', 'application/octet-stream']) {
    const r = await request(gw.adminUrl + '/admin/reload', { method: 'POST', headers: { ...AUTH, 'content-type': type }, body: '' })
    const body = await r.body.json() as { ok?: boolean }
    assert.equal(r.statusCode, 200, `${type}: ${JSON.stringify(body)}`)
    assert.equal(body.ok, true)
  }
})

test('a body the admin API cannot read answers the documented {error, message} shape with a SLUICE_ERR code', async () => {
  const cases: [string, string, number][] = [
    ['application/json', '{', 400],
    ['application/x-www-form-urlencoded', 'key=/x', 400]
  ]
  for (const [type, payload, status] of cases) {
    const r = await request(gw.adminUrl + '/admin/purge', { method: 'POST', headers: { ...AUTH, 'content-type': type }, body: payload })
    const body = await r.body.json() as { error?: string; message?: string; statusCode?: number }
    assert.equal(r.statusCode, status, `${type}: ${JSON.stringify(body)}`)
    assert.match(String(body.error), /^SLUICE_ERR_/, `${type}: ${JSON.stringify(body)}`)
    assert.equal(typeof body.message, 'string')
    assert.equal(body.statusCode, undefined)
  }
  const big = await request(gw.adminUrl + '/admin/purge', { method: 'POST', headers: { ...AUTH, 'content-type': 'application/json' }, body: JSON.stringify({ key: 'x'.repeat(2 << 20) }) })
  const body = await big.body.json() as { error?: string }
  assert.equal(big.statusCode, 413)
  assert.match(String(body.error), /^SLUICE_ERR_/)
})

test('the Bearer scheme is matched case-insensitively (RFC 9110 11.1)', async () => {
  for (const h of ['bearer t0ken', 'BEARER t0ken', 'Bearer  t0ken']) {
    const r = await request(gw.adminUrl + '/admin/config', { headers: { authorization: h } })
    await r.body.dump()
    assert.equal(r.statusCode, 200, h)
  }
})
