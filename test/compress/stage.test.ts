// The compress stage on its own: apply() fed with real upstream responses (a loopback origin
// read through undici, streamed), as the pipeline calls it.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import zlib from 'node:zlib'
import { Readable } from 'node:stream'
import type { ServerResponse } from 'node:http'
import { request } from 'undici'
import { Value } from '@sinclair/typebox/value'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { createCompressStage, type CompressRoute } from '../../src/compress/stage.js'
import { CompressionRouteSchema, type CompressionRouteConfig } from '../../src/compress/config.js'
import { createMetrics } from '../../src/observability/metrics.js'
import type { Headers, ProxyResponse } from '../../src/types.js'

const BODY = Buffer.from(JSON.stringify({ items: Array.from({ length: 300 }, (_, i) => ({ id: i, name: `item ${i}`, tags: ['a', 'b'] })) }))
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'date'])

let origin: Origin
const metrics = createMetrics({ processMetrics: false })
const stage = createCompressStage({ metrics })

function route (over: Partial<CompressionRouteConfig> = {}): CompressRoute {
  const c = { ...(Value.Create(CompressionRouteSchema) as CompressionRouteConfig), enabled: true, minBytes: 100, ...over }
  return { name: 'r', compression: Object.freeze(c) }
}

before(async () => {
  origin = await startOrigin()
  origin.on('*', (_req, res) => { res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(BODY.length), etag: '"v1"', 'accept-ranges': 'bytes' }); res.end(BODY) })
})
after(async () => { await origin.close() })

/** The origin's response as the upstream stage hands it over: streamed, hop-by-hop removed. */
async function upstream (path: string, method = 'GET', reqHeaders: Headers = {}): Promise<ProxyResponse> {
  const r = await request(origin.url + path, { method: method as 'GET', headers: reqHeaders as Record<string, string> })
  const headers: Headers = {}
  for (const [k, v] of Object.entries(r.headers)) if (!HOP.has(k)) headers[k] = v
  return { status: r.statusCode, headers, body: r.body, cacheResult: 'none' }
}

