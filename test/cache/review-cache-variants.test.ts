// Review: which stored variants a cache hit may use, and which 206 parts are worth storing.
// - A reload that raises a route's compression minBytes or drops a type from its compressible
//   types: the gzip/br copies made before it are no longer served (L1, and an entry read back
//   from L2 by another replica); the origin's own coding still is, as a miss passes it through.
// - A 206 part whose Vary is not the complete entry's is not stored (L1 and L2): no lookup
//   would ever find it.
// - A range forwarded on a miss asks the origin for identity, so its 206 can be stored.
// Real gateways, a real loopback origin, a real Redis (test/helpers/redis.ts).
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import zlib from 'node:zlib'
import { request } from 'undici'
import type { IncomingHttpHeaders } from 'node:http'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startTestGateway, simpleConfig, type TestGateway } from '../helpers/gateway.js'
import { redisCacheYaml } from '../helpers/redis-cache-config.js'
import { startRedis, type RedisHandle } from '../helpers/redis.js'
import { until } from '../helpers/wait.js'
import { MemoryStore } from '../../src/httpcache/memory.js'
import { RedisStore } from '../../src/httpcache/redis-store.js'
import { decodeEntry, type CacheEntry } from '../../src/httpcache/entry.js'
import { partialKey } from '../../src/httpcache/key.js'
import { entry } from './store-suite.js'

let origin: Origin
let redis: RedisHandle
before(async () => { origin = await startOrigin(); redis = await startRedis() })
after(async () => { await origin.close(); await redis.stop() })

const BODY = JSON.stringify({ items: Array.from({ length: 100 }, (_, i) => ({ id: i, name: `item ${i}` })) })
const settle = async () => await new Promise((resolve) => setTimeout(resolve, 100))

/** One cached route, with this compression block. */
function compressed (compression: string): string {
  return simpleConfig(origin.url).replace(`  - name: all
    match: { pathPrefix: / }
    upstream: origin
`, `  - name: cached
    match: { pathPrefix: / }
    upstream: origin
    cache: { enabled: true }
    compression: ${compression}
`)
}

async function fetchRaw (base: string, path: string, headers: Record<string, string> = {}) {
  const r = await request(base + path, { headers })
  return { status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) }
}

function variesByEncoding (h: IncomingHttpHeaders): boolean {
  const v = h.vary
  return v !== undefined && (Array.isArray(v) ? v.join(',') : v).split(',').some((t) => t.trim().toLowerCase() === 'accept-encoding')
}

async function reload (g: TestGateway, yaml: string): Promise<void> {
  g.write(yaml)
  const r = await g.gw.reloader.reload('test')
  assert.equal(r.ok, true, JSON.stringify(r))
}

function serve (path: string, type = 'application/json'): void {
  origin.on(path, (_req, res) => { res.writeHead(200, { 'content-type': type, 'cache-control': 'max-age=600' }); res.end(BODY) })
}

/** Hits for gzip, br and no Accept-Encoding all get the identity bytes of the one stored entry, without Vary: Accept-Encoding. */
async function assertIdentityHits (url: string, path: string, why: string, extra: Record<string, string> = {}): Promise<void> {
  for (const ae of [{ 'accept-encoding': 'gzip' }, { 'accept-encoding': 'br' }, { 'accept-encoding': 'br, gzip' }, {}] as Array<Record<string, string>>) {
    const r = await fetchRaw(url, path, { ...ae, ...extra })
    assert.match(String(r.headers['cache-status']), /hit/, `still the stored entry (${JSON.stringify(ae)})`)
    assert.equal(r.headers['content-encoding'], undefined, `${why}: no stored copy served (${JSON.stringify(ae)})`)
    assert.equal(r.body.toString(), BODY)
    assert.equal(variesByEncoding(r.headers), false, `nothing depends on Accept-Encoding now (${JSON.stringify(ae)}; got ${String(r.headers.vary)})`)
  }
}

// ---- 1. Stored copies follow the route's compression config after a reload ------------------

