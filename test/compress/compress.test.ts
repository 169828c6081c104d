// Compression through a real gateway: negotiation, what is never compressed, headers, SSE,
// and cache hits that compress nothing.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import zlib from 'node:zlib'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'
import { encoderRuns, decodeBounded, brotliStoreParams, BR_STORE_FULL_QUALITY_MAX_BYTES } from '../../src/compress/codec.js'

let origin: Origin
let gw: TestGateway
const JSON_BODY = JSON.stringify({ items: Array.from({ length: 200 }, (_, i) => ({ id: i, name: `item ${i}`, tags: ['a', 'b'] })) })

before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(simpleConfig(origin.url).replace('    upstream: origin\n', `    upstream: origin
    compression: { enabled: true, minBytes: 100, encodings: [br, gzip] }
  - name: deflate
    match: { pathPrefix: /deflate/ }
    upstream: origin
    compression: { enabled: true, minBytes: 100, encodings: [gzip, deflate] }
  - name: cached
    match: { pathPrefix: /cached/ }
    upstream: origin
    cache: { enabled: true }
    compression: { enabled: true, minBytes: 100, encodings: [br, gzip] }
`))
  origin.on('*', (req, res) => {
    const h: Record<string, string> = { 'content-type': 'application/json', 'cache-control': req.url?.startsWith('/cached/') ? 'max-age=60' : 'no-store', etag: '"strong"' }
    if (req.url?.includes('vary')) h.vary = 'Accept-Language'
    res.writeHead(200, h)
    res.end(JSON_BODY)
  })
})
after(async () => { await gw.close(); await origin.close() })

function decode (buf: Buffer, enc: string | undefined): Buffer {
  if (enc === 'br') return zlib.brotliDecompressSync(buf)
  if (enc === 'gzip') return zlib.gunzipSync(buf)
  if (enc === 'deflate') return zlib.inflateSync(buf)
  return buf
}

async function fetchRaw (path: string, headers: Record<string, string> = {}, method = 'GET') {
  const r = await request(gw.url + path, { headers, method: method as 'GET' })
  return { status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) }
}

const table: [string, string | undefined, string | undefined][] = [
  // [path, Accept-Encoding, expected Content-Encoding]
  ['/t', undefined, undefined],
  ['/t', 'gzip', 'gzip'],
  ['/t', 'br', 'br'],
  ['/t', 'gzip, br', 'br'],
  ['/t', 'br;q=0.5, gzip;q=0.9', 'gzip'],
  ['/t', 'identity', undefined],
  ['/t', '*', 'br'],
  ['/t', 'deflate', undefined],
  ['/t', 'zstd, compress', undefined],
  ['/t', 'br;q=0, gzip;q=0', undefined],
  ['/deflate/t', 'deflate', 'deflate'],
  ['/deflate/t', 'br, deflate;q=0.1', 'deflate']
]

for (const [path, ae, expected] of table) {
  test(`Accept-Encoding ${JSON.stringify(ae)} on ${path} → ${expected ?? 'identity'}, and the client gets the origin's bytes`, async () => {
    const r = await fetchRaw(path, ae === undefined ? {} : { 'accept-encoding': ae })
    assert.equal(r.status, 200)
    assert.equal(r.headers['content-encoding'], expected)
    assert.equal(decode(r.body, expected).toString(), JSON_BODY)
    assert.match(String(r.headers.vary), /^Accept-Encoding$/i, 'Vary: Accept-Encoding exactly once')
    if (expected) {
      assert.equal(r.headers['content-length'], undefined)
      assert.equal(r.headers.etag, 'W/"strong"', 'a strong ETag is weakened on compressed bytes')
    } else assert.equal(r.headers.etag, '"strong"')
  })
}

test('Vary is merged with the origin\'s, never duplicated', async () => {
  const r = await fetchRaw('/vary', { 'accept-encoding': 'gzip' })
  assert.equal(r.headers.vary, 'Accept-Language, Accept-Encoding')
})

