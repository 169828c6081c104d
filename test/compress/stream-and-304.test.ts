// Compression at its edges: a streamed body whose chunks never pause still reaches the client
// while it streams; a cache 304 to a client holding an encoded copy carries that copy's weak
// ETag and a Vary with Accept-Encoding, as the 200 did; a no-transform response is stored and
// served with the coding the origin gave it.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import zlib from 'node:zlib'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'

let origin: Origin
let gw: TestGateway
const BODY = JSON.stringify({ items: Array.from({ length: 200 }, (_, i) => ({ id: i, name: `item ${i}` })) })
before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(simpleConfig(origin.url).replace('    upstream: origin\n', `    upstream: origin
    compression: { enabled: true, minBytes: 100, encodings: [br, gzip] }
  - name: cached
    match: { pathPrefix: /cached/ }
    upstream: origin
    cache: { enabled: true }
    compression: { enabled: true, minBytes: 100, encodings: [br, gzip] }
`))
})
after(async () => { await gw.close(); await origin.close() })

async function get (path: string, headers: Record<string, string> = {}) {
  const r = await request(gw.url + path, { headers })
  return { status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) }
}

test('a compressed stream whose chunks never pause reaches the client while the origin is still sending', async () => {
  for (const enc of ['gzip', 'br'] as const) {
    let sent = 0
    let ended = false
    origin.on(`/steady-${enc}`, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      const t = setInterval(() => {
        res.write(JSON.stringify({ token: 'w' + (sent++ % 50) }) + '\n')
        if (sent === 400) { clearInterval(t); ended = true; res.end() }
      }, 10)
      res.on('close', () => clearInterval(t))
    })
    const ac = new AbortController()
    const r = await request(`${gw.url}/steady-${enc}`, { headers: { 'accept-encoding': enc }, signal: ac.signal })
    assert.equal(r.headers['content-encoding'], enc)
    const dec = enc === 'gzip' ? zlib.createGunzip() : zlib.createBrotliDecompress()
    r.body.on('error', () => {})
    r.body.pipe(dec)
    const endedWhenFirst = await new Promise<boolean>((resolve) => dec.once('data', () => resolve(ended)))
    ac.abort()
    dec.destroy()
    assert.equal(endedWhenFirst, false, `${enc}: the first bytes came only after the origin's ${sent} chunks had all been sent`)
  }
})

test('a cache 304 to a client holding the br copy carries the weak ETag and the Vary of the 200 it got', async () => {
  origin.on('/cached/a', (req, res) => {
    const h = { 'content-type': 'application/json', 'cache-control': 'max-age=60', etag: '"strong"', vary: 'Accept-Language' }
    res.writeHead(200, h)
    res.end(BODY)
  })
  await get('/cached/a', { 'accept-encoding': 'br' })
  let a = await get('/cached/a', { 'accept-encoding': 'br' })
  for (let i = 0; i < 50 && a.headers['content-encoding'] !== 'br'; i++) { await new Promise((resolve) => setTimeout(resolve, 20)); a = await get('/cached/a', { 'accept-encoding': 'br' }) }
  assert.equal(a.headers['content-encoding'], 'br')
  assert.equal(a.headers.etag, 'W/"strong"')
  const b = await get('/cached/a', { 'accept-encoding': 'br', 'if-none-match': 'W/"strong"' })
  assert.equal(b.status, 304)
  assert.equal(b.headers.etag, 'W/"strong"')
  assert.equal(b.headers.vary, a.headers.vary)
  assert.match(String(b.headers.vary), /accept-encoding/i)
})

test('a no-transform response with a content coding is stored and served as the origin sent it', async () => {
  const gz = zlib.gzipSync('x'.repeat(5000))
  origin.on('/cached/nt', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'gzip', 'cache-control': 'max-age=60, no-transform', 'content-length': String(gz.length) })
    res.end(gz)
  })
  await get('/cached/nt', { 'accept-encoding': 'gzip' })
  const hit = await get('/cached/nt')
  assert.match(String(hit.headers['cache-status']), /^sluice; hit/)
  assert.equal(hit.headers['content-encoding'], 'gzip', 'the coding is not changed')
  assert.equal(zlib.gunzipSync(hit.body).toString(), 'x'.repeat(5000))
})