test('L1: a reload that raises minBytes above an entry\'s body stops serving its stored gzip/br copies', async () => {
  const g = await startTestGateway(compressed('{ enabled: true, minBytes: 100, encodings: [br, gzip] }'))
  try {
    serve('/min')
    await fetchRaw(g.url, '/min', { 'accept-encoding': 'gzip' })
    await until('the stored gzip copy to be served', async () => (await fetchRaw(g.url, '/min', { 'accept-encoding': 'gzip' })).headers['content-encoding'] === 'gzip')
    assert.equal((await fetchRaw(g.url, '/min', { 'accept-encoding': 'br' })).headers['content-encoding'], 'br', 'precondition: a br copy too')
    assert.ok(variesByEncoding((await fetchRaw(g.url, '/min')).headers), 'precondition: identity hits vary')
    await reload(g, compressed(`{ enabled: true, minBytes: ${BODY.length + 1}, encodings: [br, gzip] }`))
    await assertIdentityHits(g.url, '/min', 'the body is under minBytes now')
    // And back: the copies are still stored, and served again once the config allows them.
    await reload(g, compressed('{ enabled: true, minBytes: 100, encodings: [br, gzip] }'))
    const back = await fetchRaw(g.url, '/min', { 'accept-encoding': 'gzip' })
    assert.equal(back.headers['content-encoding'], 'gzip')
    assert.equal(zlib.gunzipSync(back.body).toString(), BODY)
    assert.equal(origin.count('/min'), 1, 'every answer came from the one stored entry')
  } finally { await g.close() }
})

test('L1: a reload that drops an entry\'s type from the route\'s compressible types stops serving its stored copies', async () => {
  const g = await startTestGateway(compressed('{ enabled: true, minBytes: 100, encodings: [br, gzip], contentTypes: [application/x-sluice-test] }'))
  try {
    serve('/type', 'application/x-sluice-test')
    await fetchRaw(g.url, '/type', { 'accept-encoding': 'gzip' })
    await until('the stored gzip copy to be served', async () => (await fetchRaw(g.url, '/type', { 'accept-encoding': 'gzip' })).headers['content-encoding'] === 'gzip')
    await reload(g, compressed('{ enabled: true, minBytes: 100, encodings: [br, gzip] }'))
    await assertIdentityHits(g.url, '/type', 'the type is not compressible now')
    assert.equal(origin.count('/type'), 1)
  } finally { await g.close() }
})

/** The decoded L2 records whose path is `path`. */
async function l2Records (path: string): Promise<CacheEntry[]> {
  const c = redis.client()
  const out: CacheEntry[] = []
  for (const k of await c.keys(`${redis.prefix}*${path}*`)) {
    if (await c.type(k) !== 'string') continue
    try { const e = decodeEntry((await c.getBuffer(k))!); if (e !== undefined && e.path === path) out.push(e) } catch { /* the Vary record */ }
  }
  return out
}

test('L2: an entry read back from Redis by a replica whose route has a higher minBytes is served without its stored copies', async () => {
  const prefix = redis.prefix + 'l2var:'
  const yaml = (comp: string) => redisCacheYaml(origin.url, redis.url, prefix, { route: `    compression: ${comp}\n` })
  const a = await startTestGateway(yaml('{ enabled: true, minBytes: 100, encodings: [br, gzip] }'))
  let b: TestGateway | undefined
  const host = 'shop.example' // one Host for both replicas (the key includes it)
  try {
    serve('/l2var')
    await fetchRaw(a.url, '/l2var', { 'accept-encoding': 'gzip', host })
    await until('the entry with its gzip and br copies to reach L2', async () => (await l2Records('/l2var')).some((e) => e.gzip !== undefined && e.br !== undefined))
    // Another replica (or this one after an L1 eviction) with the new config reads it from L2.
    b = await startTestGateway(yaml(`{ enabled: true, minBytes: ${BODY.length + 1}, encodings: [br, gzip] }`))
    const r = await fetchRaw(b.url, '/l2var', { 'accept-encoding': 'gzip', host })
    assert.match(String(r.headers['cache-status']), /hit/, 'answered from the L2 entry')
    assert.equal(r.headers['content-encoding'], undefined, 'the copy made under the old minBytes is not served')
    assert.equal(r.body.toString(), BODY)
    assert.equal(variesByEncoding(r.headers), false)
    // Kept in B's L1 now: its L1 hits say the same.
    await assertIdentityHits(b.url, '/l2var', 'read from L2 under the new minBytes', { host })
    // The replica with the old config still serves the copies.
    assert.equal((await fetchRaw(a.url, '/l2var', { 'accept-encoding': 'gzip', host })).headers['content-encoding'], 'gzip')
    assert.equal(origin.count('/l2var'), 1)
  } finally { await b?.close(); await a.close() }
})

