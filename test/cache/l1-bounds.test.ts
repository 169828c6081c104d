// L1's bounds (cache.memory.maxBytes, maxEntryBytes) and its eviction: what a refused, replaced,
// grown or evicted entry leaves behind, and what an entry is counted as holding.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { Value } from '@sinclair/typebox/value'
import { MemoryStore } from '../../src/httpcache/memory.js'
import { entrySize, type CacheEntry } from '../../src/httpcache/entry.js'
import { outHeaders } from '../../src/httpcache/respond.js'
import { writeStoredHead } from '../../src/send.js'
import { CompressionRouteSchema } from '../../src/compress/config.js'
import { startOrigin } from '../helpers/origin.js'
import { startTestGateway, cachedConfig, getText } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'

const key = (path: string) => `G|example.com|${path}`
function entry (path: string, over: Partial<CacheEntry> = {}): CacheEntry {
  return {
    key: key(path), base: key(path), path, status: 200,
    headers: { 'content-type': 'text/plain', etag: '"x"', 'content-length': '10' },
    body: Buffer.alloc(10, 97),
    requestTime: 0, responseTime: 0, lifetimeMs: 60000, initialAgeMs: 0,
    swrMs: 0, sieMs: 0, mustRevalidate: false, noCache: false, tags: [], varyNames: [], authOk: false,
    ...over
  }
}

const origin = await startOrigin()
after(async () => { await origin.close() })
/** A gateway caching every path, with the given L1 bounds and no L2. */
async function gateway (maxBytes: number, maxEntryBytes: number, now?: () => number) {
  const gw = await startTestGateway(cachedConfig(origin.url) + `cache:\n  memory: { maxBytes: ${maxBytes}, maxEntryBytes: ${maxEntryBytes} }\n`, { now })
  after(async () => { await gw.close() })
  return gw
}

test('eviction drops an expired entry at the front even if it was hit, before a fresh one', () => {
  let t = 0
  const size = entrySize(entry('/a'))
  const s = new MemoryStore(3 * size, 1 << 20, () => t)
  let expired = 0
  s.dropped.expired = { inc () { expired++ } }
  s.set(entry('/a'), 1000); s.set(entry('/b'), 100000); s.set(entry('/c'), 100000)
  assert.ok(s.get(key('/a'))) // hit while fresh: its second-chance bit is set
  t = 5000 // /a has expired, /b and /c are fresh
  s.set(entry('/d'), 100000) // one entry must go
  const slots = (s as unknown as { slots: Map<string, unknown> }).slots
  assert.equal(slots.has(key('/a')), false, 'the expired entry went')
  assert.equal(expired, 1)
  for (const p of ['/b', '/c', '/d']) assert.ok(s.get(key(p)), `${p} kept`)
})

test('a replacement L1 refuses takes the entry it would have replaced out of L1', () => {
  const s = new MemoryStore(1 << 20, 4096, () => 0)
  assert.equal(s.set(entry('/a', { body: Buffer.from('old') }), 60000), true)
  assert.equal(s.set(entry('/a', { body: Buffer.alloc(5000) }), 60000), false, 'larger than maxEntryBytes')
  assert.equal(s.get(key('/a')), undefined, 'the superseded response is not served in place of the newer one')
  assert.equal(s.set(entry('/b'), 60000), true)
  assert.equal(s.set(entry('/b'), 0), false, 'no time left to keep it')
  assert.equal(s.get(key('/b')), undefined)
  assert.deepEqual(s.stats(), { entries: 0, bytes: 0 })
})

test('storing into a full L1 whose entries were all hit keeps the new entry', () => {
  const size = entrySize(entry('/a'))
  const s = new MemoryStore(3 * size, 1 << 20, () => 0)
  for (const p of ['/a', '/b', '/c']) s.set(entry(p), 60000)
  for (const p of ['/a', '/b', '/c']) assert.ok(s.get(key(p)))
  assert.equal(s.set(entry('/d'), 60000), true)
  assert.ok(s.get(key('/d')), 'the entry set() reported stored is there')
  assert.equal(s.stats().entries, 3)
  assert.ok(s.stats().bytes <= 3 * size)
})

test('L1 stores a body of up to maxEntryBytes (its bookkeeping counts against maxBytes only)', () => {
  const s = new MemoryStore(1 << 20, 65536, () => 0)
  const e = entry('/b', { body: Buffer.alloc(65536, 97) })
  assert.equal(s.set(e, 60000), true)
  assert.equal(s.get(e.key), e)
  assert.equal(s.stats().bytes, entrySize(e), 'the whole entry counts against maxBytes')
  assert.equal(s.set(entry('/c', { body: Buffer.alloc(65537, 97) }), 60000), false)
})

test('a response of nearly maxEntryBytes is stored, and the next request hits', async () => {
  const gw = await gateway(1 << 20, 65536)
  const body = Buffer.alloc(65000, 97)
  origin.on('/near', (_q, r) => { r.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'application/octet-stream', 'content-length': String(body.length) }); r.end(body) })
  const a = await getText(gw.url, '/near')
  assert.equal(a.headers['cache-status'], 'sluice; fwd=miss; stored')
  await new Promise((r) => setImmediate(r))
  const b = await getText(gw.url, '/near')
  assert.match(String(b.headers['cache-status']), /hit/)
  assert.equal(origin.count('/near'), 1)
})

