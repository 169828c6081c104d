// Review: Vary: Accept-Encoding on every response whose bytes depended on Accept-Encoding, and
// an origin's Content-Encoding: identity (no coding at all). A response the gateway would have
// compressed for a client that asked must say so to downstream shared caches (a CDN, a browser
// cache), on misses, hits (the fast path too), HEAD and 304s; otherwise a cache downstream may
// store the identity bytes without Vary and keep serving them to every client.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import zlib from 'node:zlib'
import { request } from 'undici'
import type { IncomingHttpHeaders } from 'node:http'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'

let origin: Origin
let gw: TestGateway

// Three routes: cached with only deflate (the cache keeps no deflate copy: its entries stay
// identity-only), cached with br and gzip, and uncached with gzip.
before(async () => {
  origin = await startOrigin()
  gw = await startTestGateway(simpleConfig(origin.url).replace(`  - name: all
    match: { pathPrefix: / }
    upstream: origin
`, `  - name: deflate-only
    match: { pathPrefix: /d/ }
    upstream: origin
    cache: { enabled: true }
    compression: { enabled: true, minBytes: 100, encodings: [deflate] }
  - name: cached
    match: { pathPrefix: /c/ }
    upstream: origin
    cache: { enabled: true }
    compression: { enabled: true, minBytes: 100, encodings: [br, gzip] }
  - name: uncached
    match: { pathPrefix: /u/ }
    upstream: origin
    compression: { enabled: true, minBytes: 100, encodings: [gzip] }
`))
})
after(async () => { await gw.close(); await origin.close() })

const BODY = JSON.stringify({ items: Array.from({ length: 100 }, (_, i) => ({ id: i, name: `item ${i}` })) })

async function fetchRaw (path: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET') {
  const r = await request(gw.url + path, { method, headers })
  return { status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) }
}

/** The Vary tokens, lower case, in order (a repeated token shows up twice). */
function varyTokens (h: IncomingHttpHeaders): string[] {
  const v = h.vary
  if (v === undefined) return []
  return (Array.isArray(v) ? v.join(',') : v).split(',').map((t) => t.trim().toLowerCase()).filter((t) => t !== '')
}

function assertVaries (h: IncomingHttpHeaders, what: string, originVary?: string): void {
  const tokens = varyTokens(h)
  assert.equal(tokens.filter((t) => t === 'accept-encoding').length, 1, `${what}: Vary has Accept-Encoding once (got ${String(h.vary)})`)
  if (originVary !== undefined) assert.equal(tokens.filter((t) => t === originVary).length, 1, `${what}: the origin's Vary ${originVary} is kept once (got ${String(h.vary)})`)
}

test('a compressible entry kept identity-only (a deflate-only route) says Vary: Accept-Encoding on hits, fast path, HEAD and 304, as its miss did', async () => {
  origin.on('/d/list', (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', etag: '"v1"', 'cache-control': 'max-age=60', vary: 'Origin' })
    res.end(BODY)
  })
  const miss = await fetchRaw('/d/list', { 'accept-encoding': 'deflate' })
  assert.equal(miss.headers['content-encoding'], 'deflate', 'the miss is compressed on the fly')
  assertVaries(miss.headers, 'miss', 'origin')

  // A plain GET: the fast path answers it.
  let hit = await fetchRaw('/d/list')
  await until('a hit', async () => { hit = await fetchRaw('/d/list'); return String(hit.headers['cache-status']).startsWith('sluice; hit') })
  assert.equal(hit.body.toString(), BODY)
  assertVaries(hit.headers, 'identity hit (fast path)', 'origin')

  const deflateClient = await fetchRaw('/d/list', { 'accept-encoding': 'deflate' })
  assert.match(String(deflateClient.headers['cache-status']), /^sluice; hit/)
  assert.equal(deflateClient.headers['content-encoding'], undefined, 'the cache has no deflate copy: identity')
  assertVaries(deflateClient.headers, 'hit for a deflate client', 'origin')

  const head = await fetchRaw('/d/list', {}, 'HEAD')
  assert.match(String(head.headers['cache-status']), /^sluice; hit/)
  assertVaries(head.headers, 'HEAD hit', 'origin')

  const nm = await fetchRaw('/d/list', { 'if-none-match': '"v1"' })
  assert.equal(nm.status, 304)
  assertVaries(nm.headers, '304 from a hit', 'origin')
})

