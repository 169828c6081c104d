// Review: an origin that sends Content-Encoding: deflate as raw DEFLATE (no zlib wrapper, as
// some servers do) to a client that does not accept deflate. The cache's decoder accepts raw
// deflate (codec.ts decodeBounded); decoding on the fly must too, or the client is cut off.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import zlib from 'node:zlib'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'

let origin: Origin
let gw: TestGateway
const TEXT = 'raw deflate body '.repeat(300)

before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(simpleConfig(origin.url).replace('    upstream: origin\n', `    upstream: origin
    compression: { enabled: true, minBytes: 100, encodings: [br, gzip] }
`))
})
after(async () => { await gw.close(); await origin.close() })

for (const [name, encode] of [['raw', zlib.deflateRawSync], ['zlib-wrapped', zlib.deflateSync]] as const) {
  test(`an origin's ${name} deflate body is decoded on the fly for a client that does not accept deflate`, async () => {
    const body = encode(TEXT)
    origin.on(`/${name}`, (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'deflate' })
      // Two writes: the decoder sees the body in pieces, as a stream.
      res.write(body.subarray(0, 1))
      setTimeout(() => res.end(body.subarray(1)), 5)
    })
    const r = await request(`${gw.url}/${name}`, { headers: { 'accept-encoding': 'gzip' } })
    assert.equal(r.statusCode, 200)
    assert.equal(r.headers['content-encoding'], undefined)
    assert.equal(await r.body.text(), TEXT)
  })
}

test('a deflate body that does not decode still fails the stream (no clean end)', async () => {
  origin.on('/garbage', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'deflate' })
    res.end(Buffer.from('\xff\xff this is not deflate at all '.repeat(20), 'latin1'))
  })
  // Cut once the head was sent, or a 502 when the failure comes before any byte went out
  // (src/send.ts): never a clean 200.
  const outcome = await request(`${gw.url}/garbage`, { headers: { 'accept-encoding': 'gzip' } })
    .then(async (r) => { await r.body.text(); return r.statusCode }, () => 'cut')
    .catch(() => 'cut')
  assert.ok(outcome === 'cut' || outcome === 502, `got a clean ${String(outcome)}`)
})
