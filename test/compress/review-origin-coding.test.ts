// Review: an origin's encoded body that the cache decodes for storage. The identity bytes it
// serves from the entry must not carry the fields that named the origin's encoded bytes.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import zlib from 'node:zlib'
import { createHash } from 'node:crypto'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'

let origin: Origin
let gw: TestGateway

before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(simpleConfig(origin.url).replace('    upstream: origin\n', `    upstream: origin
    cache: { enabled: true }
    compression: { enabled: true, minBytes: 100, encodings: [br, gzip] }
`))
})
after(async () => { await gw.close(); await origin.close() })

async function fetchRaw (path: string, headers: Record<string, string> = {}) {
  const r = await request(gw.url + path, { headers })
  return { status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) }
}

test('a stored entry decoded from the origin\'s gzip is served to identity clients as the miss was: weak ETag, no digest of the gzip bytes', async () => {
  const text = 'pre-compressed '.repeat(200)
  const gz = zlib.gzipSync(text)
  const md5 = createHash('md5').update(gz).digest('base64')
  origin.on('/static.js', (_req, res) => {
    res.writeHead(200, {
      'content-type': 'application/javascript',
      'content-encoding': 'gzip',
      'cache-control': 'max-age=60',
      etag: '"gz"',
      'content-md5': md5,
      'content-digest': `md5=:${md5}:`
    })
    res.end(gz)
  })
  const miss = await fetchRaw('/static.js')
  assert.match(String(miss.headers['cache-status']), /fwd=miss/)
  assert.equal(miss.body.toString(), text)
  assert.equal(miss.headers.etag, 'W/"gz"')
  assert.equal(miss.headers['content-md5'], undefined)
  // The entry is stored once its body is decoded (off the event loop): until then a request collapses onto the fill.
  let hit = await fetchRaw('/static.js')
  for (let i = 0; i < 100 && !/hit/.test(String(hit.headers['cache-status'])); i++) { await new Promise((resolve) => setTimeout(resolve, 10)); hit = await fetchRaw('/static.js') }
  assert.match(String(hit.headers['cache-status']), /hit/)
  assert.equal(hit.headers['content-encoding'], undefined)
  assert.equal(hit.body.toString(), text)
  assert.equal(hit.headers.etag, 'W/"gz"', 'the strong ETag of the gzip bytes does not name the decoded ones')
  assert.equal(hit.headers['content-md5'], undefined, 'the gzip bytes\' Content-MD5 is not sent with the decoded ones')
  assert.equal(hit.headers['content-digest'], undefined, 'the gzip bytes\' Content-Digest is not sent with the decoded ones')
  // A range of the decoded bytes is not validated by the gzip bytes' strong ETag.
  const ranged = await fetchRaw('/static.js', { range: 'bytes=0-9', 'if-range': '"gz"' })
  assert.equal(ranged.status, 200, 'If-Range with the gzip bytes\' ETag does not match the identity bytes')
  // The origin's own gzip copy, served to a gzip client, is still its bytes.
  const gzHit = await fetchRaw('/static.js', { 'accept-encoding': 'gzip' })
  assert.equal(gzHit.headers['content-encoding'], 'gzip')
  assert.equal(zlib.gunzipSync(gzHit.body).toString(), text)
  assert.equal(gzHit.headers.etag, 'W/"gz"')
})
