// Compress once, serve many: the encoded bodies a cache entry stores beside its identity body,
// and the headers each stored coding is served with (no compressor runs on a hit).
//
// The cache (src/httpcache/writer.ts, respond.ts) uses:
//   before storing an entry:         decodeOriginBody (an origin's gzip/br/deflate → identity)
//   after, off the response path:    encodeMissing (the route's codings the entry lacks)
//   on the first hit of a coding:    variantHeaders (memoised on the entry)
//   on every hit:                    pickStored (which stored coding this client gets)
import type { Headers } from '../types.js'
import type { CompressionRouteConfig } from './config.js'
import { decodeBounded, encodeBuffers, isCompressibleType } from './codec.js'
import { encodedHeaders, first, hasNoTransform, mergeVary } from './headers.js'
import { pickEncoding, type Coding } from './negotiate.js'

export { pickEncoding, type Coding } from './negotiate.js'

/** The bodies stored for one response, by content coding. identity is the decoded bytes. */
export interface StoredVariants { identity?: Buffer; br?: Buffer; gzip?: Buffer; deflate?: Buffer }

export interface VariantRoute { compression: CompressionRouteConfig }

const CODINGS = ['br', 'gzip', 'deflate'] as const

/** gzip, br or deflate as Sluice names them, or undefined for none; null for a coding it cannot decode. */
export function originCoding (headers: Headers): 'gzip' | 'br' | 'deflate' | undefined | null {
  const ce = first(headers['content-encoding'])
  if (ce === undefined) return undefined
  const c = ce.trim().toLowerCase()
  if (c === '' || c === 'identity') return undefined
  if (c === 'gzip' || c === 'x-gzip') return 'gzip'
  if (c === 'br' || c === 'deflate') return c
  return null // zstd, compress, or a list of codings ("gzip, br"): stored as they came
}

/** Would Sluice compress this identity body for this route? (The same rules as on the fly.) */
export function shouldEncode (body: Buffer, headers: Headers, c: CompressionRouteConfig): boolean {
  return c.enabled && body.length >= c.minBytes && !hasNoTransform(headers) && isCompressibleType(headers, c.contentTypes)
}

/**
 * Does the coding of this stored identity response depend on Accept-Encoding: would Sluice
 * send it encoded to a client that asked (on the fly, or from a stored copy)? Then every
 * response of it carries Vary: Accept-Encoding, identity included, and before its stored
 * copies exist too (or when the cache keeps none, as for deflate): a shared cache downstream
 * that stored an identity response without Vary would serve it to every client.
 */
export function variesByEncoding (body: Buffer, headers: Headers, c: CompressionRouteConfig): boolean {
  return headers['content-encoding'] === undefined && shouldEncode(body, headers, c)
}

/**
 * Decode an origin's encoded body for identity clients, bounded: past `maxDecompressedBytes`
 * it rejects with SLUICE_ERR_DECOMPRESSED_TOO_LARGE (a compression bomb: do not store it);
 * bytes that do not decode reject with SLUICE_ERR_UPSTREAM_PROTOCOL. Off the event loop.
 */
export function decodeForIdentity (body: Buffer, encoding: 'gzip' | 'br' | 'deflate', maxDecompressedBytes: number): Promise<Buffer> {
  return decodeBounded(body, encoding, maxDecompressedBytes)
}

/**
 * The identity bytes of an origin's body: decoded (bounded, off the event loop) when the origin
 * encoded it with gzip, br or deflate, as they came otherwise. `coding` names the origin's
 * coding when there was one. null: a coding Sluice cannot decode (store the response as sent).
 */
export async function decodeOriginBody (body: Buffer, headers: Headers, maxDecompressedBytes: number): Promise<{ identity: Buffer; coding?: 'gzip' | 'br' | 'deflate' } | null> {
  const origin = originCoding(headers)
  if (origin === null) return null
  if (origin === undefined) return { identity: body }
  return { identity: await decodeForIdentity(body, origin, maxDecompressedBytes), coding: origin }
}

/**
 * The route's encodings of an identity body that `have` lacks (zlib on libuv's thread pool, at
 * storeBrQuality and storeGzipLevel), or {} when the route would not compress this body.
 * `codings` narrows the route's list (the cache stores no deflate copy).
 */
export async function encodeMissing (identity: Buffer, headers: Headers, c: CompressionRouteConfig, have: StoredVariants, codings: readonly string[] = c.encodings): Promise<StoredVariants> {
  if (!shouldEncode(identity, headers, c)) return {}
  const missing = codings.filter((e) => have[e as keyof StoredVariants] === undefined)
  if (missing.length === 0) return {}
  return encodeBuffers(identity, { encodings: missing, storeBrQuality: c.storeBrQuality, storeGzipLevel: c.storeGzipLevel })
}

/**
 * Response headers for one stored variant, from the origin's (identity) headers. Pure and
 * cheap, and the same for every hit of an entry, so a cache may memoise it per coding.
 */
export function variantHeaders (headers: Headers, variants: StoredVariants, coding: Coding, route: VariantRoute): Headers {
  const body = variants[coding]!
  const encoded = CODINGS.some((k) => variants[k] !== undefined)
  if (coding === 'identity') {
    const h: Headers = { ...headers }
    delete h['content-encoding']
    h['content-length'] = String(body.length)
    // Other clients get (or may get) other bytes; a stored copy is never served while the
    // route's compression is off (pickStored), so then it does not count.
    if ((encoded && route.compression.enabled) || variesByEncoding(body, headers, route.compression)) mergeVary(h)
    return h
  }
  const h = encodedHeaders(headers, coding, body.length)
  const identity = variants.identity
  if (route.compression.debugHeader && identity !== undefined) {
    h['x-sluice-compression'] = `${coding} ${identity.length} ${(identity.length / Math.max(1, body.length)).toFixed(3)}`
  }
  return h
}

/** The route's order, then a stored coding it does not list (an origin's own br or gzip). */
function preference (available: readonly string[], order: readonly string[]): readonly string[] {
  for (const a of available) if (a !== 'identity' && !order.includes(a)) return [...order, ...available.filter((x) => x !== 'identity' && !order.includes(x))]
  return order
}

/**
 * Which stored coding a request gets, without compressing anything: the client's best coding
 * among `available` (what the entry holds, identity included), in the route's order, then an
 * origin's own coding the route does not list (stored br bytes go to a br client on a gzip-only
 * route). identity when the route's compression is off, for x-no-compression, for a request
 * with Cache-Control: no-transform, and when nothing stored is acceptable (as on the fly: a
 * server may ignore Accept-Encoding). The cache's hit path (httpcache/respond.ts) calls this
 * with constant lists, so a hit allocates nothing here.
 */
export function pickStored (reqHeaders: Headers, available: readonly string[], c: CompressionRouteConfig): Coding {
  if (!c.enabled || reqHeaders['x-no-compression'] !== undefined || hasNoTransform(reqHeaders)) return 'identity'
  const pick = pickEncoding(first(reqHeaders['accept-encoding']), available, preference(available, c.encodings))
  return pick === null || !available.includes(pick) ? 'identity' : pick
}