test('never compressed: HEAD, x-no-compression, no-transform, existing encoding, small bodies, other types, 204/304', async () => {
  const special: Record<string, (res: import('node:http').ServerResponse) => void> = {
    '/notransform': (res) => { res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-transform' }); res.end('x'.repeat(500)) },
    '/encoded': (res) => { res.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'gzip' }); res.end(zlib.gzipSync('x'.repeat(500))) },
    '/small': (res) => { res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '4' }); res.end('tiny') },
    '/png': (res) => { res.writeHead(200, { 'content-type': 'image/png' }); res.end(Buffer.alloc(500)) },
    '/nocontent': (res) => { res.writeHead(204); res.end() }
  }
  for (const [p, h] of Object.entries(special)) origin.on(p, (_req, res) => h(res))
  const ae = { 'accept-encoding': 'br, gzip' }
  assert.equal((await fetchRaw('/t', ae, 'HEAD')).headers['content-encoding'], undefined)
  assert.equal((await fetchRaw('/t', { ...ae, 'x-no-compression': '1' })).headers['content-encoding'], undefined)
  assert.equal((await fetchRaw('/notransform', ae)).headers['content-encoding'], undefined)
  const enc = await fetchRaw('/encoded', ae)
  assert.equal(enc.headers['content-encoding'], 'gzip')
  assert.equal(zlib.gunzipSync(enc.body).toString(), 'x'.repeat(500), 'compressed once, not twice')
  assert.equal((await fetchRaw('/small', ae)).headers['content-encoding'], undefined)
  assert.equal((await fetchRaw('/png', ae)).headers['content-encoding'], undefined)
  assert.equal((await fetchRaw('/nocontent', ae)).status, 204)
})

test('server-sent events pass through a compressing route event by event', async () => {
  let release!: () => void
  const held = new Promise<void>((resolve) => { release = resolve })
  origin.on('/sse', async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write('data: first\n\n')
    await held
    res.end('data: second\n\n')
  })
  const r = await request(gw.url + '/sse', { headers: { 'accept-encoding': 'br, gzip' } })
  assert.equal(r.headers['content-encoding'], undefined)
  const it = r.body[Symbol.asyncIterator]()
  assert.equal(String((await it.next()).value), 'data: first\n\n', 'the first event arrived before the origin finished')
  release()
  let rest = ''
  for (;;) { const n = await it.next(); if (n.done) break; rest += String(n.value) }
  assert.equal(rest, 'data: second\n\n')
})

test('a cache hit serves a stored encoded copy and runs no compressor', async () => {
  const ae = { 'accept-encoding': 'br, gzip' }
  const miss = await fetchRaw('/cached/x', ae)
  assert.equal(miss.headers['cache-status'], 'sluice; fwd=miss')
  assert.equal(decode(miss.body, miss.headers['content-encoding'] as string).toString(), JSON_BODY)
  // The stored copies are encoded once, in the background: wait for them.
  for (let i = 0; i < 100; i++) {
    const r = await fetchRaw('/cached/x', ae)
    if (r.headers['content-encoding'] === 'br') break
    await new Promise((res) => setTimeout(res, 20))
  }
  const before = { ...encoderRuns }
  for (const [accept, enc] of [['br, gzip', 'br'], ['gzip', 'gzip'], ['identity', undefined], ['', undefined]] as const) {
    const r = await fetchRaw('/cached/x', accept ? { 'accept-encoding': accept } : {})
    assert.match(String(r.headers['cache-status']), /^sluice; hit/)
    assert.equal(r.headers['content-encoding'], enc)
    assert.equal(decode(r.body, enc).toString(), JSON_BODY)
    assert.equal(r.headers['content-length'], String(r.body.length))
  }
  assert.deepEqual(encoderRuns, before, 'no encoder ran while serving hits')
  const metrics = await (await request(gw.adminUrl + '/metrics')).body.text()
  assert.match(metrics, /sluice_compression_bytes_total\{encoding="br",direction="in"\} \d+/)
})

test('decoding an origin\'s encoded body stops at the bound (compression bomb)', async () => {
  const bomb = zlib.gzipSync(Buffer.alloc(10 * 1024 * 1024))
  assert.ok(bomb.length < 20000)
  await assert.rejects(decodeBounded(bomb, 'gzip', 1024 * 1024), (e: Error & { code?: string }) => e.code === 'SLUICE_ERR_DECOMPRESSED_TOO_LARGE')
  assert.equal((await decodeBounded(zlib.gzipSync('ok'), 'gzip', 100)).toString(), 'ok')
})

test('through the gateway, a compressed stream that pauses reaches the client before the origin ends', async () => {
  let release!: () => void
  const held = new Promise<void>((resolve) => { release = resolve })
  origin.on('/watch', async (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.write('{"type":"ADDED"}\n')
    await held
    res.end('{"type":"DELETED"}\n')
  })
  const r = await request(gw.url + '/watch', { headers: { 'accept-encoding': 'gzip' } })
  assert.equal(r.headers['content-encoding'], 'gzip')
  const dec = zlib.createGunzip()
  r.body.pipe(dec)
  const it = dec[Symbol.asyncIterator]()
  assert.equal(String((await it.next()).value), '{"type":"ADDED"}\n', 'the first line was flushed while the origin held the stream')
  release()
  let rest = ''
  for (let n = await it.next(); !n.done; n = await it.next()) rest += String(n.value)
  assert.equal(rest, '{"type":"DELETED"}\n')
})