test('the origin\'s own gzip, kept as the stored gzip copy, is still served after a reload raises minBytes (as a miss passes it through)', async () => {
  const g = await startTestGateway(compressed('{ enabled: true, minBytes: 100, encodings: [br, gzip] }'))
  try {
    const gz = zlib.gzipSync(BODY)
    // An origin that sends gzip although the fill asks for identity.
    origin.on('/own', (_req, res) => { res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=600', 'content-encoding': 'gzip' }); res.end(gz) })
    await fetchRaw(g.url, '/own', { 'accept-encoding': 'gzip' })
    await until('the stored br copy to be served', async () => (await fetchRaw(g.url, '/own', { 'accept-encoding': 'br' })).headers['content-encoding'] === 'br')
    await reload(g, compressed(`{ enabled: true, minBytes: ${BODY.length + 1}, encodings: [br, gzip] }`))
    const r = await fetchRaw(g.url, '/own', { 'accept-encoding': 'gzip, br' })
    assert.match(String(r.headers['cache-status']), /hit/)
    assert.equal(r.headers['content-encoding'], 'gzip', 'the origin\'s gzip, not Sluice\'s br copy')
    assert.deepEqual(r.body, gz)
    assert.ok(variesByEncoding(r.headers))
    const id = await fetchRaw(g.url, '/own')
    assert.equal(id.headers['content-encoding'], undefined)
    assert.ok(variesByEncoding(id.headers), 'identity hits vary: gzip clients get the origin\'s gzip')
    assert.equal(origin.count('/own'), 1)
  } finally { await g.close() }
})

// ---- 2. A part whose Vary is not the complete entry's is not stored ---------------------------

const BASE = 'G|example.com|/pv'
const complete = () => entry('/pv', { key: BASE + '\naccept-language=en', varyNames: ['accept-language'] })
const part = (key: string, varyNames: string[]) => entry('/pv', { key: partialKey(key), varyNames, status: 206, range: { start: 0, total: 100 }, body: Buffer.alloc(10, 1) })

for (const [name, make] of [
  ['memory', () => new MemoryStore(1 << 20, 1 << 19)],
  ['redis', () => new RedisStore(redis.client(), redis.prefix + Math.random().toString(36).slice(2) + ':', (op, err) => { throw new Error(`${op}: ${err.message}`) })]
] as const) {
  test(`${name} store: a 206 part whose Vary differs from the stored complete entry's is not stored (no lookup finds it)`, async () => {
    const s = make()
    await s.set(complete(), 60_000)
    // No Vary: its key is partialKey(BASE); a lookup computes partialKey(BASE + '\naccept-language=…').
    await s.set(part(BASE, []), 60_000)
    assert.deepEqual(await s.getVary(BASE), ['accept-language'], 'the complete entry\'s Vary record is kept')
    assert.equal(await s.get(partialKey(BASE)), undefined, 'the unreachable part is not stored')
    assert.equal((await s.stats()).entries, 1)
    // A part with the complete entry's Vary is stored where lookups find it.
    await s.set(part(BASE + '\naccept-language=fr', ['accept-language']), 60_000)
    assert.ok(await s.get(partialKey(BASE + '\naccept-language=fr')))
    // Without a complete entry, a part sets the record itself, and is found.
    const other = 'G|example.com|/pw'
    await s.set({ ...part(other, []), base: other, path: '/pw' }, 60_000)
    assert.deepEqual(await s.getVary(other), [])
    assert.ok(await s.get(partialKey(other)))
  })
}

test('through the gateway: a range miss whose 206 has another Vary than the stored complete entry leaves nothing more in L1', async () => {
  const g = await startTestGateway(compressed('{ enabled: false }'))
  try {
    const text = 'abcdefghijklmnopqrstuvwxyz'
    origin.on('/pv', (req, res) => {
      const h = { 'cache-control': 'max-age=600', 'content-type': 'text/plain', etag: '"pv1"' }
      if (req.headers.range === undefined) { res.writeHead(200, { ...h, vary: 'Accept-Language' }); res.end(text); return }
      res.writeHead(206, { ...h, 'content-range': `bytes 0-9/${text.length}` }) // no Vary
      res.end(text.slice(0, 10))
    })
    await fetchRaw(g.url, '/pv', { 'accept-language': 'en' })
    await settle()
    assert.equal((g.gw.cache.stats() as { memory: { entries: number } }).memory.entries, 1)
    const r = await fetchRaw(g.url, '/pv', { 'accept-language': 'fr', range: 'bytes=0-9' })
    assert.equal(r.status, 206)
    assert.equal(r.body.toString(), text.slice(0, 10))
    await settle()
    assert.equal((g.gw.cache.stats() as { memory: { entries: number } }).memory.entries, 1, 'the part no lookup can find is not kept')
    assert.equal((await fetchRaw(g.url, '/pv', { 'accept-language': 'en' })).body.toString(), text, 'the complete entry still answers')
  } finally { await g.close() }
})

// ---- 3. A range miss asks the origin for identity ---------------------------------------------

/** An origin that cuts ranges of a gzip stream for gzip clients (as one that compresses before it cuts does), of identity bytes otherwise. */
function codedRanges (text: string, etag: string) {
  return (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
    const gz = /gzip/.test(String(req.headers['accept-encoding'] ?? ''))
    const bytes = gz ? zlib.gzipSync(text) : Buffer.from(text)
    const h: Record<string, string> = { 'cache-control': 'max-age=600', 'content-type': 'text/plain', etag: gz ? etag.slice(0, -1) + '-gz"' : etag, vary: 'Accept-Encoding', ...(gz ? { 'content-encoding': 'gzip' } : {}) }
    const m = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''))
    if (m === null) { res.writeHead(200, h); res.end(bytes); return }
    const start = Number(m[1]); const end = Math.min(Number(m[2]), bytes.length - 1)
    res.writeHead(206, { ...h, 'content-range': `bytes ${start}-${end}/${bytes.length}` })
    res.end(bytes.subarray(start, end + 1))
  }
}