async function bytes (body: ProxyResponse['body']): Promise<Buffer> {
  if (body === null) return Buffer.alloc(0)
  if (Buffer.isBuffer(body)) return body
  const chunks: Buffer[] = []
  for await (const c of body) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

function decode (buf: Buffer, enc: unknown): Buffer {
  if (enc === 'br') return zlib.brotliDecompressSync(buf)
  if (enc === 'gzip') return zlib.gunzipSync(buf)
  if (enc === 'deflate') return zlib.inflateSync(buf)
  assert.equal(enc, undefined, `unexpected coding ${String(enc)}`)
  return buf
}

/** Send a path through the origin and apply(); returns the client's view. */
async function through (path: string, reqHeaders: Headers, r = route(), method = 'GET') {
  const res = stage.apply(r, reqHeaders, method, await upstream(path, method))
  return { res, raw: await bytes(res.body) }
}

const table: [string, string | undefined, string[], string | undefined][] = [
  // [case, Accept-Encoding, route encodings, expected Content-Encoding]
  ['absent header', undefined, ['br', 'gzip'], undefined],
  ['gzip', 'gzip', ['br', 'gzip'], 'gzip'],
  ['br', 'br', ['br', 'gzip'], 'br'],
  ['equal q, route order', 'gzip, br', ['br', 'gzip'], 'br'],
  ['equal q, other route order', 'gzip, br', ['gzip', 'br'], 'gzip'],
  ['q-values', 'br;q=0.5, gzip;q=0.9', ['br', 'gzip'], 'gzip'],
  ['identity only', 'identity', ['br', 'gzip'], undefined],
  ['identity;q=0 with nothing else acceptable', 'identity;q=0, zstd', ['br', 'gzip'], undefined],
  ['star', '*', ['br', 'gzip'], 'br'],
  ['star after a refusal', 'br;q=0, *', ['br', 'gzip'], 'gzip'],
  ['deflate not listed', 'deflate', ['br', 'gzip'], undefined],
  ['deflate listed', 'deflate', ['gzip', 'deflate'], 'deflate'],
  ['deflate listed, br not', 'br, deflate;q=0.1', ['gzip', 'deflate'], 'deflate'],
  ['unknown codings', 'zstd, compress', ['br', 'gzip'], undefined],
  ['all refused', 'br;q=0, gzip;q=0', ['br', 'gzip'], undefined]
]

for (const [name, ae, encodings, expected] of table) {
  test(`negotiation, ${name}: ${JSON.stringify(ae)} on [${encodings}] → ${expected ?? 'identity'}, and the client decodes the origin's exact bytes`, async () => {
    const { res, raw } = await through('/t', ae === undefined ? {} : { 'accept-encoding': ae }, route({ encodings: encodings as CompressionRouteConfig['encodings'] }))
    assert.equal(res.headers['content-encoding'], expected)
    assert.ok(decode(raw, expected).equals(BODY), 'decoded bytes equal the origin\'s')
    assert.equal(res.headers.vary, 'Accept-Encoding', 'Vary: Accept-Encoding exactly once, compressed or not')
    if (expected) {
      assert.equal(res.headers['content-length'], undefined)
      assert.equal(res.headers['accept-ranges'], undefined, 'no ranges of compressed bytes')
      assert.equal(res.headers.etag, 'W/"v1"', 'a strong ETag is weakened on encoded bytes')
    } else {
      assert.equal(res.headers['content-length'], String(BODY.length))
      assert.equal(res.headers.etag, '"v1"')
    }
  })
}

/** Register a path on the origin that answers with these headers and body. */
function serve (path: string, status: number, headers: Record<string, string>, body: Buffer | string = BODY): void {
  const empty = status === 204 || status === 304
  const length = empty ? {} : { 'content-length': String(Buffer.byteLength(body)) }
  origin.on(path, (_req, res: ServerResponse) => { res.writeHead(status, { ...length, ...headers }); res.end(empty ? undefined : body) })
}

test('never compressed, and left untouched: 204, 206, a 304 of another type or no-transform, no-transform, other types, small bodies; an existing Content-Encoding the client accepts is sent as it is, with Vary', async () => {
  const gz = zlib.gzipSync(BODY)
  serve('/encoded', 200, { 'content-type': 'application/json', 'content-encoding': 'gzip' }, gz)
  serve('/204', 204, { 'content-type': 'application/json' })
  serve('/206', 206, { 'content-type': 'application/json', 'content-range': `bytes 0-99/${BODY.length}` }, BODY.subarray(0, 100))
  serve('/304png', 304, { etag: '"v1"', 'content-type': 'image/png' })
  serve('/304nt', 304, { etag: '"v1"', 'cache-control': 'no-transform' })
  serve('/notransform', 200, { 'content-type': 'application/json', 'cache-control': 'public, no-transform' })
  serve('/png', 200, { 'content-type': 'image/png' })
  serve('/small', 200, { 'content-type': 'text/plain' }, 'tiny')
  const ae = { 'accept-encoding': 'br, gzip' }
  for (const path of ['/204', '/206', '/304png', '/304nt', '/notransform', '/png', '/small']) {
    const up = await upstream(path)
    const res = stage.apply(route(), ae, 'GET', up)
    assert.equal(res, up, `${path}: the response itself, unchanged`)
    await bytes(res.body)
  }
  const enc = await through('/encoded', ae)
  assert.ok(enc.raw.equals(gz), 'an encoded body is never encoded twice')
  assert.equal(enc.res.headers['content-encoding'], 'gzip')
  assert.equal(enc.res.headers.vary, 'Accept-Encoding', 'the answer depends on Accept-Encoding (another client gets it decoded)')
  const plain = await through('/encoded', { 'accept-encoding': 'br' })
  assert.equal(plain.res.headers['content-encoding'], undefined, 'decoded for a client that does not accept gzip')
  assert.ok(plain.raw.equals(BODY))
})

test('never compressed, but Vary is set (the answer depends on the request): HEAD, x-no-compression, request no-transform', async () => {
  const ae = { 'accept-encoding': 'br, gzip' }
  const head = await through('/t', ae, route(), 'HEAD')
  assert.equal(head.res.headers['content-encoding'], undefined)
  assert.equal(head.res.headers.vary, 'Accept-Encoding', 'a HEAD carries the GET\'s Vary')
  assert.equal(head.raw.length, 0)
  for (const extra of [{ 'x-no-compression': '1' }, { 'cache-control': 'no-transform' }]) {
    const r = await through('/t', { ...ae, ...extra })
    assert.equal(r.res.headers['content-encoding'], undefined, JSON.stringify(extra))
    assert.equal(r.res.headers.vary, 'Accept-Encoding')
    assert.equal(r.res.headers.etag, '"v1"')
    assert.ok(r.raw.equals(BODY))
  }
})

test('a route with compression off returns the response itself', async () => {
  const up = await upstream('/t')
  assert.equal(stage.apply(route({ enabled: false }), { 'accept-encoding': 'gzip' }, 'GET', up), up)
  await bytes(up.body)
})

test('Vary is merged with the origin\'s, never duplicated, and * is left alone', async () => {
  const cases: [string | string[], string][] = [
    ['Accept-Language', 'Accept-Language, Accept-Encoding'],
    ['accept-encoding', 'accept-encoding'],
    ['Origin, Accept-Encoding', 'Origin, Accept-Encoding'],
    [['Origin', 'Accept-Encoding'], 'Origin, Accept-Encoding'],
    [['Origin', 'Cookie'], 'Origin, Cookie, Accept-Encoding'],
    ['*', '*']
  ]
  for (const [vary, expected] of cases) {
    origin.on('/vary', (_req, res) => { res.setHeader('content-type', 'text/html'); res.setHeader('vary', vary); res.end(BODY) })
    for (const ae of ['gzip', 'identity']) {
      const { res, raw } = await through('/vary', { 'accept-encoding': ae })
      const got = Array.isArray(res.headers.vary) ? res.headers.vary.join(', ') : res.headers.vary
      assert.equal(got, expected, `Vary ${JSON.stringify(vary)} with ${ae}`)
      assert.ok(decode(raw, res.headers['content-encoding']).equals(BODY))
    }
  }
})

test('ETags: a weak one stays as it is; a 304 gets the Vary its 200 had, and a client holding the weakened ETag gets that ETag back', async () => {
  serve('/weak', 200, { 'content-type': 'text/plain', etag: 'W/"w"' })
  assert.equal((await through('/weak', { 'accept-encoding': 'gzip' })).res.headers.etag, 'W/"w"')
  serve('/304', 304, { etag: '"v1"' })
  const held = stage.apply(route(), { 'accept-encoding': 'gzip', 'if-none-match': 'W/"v1"' }, 'GET', await upstream('/304'))
  assert.equal(held.status, 304)
  assert.equal(held.headers.etag, 'W/"v1"')
  assert.equal(held.headers.vary, 'Accept-Encoding')
  const plain = stage.apply(route(), { 'accept-encoding': 'gzip', 'if-none-match': '"v1"' }, 'GET', await upstream('/304'))
  assert.equal(plain.headers.etag, '"v1"', 'a client with the strong ETag gets it back as it is')
  assert.equal(plain.headers.vary, 'Accept-Encoding', 'and the Vary its 200 had (RFC 9110 §15.4.5)')
  serve('/304ims', 304, { 'last-modified': 'Mon, 07 Dec 2026 09:00:00 GMT', 'content-type': 'application/json' })
  const ims = stage.apply(route(), { 'accept-encoding': 'br', 'if-modified-since': 'Mon, 07 Dec 2026 09:00:00 GMT' }, 'GET', await upstream('/304ims'))
  assert.equal(ims.headers.vary, 'Accept-Encoding', 'a 304 to If-Modified-Since too')
})

test('digests of the identity bytes are dropped from compressed responses', async () => {
  serve('/digest', 200, { 'content-type': 'text/plain', 'content-md5': 'x', 'content-digest': 'sha-256=:x:', 'repr-digest': 'sha-256=:x:' })
  const { res } = await through('/digest', { 'accept-encoding': 'gzip' })
  for (const k of ['content-md5', 'content-digest', 'repr-digest']) assert.equal(res.headers[k], undefined, k)
})

test('a chunked body of unknown length is compressed; a Buffer body is measured, not assumed large', async () => {
  origin.on('/chunked', (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.write(BODY.subarray(0, 10)); res.end(BODY.subarray(10)) })
  const chunked = await through('/chunked', { 'accept-encoding': 'gzip' })
  assert.equal(chunked.res.headers['content-encoding'], 'gzip')
  assert.ok(zlib.gunzipSync(chunked.raw).equals(BODY))
  const small: ProxyResponse = { status: 200, headers: { 'content-type': 'text/plain' }, body: Buffer.from('tiny'), cacheResult: 'none' }
  assert.equal(stage.apply(route(), { 'accept-encoding': 'gzip' }, 'GET', small), small)
  const big: ProxyResponse = { status: 200, headers: { 'content-type': 'text/plain' }, body: BODY, cacheResult: 'none' }
  const out = stage.apply(route(), { 'accept-encoding': 'br' }, 'GET', big)
  assert.equal(out.headers['content-encoding'], 'br')
  assert.ok(zlib.brotliDecompressSync(await bytes(out.body)).equals(BODY))
})

test('extra content types from the route: exact and type/*, parameters and case ignored', async () => {
  serve('/custom', 200, { 'content-type': 'Application/Vnd.Thing; charset=utf-8' })
  serve('/family', 200, { 'content-type': 'font/woff-like' })
  const r = route({ contentTypes: ['application/vnd.thing', 'font/*'] })
  for (const p of ['/custom', '/family']) assert.equal((await through(p, { 'accept-encoding': 'gzip' }, r)).res.headers['content-encoding'], 'gzip', p)
  assert.equal((await through('/custom', { 'accept-encoding': 'gzip' })).res.headers['content-encoding'], undefined, 'not without the route listing it')
})

test('server-sent events pass through a compressing route event by event, before the origin ends', async () => {
  let release!: () => void
  const held = new Promise<void>((resolve) => { release = resolve })
  origin.on('/sse', async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
    res.write('data: one\n\n')
    await held
    res.write('data: two\n\n')
    res.end()
  })
  const up = await upstream('/sse')
  const res = stage.apply(route({ minBytes: 0 }), { 'accept-encoding': 'br, gzip' }, 'GET', up)
  assert.equal(res.headers['content-encoding'], undefined)
  const it = (res.body as Readable)[Symbol.asyncIterator]()
  assert.equal(String((await it.next()).value), 'data: one\n\n', 'the first event arrived while the origin still held the stream open')
  release()
  let rest = ''
  for (let n = await it.next(); !n.done; n = await it.next()) rest += String(n.value)
  assert.equal(rest, 'data: two\n\n')
})