test('stored Brotli copies use the configured quality up to 256 KiB, and at most 9 above it', async () => {
  const { constants } = await import('node:zlib')
  const q = (quality: number, length: number) => (brotliStoreParams(quality, length).params as Record<number, number>)[constants.BROTLI_PARAM_QUALITY]
  assert.equal(q(11, 100 * 1024), 11)
  assert.equal(q(11, BR_STORE_FULL_QUALITY_MAX_BYTES), 11)
  assert.equal(q(11, BR_STORE_FULL_QUALITY_MAX_BYTES + 1), 9)
  assert.equal(q(5, 4 * 1024 * 1024), 5, 'a lower configured quality is kept')
})

// A streamed body whose chunks never pause still reaches the client while it streams; a cache
// 304 to a client holding an encoded copy carries that copy's weak ETag and a Vary with
// Accept-Encoding, as the 200 did; a no-transform response keeps the coding the origin gave it.
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
    res.end(JSON_BODY)
  })
  await fetchRaw('/cached/a', { 'accept-encoding': 'br' })
  let a = await fetchRaw('/cached/a', { 'accept-encoding': 'br' })
  for (let i = 0; i < 50 && a.headers['content-encoding'] !== 'br'; i++) { await new Promise((resolve) => setTimeout(resolve, 20)); a = await fetchRaw('/cached/a', { 'accept-encoding': 'br' }) }
  assert.equal(a.headers['content-encoding'], 'br')
  assert.equal(a.headers.etag, 'W/"strong"')
  const b = await fetchRaw('/cached/a', { 'accept-encoding': 'br', 'if-none-match': 'W/"strong"' })
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
  await fetchRaw('/cached/nt', { 'accept-encoding': 'gzip' })
  const hit = await fetchRaw('/cached/nt')
  assert.match(String(hit.headers['cache-status']), /^sluice; hit/)
  assert.equal(hit.headers['content-encoding'], 'gzip', 'the coding is not changed')
  assert.equal(zlib.gunzipSync(hit.body).toString(), 'x'.repeat(5000))
})

test('an origin that sends gzip to a cache fill (which asked for identity): the miss is decoded for a client that does not accept gzip, passed as sent (with Vary) to one that does, and the hit matches', async () => {
  const text = 'pre-compressed '.repeat(200)
  origin.on('/cached/static.js', (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/javascript', 'content-encoding': 'gzip', 'cache-control': 'no-store', etag: '"gz"' })
    res.end(zlib.gzipSync(text))
  })
  // Not stored (no-store, so a bypass): the client asked for identity.
  const bypass = await fetchRaw('/cached/static.js', { 'accept-encoding': 'identity' })
  assert.equal(bypass.headers['content-encoding'], undefined)
  assert.equal(bypass.body.toString(), text)
  assert.match(String(bypass.headers.vary), /Accept-Encoding/i)
  assert.equal(bypass.headers.etag, 'W/"gz"', 'the gzip bytes\' strong ETag does not name the decoded ones')
  assert.equal(bypass.headers['content-length'], undefined)
  // A miss that is stored, for a client with no Accept-Encoding.
  origin.on('/cached/stored.js', (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/javascript', 'content-encoding': 'gzip', 'cache-control': 'max-age=60', etag: '"gz"' })
    res.end(zlib.gzipSync(text))
  })
  const miss = await fetchRaw('/cached/stored.js')
  assert.match(String(miss.headers['cache-status']), /fwd=miss/)
  assert.equal(miss.headers['content-encoding'], undefined)
  assert.equal(miss.body.toString(), text)
  assert.match(String(miss.headers.vary), /Accept-Encoding/i)
  // Stored once its body is decoded (off the event loop): until then a request collapses onto the fill.
  let hit = await fetchRaw('/cached/stored.js')
  for (let i = 0; i < 100 && !/hit/.test(String(hit.headers['cache-status'])); i++) { await new Promise((resolve) => setTimeout(resolve, 10)); hit = await fetchRaw('/cached/stored.js') }
  assert.match(String(hit.headers['cache-status']), /hit/)
  assert.equal(hit.body.toString(), text)
  // A client that accepts gzip gets the origin's bytes on a miss, with Vary.
  origin.on('/cached/other.js', (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/javascript', 'content-encoding': 'gzip', 'cache-control': 'no-store' })
    res.end(zlib.gzipSync(text))
  })
  const gz = await fetchRaw('/cached/other.js', { 'accept-encoding': 'gzip' })
  assert.equal(gz.headers['content-encoding'], 'gzip')
  assert.equal(zlib.gunzipSync(gz.body).toString(), text)
  assert.match(String(gz.headers.vary), /Accept-Encoding/i)
})