test('a range miss from a gzip client is forwarded with Accept-Encoding: identity, stored, and later ranges are answered from the part', async () => {
  const g = await startTestGateway(compressed('{ enabled: false }'))
  try {
    const text = 'identity bytes of the resource, long enough to cut into a few ranges'
    origin.on('/rg', codedRanges(text, '"rg1"'))
    const a = await fetchRaw(g.url, '/rg', { 'accept-encoding': 'gzip', range: 'bytes=0-9' })
    assert.equal(a.status, 206)
    assert.equal(a.headers['content-encoding'], undefined)
    assert.equal(a.body.toString(), text.slice(0, 10))
    assert.equal(origin.seen.at(-1)?.headers['accept-encoding'], 'identity', 'the range asked for identity')
    await settle()
    const b = await fetchRaw(g.url, '/rg', { 'accept-encoding': 'gzip', range: 'bytes=2-5' })
    assert.equal(b.status, 206)
    assert.match(String(b.headers['cache-status']), /^sluice; hit/, 'answered from the stored part')
    assert.equal(b.body.toString(), text.slice(2, 6))
    assert.equal(origin.count('/rg'), 1)
    // A range that runs past the part: the missing bytes are asked for in identity too.
    const c = await fetchRaw(g.url, '/rg', { 'accept-encoding': 'gzip', range: 'bytes=5-19' })
    assert.equal(c.status, 206)
    assert.equal(c.body.toString(), text.slice(5, 20))
    assert.equal(origin.seen.at(-1)?.headers.range, 'bytes=10-19')
    assert.equal(origin.seen.at(-1)?.headers['accept-encoding'], 'identity')
  } finally { await g.close() }
})

