// Range review (RFC 9110 §14, RFC 9111 §3.3–3.4) through a real gateway and loopback origin:
// a stale complete entry is refreshed by range requests, an unsatisfiable range of a stored
// response is a 416 from the cache, a Range that is not valid syntax and a HEAD's Range are
// ignored (the stored response answers).
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, cachedConfig, getText, type TestGateway } from '../helpers/gateway.js'

let origin: Origin
let gw: TestGateway
let clock = Date.now()

before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(cachedConfig(origin.url), { now: () => clock })
})
after(async () => { await gw.close(); await origin.close() })

const get = (path: string, headers: Record<string, string> = {}) => getText(gw.url, path, headers)
const settle = async () => await new Promise((resolve) => setTimeout(resolve, 50))

/** An origin of `text` that answers one byte range (206), or all of it; ETag `etag`. */
function served (text: string, etag: string, cacheControl = 'max-age=60') {
  return (req: { headers: Record<string, string | string[] | undefined>, method?: string }, res: import('node:http').ServerResponse) => {
    // Date from the gateway's clock, so that ages are counted from it.
    const h: Record<string, string> = { 'cache-control': cacheControl, 'content-type': 'text/plain', etag, 'accept-ranges': 'bytes', date: new Date(clock).toUTCString() }
    if (req.headers['if-none-match'] === etag) { res.writeHead(304, h); res.end(); return }
    const m = /^bytes=(\d*)-(\d*)$/.exec(String(req.headers.range ?? ''))
    if (m === null) { res.writeHead(200, { ...h, 'content-length': String(text.length) }); res.end(text); return }
    const start = m[1] === '' ? text.length - Number(m[2]) : Number(m[1])
    const end = m[1] === '' || m[2] === '' ? text.length - 1 : Math.min(Number(m[2]), text.length - 1)
    if (start >= text.length) { res.writeHead(416, { 'content-range': `bytes */${text.length}` }); res.end(); return }
    res.writeHead(206, { ...h, 'content-range': `bytes ${start}-${end}/${text.length}` })
    res.end(text.slice(start, end + 1))
  }
}

test('range requests on a stale complete entry refresh it (once); with stale-while-revalidate the stale bytes answer meanwhile', async () => {
  origin.on('/stale', served('0123456789', '"s1"'))
  assert.equal((await get('/stale')).status, 200)
  await settle()
  clock += 120_000 // past max-age=60, no stale-while-revalidate: must be revalidated
  // The range itself goes to the origin (a stale answer is not allowed), and the entry is revalidated meanwhile.
  const first = await get('/stale', { range: 'bytes=2-4' })
  assert.equal(first.status, 206)
  assert.equal(first.body, '234')
  await settle()
  const revalidations = origin.seen.filter((s) => s.url === '/stale' && s.headers['if-none-match'] === '"s1"')
  assert.equal(revalidations.length, 1, 'the stale entry was revalidated in the background')
  assert.equal(revalidations[0].headers.range, undefined)
  const before = origin.count('/stale')
  // Fresh again: later ranges are cut from the cache instead of going to the origin for ever.
  const again = await get('/stale', { range: 'bytes=5-6' })
  assert.equal(again.body, '56')
  assert.match(String(again.headers['cache-status']), /^sluice; hit; ttl=\d+$/)
  assert.equal(origin.count('/stale'), before)

  origin.on('/swr', served('abcdefghij', '"w1"', 'max-age=60, stale-while-revalidate=600'))
  await get('/swr')
  await settle()
  clock += 120_000
  const stale = await get('/swr', { range: 'bytes=0-2' })
  assert.equal(stale.status, 206)
  assert.equal(stale.body, 'abc')
  assert.equal(stale.headers['content-range'], 'bytes 0-2/10')
  assert.match(String(stale.headers['cache-status']), /^sluice; fwd=stale; ttl=-\d+; detail=STALE-WHILE-REVALIDATE$/)
  await settle()
  assert.equal(origin.seen.filter((s) => s.url === '/swr' && s.headers.range !== undefined).length, 0, 'no range went to the origin')
  assert.equal(origin.seen.filter((s) => s.url === '/swr' && s.headers['if-none-match'] === '"w1"').length, 1)
  const fresh = await get('/swr', { range: 'bytes=-2' })
  assert.equal(fresh.body, 'ij')
  assert.match(String(fresh.headers['cache-status']), /^sluice; hit; ttl=\d+$/)
})