test('a compressed stream that pauses is flushed: streamed JSON reaches the client before the origin ends', async () => {
  for (const enc of ['gzip', 'br'] as const) {
    let release!: () => void
    const held = new Promise<void>((resolve) => { release = resolve })
    origin.on('/watch', async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.write('{"type":"ADDED"}\n')
      await held
      res.end('{"type":"DELETED"}\n')
    })
    const res = stage.apply(route({ minBytes: 0, flushIdleMs: 5 }), { 'accept-encoding': enc }, 'GET', await upstream('/watch'))
    assert.equal(res.headers['content-encoding'], enc)
    // Decode as it comes: the first event must come out before the origin is released.
    const dec = enc === 'br' ? zlib.createBrotliDecompress() : zlib.createGunzip()
    ;(res.body as Readable).pipe(dec)
    const it = dec[Symbol.asyncIterator]()
    assert.equal(String((await it.next()).value), '{"type":"ADDED"}\n', `${enc}: first event decoded while the origin holds the stream`)
    release()
    let rest = ''
    for (let n = await it.next(); !n.done; n = await it.next()) rest += String(n.value)
    assert.equal(rest, '{"type":"DELETED"}\n')
  }
})

test('an origin that fails mid-body fails the compressed stream (no clean, truncated end)', async () => {
  origin.on('/cut', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(BODY.length * 2) })
    res.write(BODY, () => res.destroy())
  })
  const res = stage.apply(route(), { 'accept-encoding': 'gzip' }, 'GET', await upstream('/cut'))
  assert.equal(res.headers['content-encoding'], 'gzip')
  await assert.rejects(bytes(res.body))
})

