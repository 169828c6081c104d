// Compress once, serve many: the variants a cache entry stores, the choice on a hit (which runs
// no compressor), and the bounded decoding of an origin's encoded body.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import zlib from 'node:zlib'
import { randomBytes } from 'node:crypto'
import { Value } from '@sinclair/typebox/value'
import { decodeOriginBody, encodeMissing, pickStored, decodeForIdentity, variantHeaders, pickEncoding, type StoredVariants, type VariantRoute, type Coding } from '../../src/compress/variants.js'
import { encoderRuns } from '../../src/compress/codec.js'
import { CompressionRouteSchema, type CompressionRouteConfig } from '../../src/compress/config.js'
import { isSluiceError } from '../../src/errors.js'
import type { Headers } from '../../src/types.js'

const BODY = Buffer.from(JSON.stringify({ items: Array.from({ length: 400 }, (_, i) => ({ id: i, name: `item ${i}`, on: i % 2 === 0 })) }))
const JSON_HEADERS: Headers = { 'content-type': 'application/json', etag: '"e1"', 'content-length': String(BODY.length), 'cache-control': 'max-age=60' }

function route (over: Partial<CompressionRouteConfig> = {}) {
  return { compression: Object.freeze({ ...(Value.Create(CompressionRouteSchema) as CompressionRouteConfig), enabled: true, minBytes: 100, ...over }) }
}

/**
 * The variants the cache stores for one response, the way src/httpcache/writer.ts makes them:
 * decodeOriginBody (an origin's coding → identity, bounded), then encodeMissing (the route's
 * codings the entry lacks). {} for a coding Sluice cannot decode (stored as it came).
 */
async function encodeForStore (body: Buffer, headers: Headers, r: VariantRoute, maxEntryBytes = Infinity): Promise<StoredVariants> {
  const decoded = await decodeOriginBody(body, headers, Math.min(r.compression.maxDecompressedBytes, maxEntryBytes))
  if (decoded === null) return {}
  const out: StoredVariants = { identity: decoded.identity }
  if (decoded.coding !== undefined) out[decoded.coding] = body
  return Object.assign(out, await encodeMissing(decoded.identity, headers, r.compression, out))
}

/** The codings present in `variants`, identity included (the list respond.ts keeps per entry shape). */
function availableCodings (variants: StoredVariants): Coding[] {
  const a: Coding[] = []
  for (const k of ['br', 'gzip', 'deflate'] as const) if (variants[k] !== undefined) a.push(k)
  if (variants.identity !== undefined) a.push('identity')
  return a
}

/** A hit, the way src/httpcache/respond.ts answers one: pickStored, then variantHeaders. */
function serveVariant (v: StoredVariants, rh: Headers, method: string, h: Headers, r: VariantRoute): { coding: Coding; headers: Headers; body: Buffer | null } {
  const coding = pickStored(rh, availableCodings(v), r.compression)
  return { coding, headers: variantHeaders(h, v, coding, r), body: method === 'HEAD' ? null : v[coding]! }
}

const codeOf = (e: unknown) => (isSluiceError(e) ? e.code : (e as Error).message)

test('an identity body is stored as identity plus the route\'s encodings, each decoding to the body', async () => {
  const before = encoderRuns.store
  const v = await encodeForStore(BODY, JSON_HEADERS, route())
  assert.equal(encoderRuns.store - before, 2, 'br and gzip, each encoded once')
  assert.deepEqual(availableCodings(v), ['br', 'gzip', 'identity'])
  assert.equal(v.identity, BODY)
  assert.ok(zlib.brotliDecompressSync(v.br!).equals(BODY))
  assert.ok(zlib.gunzipSync(v.gzip!).equals(BODY))
  assert.ok(v.br!.length < v.gzip!.length, 'stored br (quality 9) beats gzip')
  const withDeflate = await encodeForStore(BODY, JSON_HEADERS, route({ encodings: ['gzip', 'deflate'] }))
  assert.deepEqual(availableCodings(withDeflate), ['gzip', 'deflate', 'identity'])
  assert.ok(zlib.inflateSync(withDeflate.deflate!).equals(BODY))
})