test('clients that joined a fill (coalesced) get Vary: Accept-Encoding although the stored copies are not made yet', async () => {
  let release!: () => void
  const held = new Promise<void>((resolve) => { release = resolve })
  origin.on('/c/slow', async (_req, res) => {
    await held
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=60' })
    res.end(BODY)
  })
  const all = Promise.all([1, 2, 3].map(() => fetchRaw('/c/slow', { 'accept-encoding': 'gzip' })))
  await until('the fill reached the origin', async () => origin.count('/c/slow') > 0)
  // Let the other two requests join the fill before it ends.
  await new Promise((resolve) => setTimeout(resolve, 200))
  release()
  const rs = await all
  assert.equal(origin.count('/c/slow'), 1, 'one fill')
  for (const r of rs) {
    const body = r.headers['content-encoding'] === 'gzip' ? zlib.gunzipSync(r.body) : r.body
    assert.equal(body.toString(), BODY)
    assertVaries(r.headers, `${String(r.headers['cache-status'])}`)
  }
  assert.ok(rs.some((r) => String(r.headers['cache-status']).includes('collapsed')), 'some requests were coalesced')
})

test('Content-Encoding: identity from the origin is no coding: dropped, and the body compressed as usual (uncached route)', async () => {
  origin.on('/u/ident', (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'identity' })
    res.end(BODY)
  })
  const gz = await fetchRaw('/u/ident', { 'accept-encoding': 'gzip' })
  assert.equal(gz.headers['content-encoding'], 'gzip')
  assert.equal(zlib.gunzipSync(gz.body).toString(), BODY)
  assertVaries(gz.headers, 'compressed')
  const plain = await fetchRaw('/u/ident')
  assert.equal(plain.headers['content-encoding'], undefined, 'identity is no coding: the field goes')
  assert.equal(plain.body.toString(), BODY)
  assertVaries(plain.headers, 'identity')
})

test('Content-Encoding: identity from the origin on a cached route: stored copies are made and served, identity clients get no Content-Encoding', async () => {
  origin.on('/c/ident', (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'Identity', 'cache-control': 'max-age=60' })
    res.end(BODY)
  })
  const miss = await fetchRaw('/c/ident', { 'accept-encoding': 'gzip' })
  assert.equal(miss.headers['content-encoding'], 'gzip', 'the miss is compressed on the fly')
  assert.equal(zlib.gunzipSync(miss.body).toString(), BODY)
  let hit = miss
  await until('a hit from the stored gzip copy', async () => {
    hit = await fetchRaw('/c/ident', { 'accept-encoding': 'gzip' })
    return String(hit.headers['cache-status']).startsWith('sluice; hit') && hit.headers['content-encoding'] === 'gzip'
  })
  assert.equal(zlib.gunzipSync(hit.body).toString(), BODY)
  const plain = await fetchRaw('/c/ident')
  assert.match(String(plain.headers['cache-status']), /^sluice; hit/)
  assert.equal(plain.headers['content-encoding'], undefined)
  assert.equal(plain.body.toString(), BODY)
  assertVaries(plain.headers, 'identity hit')
})

test('a stored response the origin sent without Date is served with the Date it was received, not each hit\'s own (RFC 9110 §6.6.1)', async () => {
  // A Date that moves with each hit, next to an Age, makes a downstream cache count the age twice
  // (Expires - Date shrinks as Age grows): it goes stale early.
  origin.on('/c/nodate', (_req, res) => {
    res.sendDate = false
    res.writeHead(200, { 'content-type': 'image/png', 'cache-control': 'max-age=60' })
    res.end(Buffer.alloc(64, 1))
  })
  await fetchRaw('/c/nodate')
  let first = await fetchRaw('/c/nodate')
  await until('a hit', async () => { first = await fetchRaw('/c/nodate'); return String(first.headers['cache-status']).startsWith('sluice; hit') })
  let later = first
  await until('a hit two seconds old', async () => { later = await fetchRaw('/c/nodate'); return Number(later.headers.age) >= 2 }, { intervalMs: 250, tries: 40 })
  assert.equal(typeof first.headers.date, 'string')
  assert.equal(later.headers.date, first.headers.date, 'the same Date on every hit: when the response was received')
  const head = await fetchRaw('/c/nodate', {}, 'HEAD')
  assert.equal(head.headers.date, first.headers.date, 'HEAD (fast path) too')
})

test('If-None-Match: * on a hit of a stored 200 without ETag is a 304: a current representation exists (RFC 9110 §13.1.2)', async () => {
  origin.on('/c/noetag', (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=60' })
    res.end(BODY)
  })
  await fetchRaw('/c/noetag')
  await until('a hit', async () => String((await fetchRaw('/c/noetag')).headers['cache-status']).startsWith('sluice; hit'))
  const r = await fetchRaw('/c/noetag', { 'if-none-match': '*' })
  assert.match(String(r.headers['cache-status']), /^sluice; hit/)
  assert.equal(r.status, 304)
  assert.equal(r.body.length, 0)
  assertVaries(r.headers, '304')
})