test('a client that goes away destroys the upstream body', async () => {
  let release!: () => void
  const held = new Promise<void>((resolve) => { release = resolve })
  origin.on('/long', async (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.write(BODY); await held; res.end() })
  const up = await upstream('/long')
  const res = stage.apply(route({ flushIdleMs: 1 }), { 'accept-encoding': 'gzip' }, 'GET', up)
  const it = (res.body as Readable)[Symbol.asyncIterator]()
  await it.next() // some compressed bytes came through
  ;(res.body as Readable).destroy()
  await new Promise<void>((resolve) => (up.body as Readable).once('close', () => resolve()))
  assert.ok((up.body as Readable).destroyed)
  release()
})

test('bytes in and out are counted per encoding', async () => {
  const value = async (enc: string, direction: string) => {
    const m = (await metrics.compressionBytes.get()).values.find((v) => v.labels.encoding === enc && v.labels.direction === direction)
    return m?.value ?? 0
  }
  const inBefore = await value('gzip', 'in')
  const outBefore = await value('gzip', 'out')
  const { raw } = await through('/t', { 'accept-encoding': 'gzip' })
  assert.equal(await value('gzip', 'in') - inBefore, BODY.length)
  assert.equal(await value('gzip', 'out') - outBefore, raw.length)
  const r = stage.apply(route(), { 'accept-encoding': 'gzip' }, 'GET', { status: 200, headers: { 'content-type': 'text/plain' }, body: Readable.from([BODY]), cacheResult: 'none' })
  await bytes(r.body)
  assert.equal(await value('gzip', 'in') - inBefore, BODY.length * 2)
})