test('a response L1 cannot hold (larger than maxBytes with its bookkeeping) is not said to be stored without an L2', async () => {
  const gw = await gateway(65536, 65536)
  const body = Buffer.alloc(65000, 97)
  origin.on('/sized', (_q, r) => { r.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'application/octet-stream', 'content-length': String(body.length) }); r.end(body) })
  origin.on('/chunked', (_q, r) => { r.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'application/octet-stream' }); r.end(body) })
  // Known length: decided from the headers, before the body streams.
  const a = await getText(gw.url, '/sized')
  assert.equal(a.headers['cache-status'], 'sluice; fwd=bypass; detail=TOO-LARGE')
  assert.equal(a.body.length, body.length)
  // Unknown length, answered once the fill is done (a HEAD): the store's refusal is what it says.
  const r = await fetch(gw.url + '/chunked', { method: 'HEAD' })
  assert.equal(r.headers.get('cache-status'), 'sluice; fwd=bypass; detail=TOO-LARGE')
})

test('an entry\'s counted size covers the header copies it holds per coding (ready-to-send fields and head block)', () => {
  const big = 'x'.repeat(4000)
  const e = entry('/h', { headers: { 'content-type': 'text/plain', etag: '"x"', 'content-length': '10', 'content-security-policy': big, link: big }, gzip: Buffer.alloc(5), br: Buffer.alloc(4) })
  const s = new MemoryStore(1 << 22, 1 << 22, () => 0)
  s.set(e, 60000)
  const counted = s.stats().bytes
  const route = { name: 'r', cache: {} as never, compression: Value.Default(CompressionRouteSchema, { enabled: true }) as never }
  const chars = (h: Record<string, unknown>) => { let n = 0; for (const k in h) n += k.length + String(h[k]).length; return n }
  let held = chars(e.headers) // the ready-to-send copies share these strings, so they add no characters
  for (const c of ['identity', 'gzip', 'br'] as const) {
    const h = outHeaders(e, c, route as never)
    const o: Record<string, unknown> = { shouldKeepAlive: true, sendDate: true, _header: null, _defaultKeepAlive: true, _maxRequestsPerSocket: 0, _keepAliveTimeout: 5000, end () {} }
    writeStoredHead(o as never, { status: 200, headers: h, body: e.body } as never, { name: 'x-request-id', header: 'x-request-id' } as never, 'id1')
    held += (o._header as string).length // the head block per coding (send.ts), kept while the entry is
  }
  const bodies = e.body.length + e.gzip!.length + e.br!.length
  assert.ok(held + bodies <= counted, `header bytes held ${held} + bodies ${bodies} > counted ${counted}`)
  assert.equal(s.stats().bytes, counted, 'hits do not change the count')
})

test('an entry whose encoded copies would take it past maxBytes drops them, not the rest of L1', () => {
  const s = new MemoryStore(20000, 20000, () => 0)
  for (const p of ['/a', '/b', '/c']) s.set(entry(p), 60000)
  const big = entry('/big', { body: Buffer.alloc(12000, 97) })
  assert.equal(s.set(big, 60000), true)
  big.gzip = Buffer.alloc(9000)
  s.grew(big.key)
  assert.equal(s.stats().entries, 4, 'nothing evicted')
  assert.equal(s.get(big.key), big, 'the grown entry is kept')
  assert.equal(big.gzip, undefined, 'without the copy that does not fit')
  assert.equal(s.stats().bytes, [...['/a', '/b', '/c'].map((p) => entrySize(entry(p))), entrySize(big)].reduce((x, y) => x + y))
})

test('encoded copies are kept only while the bodies together stay within maxEntryBytes', () => {
  const s = new MemoryStore(1 << 20, 10000, () => 0)
  const e = entry('/g', { body: Buffer.alloc(8000, 97) })
  assert.equal(s.set(e, 60000), true)
  e.gzip = Buffer.alloc(5000); e.br = Buffer.alloc(1500)
  s.grew(e.key)
  assert.equal(s.get(e.key), e)
  assert.equal(e.gzip, undefined, 'the copy that does not fit is dropped')
  assert.equal(e.br?.length, 1500, 'the one that fits is kept')
  assert.equal(s.stats().bytes, entrySize(e))
  // An entry stored with a copy already (the origin's gzip, kept beside the decoded body).
  const o = entry('/o', { body: Buffer.alloc(8000, 97), gzip: Buffer.alloc(3000) })
  assert.equal(s.set(o, 60000), true)
  assert.equal(o.gzip, undefined)
  assert.equal(s.get(o.key), o)
})

