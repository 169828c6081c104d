// Through a real gateway, what origins direct at a shared cache: Surrogate-Control targeted at
// Sluice (after Sluice announced itself with Surrogate-Capability), fields withheld from storage,
// Vary'd values that differ only in form, and byte ranges of stored responses.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, cachedConfig, getText, type TestGateway } from '../helpers/gateway.js'

let origin: Origin
let gw: TestGateway

before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(cachedConfig(origin.url))
})
after(async () => { await gw.close(); await origin.close() })

const get = (path: string, headers: Record<string, string> = {}) => getText(gw.url, path, headers)

test('fills announce Surrogate-Capability; a Surrogate-Control max-age aimed at Sluice overrides Cache-Control: no-store', async () => {
  origin.on('/sc', (req, res) => {
    // The device tokens that announced themselves: `token="capabilities"`, comma-separated.
    const tokens = String(req.headers['surrogate-capability'] ?? '').split(',').map((c) => c.split('=')[0].trim())
    const token = tokens.includes('sluice') ? 'sluice' : 'nobody'
    // Browsers must not store it; the surrogate that announced itself may.
    res.writeHead(200, { 'cache-control': 'no-store', 'surrogate-control': `max-age=60;${token}`, 'content-type': 'text/plain' })
    res.end('for the edge')
  })
  const one = await get('/sc', { 'surrogate-capability': 'downstream="Surrogate/1.0"' })
  assert.equal(one.headers['cache-status'], 'sluice; fwd=miss')
  const seen = origin.seen.find((s) => s.url === '/sc')
  assert.equal(seen?.headers['surrogate-capability'], 'downstream="Surrogate/1.0", sluice="Surrogate/1.0"', 'appended to a downstream surrogate\'s own')
  const two = await get('/sc')
  assert.match(String(two.headers['cache-status']), /^sluice; hit/)
  assert.equal(two.body, 'for the edge')
  assert.equal(origin.count('/sc'), 1)
})

test('Surrogate-Control aimed at another device leaves Cache-Control in charge', async () => {
  origin.on('/other', (_req, res) => {
    res.writeHead(200, { 'cache-control': 'no-store', 'surrogate-control': 'max-age=60;some-cdn', 'content-type': 'text/plain' })
    res.end('not for us')
  })
  assert.equal((await get('/other')).headers['cache-status'], 'sluice; fwd=bypass; detail=NO-STORE')
  assert.match(String((await get('/other')).headers['cache-status']), /^sluice; fwd=bypass; detail=(NO-STORE|HIT-FOR-MISS)$/)
  assert.equal(origin.count('/other'), 2)
})

test('Vary: values that differ only in whitespace, or Accept-Language only in order, share a variant', async () => {
  origin.on('/lang', (req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', vary: 'Accept-Language, X-Flags', 'content-type': 'text/plain' })
    res.end(`lang ${String(req.headers['accept-language'])}`)
  })
  const one = await get('/lang', { 'accept-language': 'en, de', 'x-flags': 'a,b' })
  assert.equal(one.headers['cache-status'], 'sluice; fwd=miss')
  const two = await get('/lang', { 'accept-language': ' DE ,   en', 'x-flags': ' a, b ' })
  assert.match(String(two.headers['cache-status']), /^sluice; hit/)
  assert.equal(two.body, 'lang en, de')
  const three = await get('/lang', { 'accept-language': 'fr', 'x-flags': 'a,b' })
  assert.equal(three.headers['cache-status'], 'sluice; fwd=miss', 'another language is another variant')
  assert.equal(origin.count('/lang'), 2)
})

test('a byte range of a stored response is cut from the cache; If-Range that does not match gets all of it', async () => {
  origin.on('/bytes', (req, res) => {
    if (req.headers.range !== undefined) { res.writeHead(416, { 'content-type': 'text/plain' }); res.end('origin range'); return }
    res.writeHead(200, { 'cache-control': 'max-age=60', etag: '"v1"', 'content-type': 'application/octet-stream', 'x-stored': '1' })
    res.end('0123456789A')
  })
  assert.equal((await get('/bytes')).headers['cache-status'], 'sluice; fwd=miss')
  for (const [range, text, cr] of [['bytes=0-1', '01', 'bytes 0-1/11'], ['bytes=1-', '123456789A', 'bytes 1-10/11'], ['bytes=-1', 'A', 'bytes 10-10/11']]) {
    const r = await get('/bytes', { range })
    assert.equal(r.status, 206, range)
    assert.equal(r.body, text)
    assert.equal(r.headers['content-range'], cr)
    assert.equal(r.headers['content-length'], String(text.length))
    assert.equal(r.headers['x-stored'], '1', 'the stored headers come along')
    assert.match(String(r.headers['cache-status']), /^sluice; hit/)
  }
  assert.equal((await get('/bytes', { range: 'bytes=0-1', 'if-range': '"v1"' })).status, 206)
  const changed = await get('/bytes', { range: 'bytes=0-1', 'if-range': '"v0"' })
  assert.equal(changed.status, 200, 'If-Range names another version: the whole response')
  assert.equal(changed.body, '0123456789A')
  const multi = await get('/bytes', { range: 'bytes=0-1,4-5' })
  assert.equal(multi.body, 'origin range', 'several ranges go to the origin')
  assert.equal(multi.headers['cache-status'], 'sluice; fwd=bypass; detail=RANGE')
  assert.equal(origin.count('/bytes'), 2)
})

test('fields named by private="..." or no-cache="..." reach the first client only', async () => {
  origin.on('/withheld', (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60, private="X-User", no-cache="X-Session"', 'x-user': 'alice', 'x-session': 's1', 'x-shared': 'yes', 'content-type': 'text/plain' })
    res.end('w')
  })
  const one = await get('/withheld')
  assert.equal(one.headers['x-user'], 'alice', 'the client that caused the fill gets the origin\'s response as it is')
  const two = await get('/withheld')
  assert.match(String(two.headers['cache-status']), /^sluice; hit/)
  assert.equal(two.headers['x-user'], undefined)
  assert.equal(two.headers['x-session'], undefined)
  assert.equal(two.headers['x-shared'], 'yes')
})