test('a range miss from a client that excludes identity keeps its Accept-Encoding (its coded 206 passes through, not stored)', async () => {
  const g = await startTestGateway(compressed('{ enabled: false }'))
  try {
    const text = 'identity bytes of another resource, long enough to cut'
    origin.on('/rx', codedRanges(text, '"rx1"'))
    const a = await fetchRaw(g.url, '/rx', { 'accept-encoding': 'gzip, identity;q=0', range: 'bytes=0-9' })
    assert.equal(a.status, 206)
    assert.equal(origin.seen.at(-1)?.headers['accept-encoding'], 'gzip, identity;q=0')
    assert.equal(a.headers['content-encoding'], 'gzip')
    assert.match(String(a.headers['cache-status']), /detail=CONTENT-ENCODING/)
  } finally { await g.close() }
})

test('the missing bytes of a stored part come back coded (an origin that ignores Accept-Encoding: identity): they are not put between identity bytes', async () => {
  const g = await startTestGateway(compressed('{ enabled: false }'))
  try {
    const text = 'identity bytes of a third resource, long enough to cut'
    origin.on('/rm', (req, res) => {
      const h = { 'cache-control': 'max-age=600', 'content-type': 'text/plain', etag: '"rm1"' }
      const m = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range))!
      const start = Number(m[1]); const end = Number(m[2])
      // Bytes 10.. come back gzip-coded (the same strong ETag: a misconfigured origin).
      const coded = start === 10
      res.writeHead(206, { ...h, ...(coded ? { 'content-encoding': 'gzip' } : {}), 'content-range': `bytes ${start}-${end}/${text.length}` })
      res.end(coded ? Buffer.alloc(end - start + 1, 0x1f) : text.slice(start, end + 1))
    })
    assert.equal((await fetchRaw(g.url, '/rm', { range: 'bytes=0-9' })).body.toString(), text.slice(0, 10))
    await settle()
    const r = await fetchRaw(g.url, '/rm', { range: 'bytes=5-19' })
    assert.equal(r.status, 206)
    assert.equal(r.body.toString(), text.slice(5, 20), 'the client\'s own range was forwarded instead')
    assert.deepEqual(origin.seen.filter((s) => s.url === '/rm').map((s) => s.headers.range), ['bytes=0-9', 'bytes=10-19', 'bytes=5-19'])
  } finally { await g.close() }
})

test('through the gateway: the range miss whose 206 part is refused for its Vary does not say `stored` (Cache-Status, RFC 9211): it is passed through with detail=VARY-PART', async () => {
  const g = await startTestGateway(compressed('{ enabled: false }'))
  try {
    const text = 'abcdefghijklmnopqrstuvwxyz'
    origin.on('/pv-status', (req, res) => {
      const h = { 'cache-control': 'max-age=600', 'content-type': 'text/plain', etag: '"pvs1"' }
      if (req.headers.range === undefined) { res.writeHead(200, { ...h, vary: 'Accept-Language' }); res.end(text); return }
      const [start, end] = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range))!.slice(1).map(Number)
      res.writeHead(206, { ...h, 'content-range': `bytes ${start}-${end}/${text.length}` }) // no Vary
      res.end(text.slice(start, end + 1))
    })
    await fetchRaw(g.url, '/pv-status', { 'accept-language': 'en' })
    await settle()
    const r = await fetchRaw(g.url, '/pv-status', { 'accept-language': 'fr', range: 'bytes=0-9' })
    assert.equal(r.status, 206)
    assert.equal(r.body.toString(), text.slice(0, 10))
    assert.doesNotMatch(String(r.headers['cache-status']), /stored/, 'the part is not stored, so it is not said to be')
    assert.equal(r.headers['cache-status'], 'sluice; fwd=bypass; detail=VARY-PART')
    await settle()
    assert.equal((g.gw.cache.stats() as { memory: { entries: number } }).memory.entries, 1)
    // A part that itself covers the whole representation is stored as the complete entry it
    // makes (never refused for its Vary), and says so.
    const whole = await fetchRaw(g.url, '/pv-status', { 'accept-language': 'de', range: 'bytes=0-25' })
    assert.equal(whole.status, 206)
    assert.match(String(whole.headers['cache-status']), /stored/)
  } finally { await g.close() }
})