test('nothing is encoded when the route would not compress: off, small, incompressible type, no-transform', async () => {
  const before = encoderRuns.store
  const cases: [Headers, ReturnType<typeof route>, Buffer][] = [
    [JSON_HEADERS, route({ enabled: false }), BODY],
    [JSON_HEADERS, route({ minBytes: BODY.length + 1 }), BODY],
    [{ 'content-type': 'image/png' }, route(), BODY],
    [{ 'content-type': 'text/event-stream' }, route(), BODY],
    [{ ...JSON_HEADERS, 'cache-control': 'no-transform' }, route(), BODY]
  ]
  for (const [h, r, b] of cases) assert.deepEqual(await encodeForStore(b, h, r), { identity: b })
  assert.equal(encoderRuns.store, before)
  // An encoded copy that is not smaller is not kept.
  const random = randomBytes(4000)
  const v = await encodeForStore(random, { 'content-type': 'application/octet-stream' }, route({ contentTypes: ['application/octet-stream'] }))
  assert.deepEqual(v, { identity: random }, 'random bytes grow when encoded: only identity is kept')
})

test('an origin\'s gzip is kept as the gzip variant, identity decoded, br encoded from it', async () => {
  const gz = zlib.gzipSync(BODY)
  const v = await encodeForStore(gz, { ...JSON_HEADERS, 'content-encoding': 'gzip', 'content-length': String(gz.length) }, route())
  assert.equal(v.gzip, gz, 'the origin\'s bytes, not a re-encoding')
  assert.ok(v.identity!.equals(BODY))
  assert.ok(zlib.brotliDecompressSync(v.br!).equals(BODY))
  // x-gzip is gzip; an origin's br is kept on a route that only lists gzip.
  const xg = await encodeForStore(gz, { 'content-type': 'image/png', 'content-encoding': 'X-Gzip' }, route())
  assert.deepEqual(availableCodings(xg), ['gzip', 'identity'])
  const br = zlib.brotliCompressSync(BODY)
  const onlyGzip = await encodeForStore(br, { ...JSON_HEADERS, 'content-encoding': 'br' }, route({ encodings: ['gzip'] }))
  assert.deepEqual(availableCodings(onlyGzip), ['br', 'gzip', 'identity'])
  const served = serveVariant(onlyGzip, { 'accept-encoding': 'br' }, 'GET', JSON_HEADERS, route({ encodings: ['gzip'] }))
  assert.equal(served?.coding, 'br', 'stored br bytes are served to a br client even when the route lists only gzip')
})

test('codings Sluice cannot decode are not turned into variants', async () => {
  for (const ce of ['zstd', 'gzip, br', 'compress']) assert.deepEqual(await encodeForStore(BODY, { ...JSON_HEADERS, 'content-encoding': ce }, route()), {}, ce)
  assert.deepEqual(await encodeForStore(BODY, { ...JSON_HEADERS, 'content-encoding': 'identity' }, route({ enabled: false })), { identity: BODY })
})

test('serving stored variants picks by Accept-Encoding, sets the headers, and runs no compressor', async () => {
  const r = route({ debugHeader: true })
  const v = await encodeForStore(BODY, JSON_HEADERS, r)
  const runs = { ...encoderRuns }
  const table: [Headers, string, string][] = [
    // [request headers, method, expected coding]
    [{ 'accept-encoding': 'br, gzip' }, 'GET', 'br'],
    [{ 'accept-encoding': 'gzip' }, 'GET', 'gzip'],
    [{ 'accept-encoding': 'br;q=0, *' }, 'GET', 'gzip'],
    [{ 'accept-encoding': 'deflate' }, 'GET', 'identity'],
    [{}, 'GET', 'identity'],
    [{ 'accept-encoding': 'identity;q=0' }, 'GET', 'identity'], // nothing acceptable: identity, as on the fly
    [{ 'accept-encoding': 'br', 'x-no-compression': '1' }, 'GET', 'identity'],
    [{ 'accept-encoding': 'br', 'cache-control': 'no-transform' }, 'GET', 'identity'],
    [{ 'accept-encoding': 'br' }, 'HEAD', 'br']
  ]
  for (let round = 0; round < 50; round++) {
    for (const [rh, method, expected] of table) {
      const s = serveVariant(v, rh, method, JSON_HEADERS, r)!
      assert.equal(s.coding, expected, JSON.stringify(rh))
      const bytes = v[s.coding as keyof StoredVariants]!
      assert.equal(s.body, method === 'HEAD' ? null : bytes)
      assert.equal(s.headers['content-length'], String(bytes.length))
      assert.equal(s.headers.vary, 'Accept-Encoding')
      if (expected === 'identity') {
        assert.equal(s.headers['content-encoding'], undefined)
        assert.equal(s.headers.etag, '"e1"')
      } else {
        assert.equal(s.headers['content-encoding'], expected)
        assert.equal(s.headers.etag, 'W/"e1"')
        assert.match(String(s.headers['x-sluice-compression']), new RegExp(`^${expected} ${BODY.length} \\d+\\.\\d{3}$`))
      }
    }
  }
  assert.deepEqual(encoderRuns, runs, 'no encoder ran while serving 450 hits')
})

