// What may be compressed, and the encoders/decoders: on the fly (streams, br 4 / gzip 6 by
// default) and once per stored cache entry (buffers, async on libuv's thread pool).
import { promisify } from 'node:util'
import zlib from 'node:zlib'
import type { Headers } from '../types.js'
import { SluiceError } from '../errors.js'
export { hasNoTransform } from './headers.js'

const brotli = promisify(zlib.brotliCompress)
const gzip = promisify(zlib.gzip)
const deflate = promisify(zlib.deflate)
type Decoder = (buf: zlib.InputType, o: zlib.ZlibOptions & zlib.BrotliOptions) => Promise<Buffer>
const gunzip = promisify(zlib.gunzip) as Decoder
const unbrotli = promisify(zlib.brotliDecompress) as Decoder
const inflate = promisify(zlib.inflate) as Decoder
const inflateRaw = promisify(zlib.inflateRaw) as Decoder

/**
 * Counts encoder runs (a stream or a buffer encoded): a test uses it to prove that serving a
 * stored variant compresses nothing. Every encoder in src/compress counts here.
 */
export const encoderRuns = { store: 0, stream: 0 }

// text/*, JSON, JavaScript, XML, SVG, +json/+xml, and a few more types mime-db marks
// compressible (wasm, uncompressed fonts, icons). Incompressible bodies only waste CPU and grow.
const COMPRESSIBLE = /^(?:text\/|application\/(?:json|javascript|x-javascript|ecmascript|xml|xhtml\+xml|rss\+xml|atom\+xml|ld\+json|manifest\+json|graphql-response\+json|wasm|vnd\.ms-fontobject|x-font-ttf)$|image\/(?:svg\+xml|x-icon|vnd\.microsoft\.icon|bmp)$|font\/(?:ttf|otf|collection)$|application\/[a-z0-9.!#$&^_-]+\+(?:json|xml)$)/

/** The media type of a Content-Type header, lower case, without parameters. */
export function mediaType (h: Headers): string {
  const ct = h['content-type']
  const v = (Array.isArray(ct) ? ct[0] : ct) ?? ''
  const semi = v.indexOf(';')
  return (semi === -1 ? v : v.slice(0, semi)).trim().toLowerCase()
}

// The route's extra types, compiled once per (frozen) list: exact types and `type/*`.
const extraMatchers = new WeakMap<readonly string[], (t: string) => boolean>()
function extraMatcher (extra: readonly string[]): (t: string) => boolean {
  let m = extraMatchers.get(extra)
  if (m === undefined) {
    const exact = new Set<string>()
    const prefixes: string[] = []
    for (const e of extra) {
      const t = e.trim().toLowerCase()
      if (t.endsWith('/*')) prefixes.push(t.slice(0, -1)); else exact.add(t)
    }
    m = (t) => exact.has(t) || prefixes.some((p) => t.startsWith(p))
    extraMatchers.set(extra, m)
  }
  return m
}

/** Compressible by type. text/event-stream never is: SSE must pass event by event. */
export function isCompressibleType (h: Headers, extra: readonly string[]): boolean {
  const t = mediaType(h)
  if (t === '' || t === 'text/event-stream') return false
  return COMPRESSIBLE.test(t) || (extra.length > 0 && extraMatcher(extra)(t))
}

export interface StoreEncodeOptions { encodings: readonly string[]; storeBrQuality: number; storeGzipLevel: number }

/**
 * Above this size a stored Brotli copy is made at quality 9 at most: quality 11 costs about
 * 1.3 s of CPU per MB of JSON (q9: 0.16 s) for 10 % fewer bytes; up to it (100 KB: 117 ms
 * against 71 ms) it is worth it. Measured with bench/br-quality.mjs (docs/benchmarks.md).
 */
export const BR_STORE_FULL_QUALITY_MAX_BYTES = 256 * 1024

export function brotliStoreParams (quality: number, length: number): zlib.BrotliOptions {
  return {
    params: {
      [zlib.constants.BROTLI_PARAM_QUALITY]: length > BR_STORE_FULL_QUALITY_MAX_BYTES ? Math.min(quality, 9) : quality,
      [zlib.constants.BROTLI_PARAM_SIZE_HINT]: length,
      // A window no larger than the body: the same output for a body that fits, and an encoder
      // that allocates kilobytes instead of the default 4 MiB window (under a miss-heavy load
      // those allocations, made on libuv's threads, fragment the allocator and swell RSS).
      [zlib.constants.BROTLI_PARAM_LGWIN]: brotliWindowBits(length),
      [zlib.constants.BROTLI_PARAM_MODE]: zlib.constants.BROTLI_MODE_TEXT
    }
  }
}

/** The smallest Brotli window (10..24 bits) that holds `length` bytes. */
export function brotliWindowBits (length: number): number {
  let bits = 10
  while (bits < 24 && (1 << bits) - 16 < length) bits++
  return bits
}

/**
 * Encoded copies of an identity body, one per listed coding (br, gzip, deflate), each kept
 * only when smaller than the body. Runs on libuv's thread pool, never on the event loop.
 */
export async function encodeBuffers (body: Buffer, o: StoreEncodeOptions): Promise<{ gzip?: Buffer; br?: Buffer; deflate?: Buffer }> {
  const out: { gzip?: Buffer; br?: Buffer; deflate?: Buffer } = {}
  const jobs: Promise<void>[] = []
  const keep = (k: 'gzip' | 'br' | 'deflate') => (b: Buffer) => { if (b.length < body.length) out[k] = b }
  for (const c of o.encodings) {
    if (c === 'br') jobs.push(brotli(body, brotliStoreParams(o.storeBrQuality, body.length)).then(keep('br')))
    else if (c === 'gzip') jobs.push(gzip(body, { level: o.storeGzipLevel }).then(keep('gzip')))
    else if (c === 'deflate') jobs.push(deflate(body, { level: o.storeGzipLevel }).then(keep('deflate')))
    else continue
    encoderRuns.store++
  }
  await Promise.all(jobs)
  return out
}

/**
 * Decode a body the origin sent encoded, off the event loop, stopping at `max` bytes so a
 * compression bomb cannot exhaust memory: SLUICE_ERR_DECOMPRESSED_TOO_LARGE past the bound,
 * SLUICE_ERR_UPSTREAM_PROTOCOL when the bytes do not decode. zlib's maxOutputLength aborts
 * the inflation itself, so at most `max` bytes plus one chunk are ever held.
 */
export async function decodeBounded (body: Buffer, encoding: string, max: number): Promise<Buffer> {
  if (body.length === 0) return body // an empty body with a Content-Encoding: nothing to decode
  const o = { maxOutputLength: Math.max(1, Math.min(max, 2 ** 31 - 1)) }
  try {
    if (encoding === 'br') return await unbrotli(body, o)
    if (encoding === 'gzip' || encoding === 'x-gzip') return await gunzip(body, o)
    if (encoding === 'deflate') {
      // "deflate" means zlib-wrapped (RFC 9110 §8.4.1.2), but some servers send raw deflate.
      try { return await inflate(body, o) } catch (err) {
        if ((err as { code?: string }).code !== 'Z_DATA_ERROR') throw err
        return await inflateRaw(body, o)
      }
    }
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new SluiceError('SLUICE_ERR_DECOMPRESSED_TOO_LARGE', `decoded body exceeds maxDecompressedBytes (${max})`)
    }
    throw new SluiceError('SLUICE_ERR_UPSTREAM_PROTOCOL', `the upstream's ${encoding} body does not decode: ${(err as Error).message}`)
  }
  throw new SluiceError('SLUICE_ERR_UPSTREAM_PROTOCOL', `content coding ${encoding} is not supported`)
}