test('a range that starts past the end of a stored response is a 416 from the cache, with Content-Range: bytes */LEN', async () => {
  origin.on('/past', served('0123456789', '"p1"', 'max-age=3600'))
  await get('/past')
  await settle()
  for (const range of ['bytes=10-', 'bytes=10-20', 'bytes=99999999999999999999-', 'bytes=-0']) {
    const r = await get('/past', { range })
    assert.equal(r.status, 416, range)
    assert.equal(r.headers['content-range'], 'bytes */10', range)
    assert.equal(r.body, '', range)
    assert.match(String(r.headers['cache-status']), /^sluice; hit; ttl=\d+$/, range)
  }
  // A range that starts inside is cut to the end; If-Range that no longer matches: all of it.
  const tail = await get('/past', { range: 'bytes=8-20' })
  assert.equal(tail.status, 206)
  assert.equal(tail.headers['content-range'], 'bytes 8-9/10')
  assert.equal(tail.headers['content-length'], '2')
  assert.equal(tail.body, '89')
  const changed = await get('/past', { range: 'bytes=10-', 'if-range': '"other"' })
  assert.equal(changed.status, 200)
  assert.equal(changed.body, '0123456789')
  assert.equal(origin.count('/past'), 1)

  // The same from a stored part, whose complete length is known.
  origin.on('/past-part', served('abcdefghij', '"q1"', 'max-age=3600'))
  assert.equal((await get('/past-part', { range: 'bytes=0-4' })).status, 206)
  await settle()
  const r = await get('/past-part', { range: 'bytes=12-' })
  assert.equal(r.status, 416)
  assert.equal(r.headers['content-range'], 'bytes */10')
  assert.equal(origin.count('/past-part'), 1)
})

test('a bytes Range that is not valid syntax, and a HEAD\'s Range, are ignored: the stored response answers', async () => {
  origin.on('/ignored', served('0123456789', '"i1"', 'max-age=3600'))
  await get('/ignored')
  await settle()
  for (const range of ['bytes=abc', 'bytes=5-2', 'bytes=', 'bytes=1-2,x', 'bytes=--3']) {
    const r = await get('/ignored', { range })
    assert.equal(r.status, 200, range)
    assert.equal(r.body, '0123456789', range)
    assert.match(String(r.headers['cache-status']), /^sluice; hit; ttl=\d+$/, range)
  }
  const head = await request(gw.url + '/ignored', { method: 'HEAD', headers: { range: 'bytes=0-3' } })
  await head.body.text()
  assert.equal(head.statusCode, 200)
  assert.equal(head.headers['content-length'], '10')
  assert.equal(head.headers['content-range'], undefined)
  assert.match(String(head.headers['cache-status']), /^sluice; hit; ttl=\d+$/)
  assert.equal(origin.count('/ignored'), 1)
  // Several ranges and other units still go to the origin as they are.
  const multi = await get('/ignored', { range: 'bytes=0-1,4-5' })
  assert.match(String(multi.headers['cache-status']), /detail=RANGE/)
  assert.equal(origin.seen.at(-1)?.headers.range, 'bytes=0-1,4-5')
})

test('a 206 in a content coding (the client accepted gzip only, the origin sent no Vary) is not stored: a client without gzip never gets its bytes', async () => {
  const text = 'identity bytes of the resource, long enough to cut'
  origin.on('/coded-range', (req, res) => {
    const gz = /gzip/.test(String(req.headers['accept-encoding'] ?? ''))
    const h: Record<string, string> = { 'cache-control': 'max-age=60', 'content-type': 'text/plain', etag: '"c1"', date: new Date(clock).toUTCString() }
    // A range of the gzip stream's bytes for a gzip client (what an origin that compresses
    // before it cuts ranges sends); of the identity bytes otherwise.
    const body = gz ? Buffer.from('\x1f\x8b\x08\x00GZIPPEDSTREAM', 'latin1') : Buffer.from(text)
    res.writeHead(206, { ...h, ...(gz ? { 'content-encoding': 'gzip' } : {}), 'content-range': `bytes 0-9/${gz ? 100 : text.length}` })
    res.end(body.subarray(0, 10))
  })
  // identity;q=0: a client that accepts identity has its range forwarded asking for identity
  // (review-cache-variants.test.ts); this one keeps its own Accept-Encoding.
  const a = await get('/coded-range', { range: 'bytes=0-9', 'accept-encoding': 'gzip, identity;q=0' })
  assert.equal(a.status, 206)
  assert.equal(a.headers['content-encoding'], 'gzip')
  assert.match(String(a.headers['cache-status']), /detail=CONTENT-ENCODING/)
  await settle()
  const b = await get('/coded-range', { range: 'bytes=0-9' })
  assert.equal(b.status, 206)
  assert.equal(b.headers['content-encoding'], undefined, 'the gzip part was stored and served to a client that did not accept gzip')
  assert.equal(b.body, text.slice(0, 10))
})