test('an entry with only identity gets Vary from compression only when it would be compressed, and stored headers are not mutated', () => {
  const h = { ...JSON_HEADERS }
  // Compressible: its copies are not made yet (or never, for deflate), but a miss was compressed.
  const s = serveVariant({ identity: BODY }, { 'accept-encoding': 'gzip' }, 'GET', h, route())!
  assert.equal(s.coding, 'identity')
  assert.equal(s.headers.vary, 'Accept-Encoding')
  // Never compressed: another type, or the route's compression off.
  const png = serveVariant({ identity: BODY }, { 'accept-encoding': 'gzip' }, 'GET', { ...JSON_HEADERS, 'content-type': 'image/png' }, route())!
  assert.equal(png.headers.vary, undefined)
  const off = serveVariant({ identity: BODY }, { 'accept-encoding': 'gzip' }, 'GET', h, route({ enabled: false }))!
  assert.equal(off.headers.vary, undefined)
  variantHeaders(h, { identity: BODY, gzip: Buffer.from('x') }, 'gzip', route())
  assert.deepEqual(h, JSON_HEADERS)
  // A route with compression off serves identity even when encoded copies are stored.
  assert.equal(pickStored({ 'accept-encoding': 'br' }, ['br', 'identity'], route({ enabled: false }).compression), 'identity')
  assert.equal(pickEncoding('gzip', ['identity'], ['gzip']), 'identity')
})

test('decoding is bounded: a gzip, br or deflate bomb fails cleanly with SLUICE_ERR_DECOMPRESSED_TOO_LARGE', async () => {
  const zeros = Buffer.alloc(16 * 1024 * 1024)
  const bombs = { gzip: zlib.gzipSync(zeros, { level: 9 }), br: zlib.brotliCompressSync(zeros), deflate: zlib.deflateSync(zeros, { level: 9 }) }
  for (const [enc, bomb] of Object.entries(bombs) as ['gzip' | 'br' | 'deflate', Buffer][]) {
    assert.ok(bomb.length < 64 * 1024, `${enc} bomb is small (${bomb.length} bytes)`)
    await assert.rejects(decodeForIdentity(bomb, enc, 1024 * 1024), (e) => codeOf(e) === 'SLUICE_ERR_DECOMPRESSED_TOO_LARGE', enc)
    assert.equal((await decodeForIdentity(bomb, enc, zeros.length)).length, zeros.length, `${enc}: exactly at the bound is fine`)
  }
  // Through encodeForStore too: the entry's own bound applies, and the smaller one wins.
  await assert.rejects(encodeForStore(bombs.gzip, { 'content-type': 'text/plain', 'content-encoding': 'gzip' }, route({ maxDecompressedBytes: 1024 })), (e) => codeOf(e) === 'SLUICE_ERR_DECOMPRESSED_TOO_LARGE')
  await assert.rejects(encodeForStore(bombs.gzip, { 'content-type': 'text/plain', 'content-encoding': 'gzip' }, route(), 1024), (e) => codeOf(e) === 'SLUICE_ERR_DECOMPRESSED_TOO_LARGE')
})

test('decoding: raw deflate is accepted, an empty body is empty, garbage is an upstream protocol error', async () => {
  assert.equal((await decodeForIdentity(zlib.deflateRawSync('raw'), 'deflate', 100)).toString(), 'raw')
  assert.equal((await decodeForIdentity(Buffer.alloc(0), 'gzip', 100)).length, 0)
  for (const enc of ['gzip', 'br', 'deflate'] as const) {
    await assert.rejects(decodeForIdentity(Buffer.from('this is not compressed at all'), enc, 100), (e) => codeOf(e) === 'SLUICE_ERR_UPSTREAM_PROTOCOL', enc)
  }
  await assert.rejects(decodeForIdentity(zlib.gzipSync(BODY).subarray(0, 50), 'gzip', 1e6), (e) => codeOf(e) === 'SLUICE_ERR_UPSTREAM_PROTOCOL', 'truncated')
})