test('an entry whose encoded copies (not its body) do not fit is stored with as few copies dropped as need be', () => {
  const identityOnly = entrySize(entry('/a'))
  // An L2 hit promoted to L1 carries its gzip and br copies; only the larger one has to go.
  const s = new MemoryStore(identityOnly + 2000 + 3500, 1 << 20, () => 0)
  const e = entry('/a', { gzip: Buffer.alloc(4000, 1), br: Buffer.alloc(3000, 2) })
  assert.equal(s.set(e, 60000), true, 'kept, with copies dropped')
  assert.ok(s.get(key('/a')))
  assert.equal(e.gzip, undefined, 'the larger copy went')
  assert.equal(e.br?.length, 3000, 'the smaller one, which fits, stayed')
})

/** The gateway's L1 size (its /admin/status figures). */
const memory = (g: { gw: { cache: { stats (): Record<string, unknown> } } }) => g.gw.cache.stats().memory as { entries: number; bytes: number; maxBytes: number }

test('a stale-while-revalidate refresh whose new body is past maxEntryBytes takes the old entry out of L1', async () => {
  let t = Date.now()
  const gw = await gateway(1 << 20, 4096, () => t)
  const large = Buffer.alloc(8000, 98)
  let big = false
  // Chunked (no Content-Length): the refresh finds out it is too large while the body streams.
  origin.on('/swr-grow', (_q, r) => { r.writeHead(200, { 'cache-control': 'max-age=1, stale-while-revalidate=600', 'content-type': 'text/plain' }); r.end(big ? large : 'old') })
  assert.equal((await getText(gw.url, '/swr-grow')).body, 'old')
  t += 2000
  big = true
  const stale = await getText(gw.url, '/swr-grow')
  assert.equal(stale.body, 'old')
  assert.match(String(stale.headers['cache-status']), /STALE-WHILE-REVALIDATE/)
  // Once the refresh has seen the new response, the old body is no longer served.
  let last = stale
  await until('an answer other than the superseded body', async () => { last = await getText(gw.url, '/swr-grow'); return last.body !== 'old' }, { tries: 40, detail: () => last.headers['cache-status'] })
  assert.equal(last.body, large.toString())
  assert.deepEqual(memory(gw), { entries: 0, bytes: 0, maxBytes: 1 << 20 })
})

for (const sized of [false, true]) {
  test(`a miss on an expired entry whose new body is past maxEntryBytes (${sized ? 'Content-Length' : 'chunked'}) takes the old entry out of L1`, async () => {
    let t = Date.now()
    const gw = await gateway(1 << 20, 4096, () => t)
    const large = Buffer.alloc(8000, 98)
    const path = `/expired-grow-${sized ? 'sized' : 'chunked'}`
    let mode: 'old' | 'big' | 'fail' = 'old'
    origin.on(path, (_q, r) => {
      if (mode === 'fail') { r.writeHead(500, { 'content-type': 'text/plain' }); r.end('down'); return }
      const body = mode === 'big' ? large : Buffer.from('old')
      r.writeHead(200, { 'cache-control': 'max-age=1, stale-if-error=600', 'content-type': 'text/plain', ...(sized ? { 'content-length': String(body.length) } : {}) })
      r.end(body)
    })
    assert.equal((await getText(gw.url, path)).body, 'old')
    t += 2000
    mode = 'big'
    assert.equal((await getText(gw.url, path)).body, large.toString())
    // The old response was superseded: an origin error now must not bring it back as stale.
    mode = 'fail'
    const after = await getText(gw.url, path)
    assert.equal(after.status, 500, String(after.headers['cache-status']))
    assert.equal(after.body, 'down')
    assert.equal(memory(gw).entries, 0)
  })
}

test('a streamed miss of unknown length does not say stored before its end is known', async () => {
  const small = await gateway(1 << 20, 4096)
  origin.on('/unknown-big', (_q, r) => { r.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/plain' }); r.end(Buffer.alloc(8000, 97)) })
  origin.on('/unknown-small', (_q, r) => { r.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/plain' }); r.end('small') })
  // Past maxEntryBytes: stored nowhere.
  const big = await getText(small.url, '/unknown-big')
  assert.equal(big.body.length, 8000)
  assert.equal(big.headers['cache-status'], 'sluice; fwd=miss')
  assert.equal(memory(small).entries, 0)
  // Within the bounds it is stored all the same (said by the hit that follows).
  assert.equal((await getText(small.url, '/unknown-small')).headers['cache-status'], 'sluice; fwd=miss')
  await until('the small body stored', () => memory(small).entries === 1)
  assert.match(String((await getText(small.url, '/unknown-small')).headers['cache-status']), /^sluice; hit/)
  // Without an L2, a body within maxEntryBytes that L1 cannot hold with its bookkeeping.
  const tight = await gateway(65536, 65536)
  origin.on('/unknown-tight', (_q, r) => { r.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'application/octet-stream' }); r.end(Buffer.alloc(65000, 97)) })
  const a = await getText(tight.url, '/unknown-tight')
  assert.equal(a.body.length, 65000)
  assert.equal(a.headers['cache-status'], 'sluice; fwd=miss')
  assert.equal(memory(tight).entries, 0)
})
