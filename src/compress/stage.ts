// Stage 5, compress: br/gzip (deflate when listed) on the fly for responses that do not come
// from the cache. Cached responses are stored already encoded (variants.ts), so a hit never
// compresses. Streams stay streams: nothing is buffered, text/event-stream is never touched,
// and a compressed stream that pauses is flushed (flushIdleMs) so streamed JSON keeps moving.
import zlib from 'node:zlib'
import { pipeline, Readable, Transform } from 'node:stream'
import type { Metrics } from '../observability/metrics.js'
import type { Headers, ProxyResponse } from '../types.js'
import type { CompressionRouteConfig } from './config.js'
import { isCompressibleType, encoderRuns, brotliWindowBits } from './codec.js'
import { decodedHeaders, encodedHeaders, first, hasNoTransform, mergeVary, namesNoCoding, weakenEtag, withoutContentEncoding } from './headers.js'
import { originCoding } from './variants.js'
import { pickEncoding, type Coding } from './negotiate.js'

/** Brotli window for a body of unknown length: 1 MiB. */
const STREAM_WINDOW_BITS = 20

export { mergeVary } from './headers.js'

export interface CompressRoute { name: string; compression: CompressionRouteConfig }

export interface CompressStage {
  /**
   * The response to send: compressed (a new stream body and fixed headers) when the rules and
   * the client's Accept-Encoding say so; with Vary merged when compression depended on the
   * request; else `res` itself. Synchronous, and never reads a stream body.
   */
  apply (route: CompressRoute, reqHeaders: Headers, method: string, res: ProxyResponse): ProxyResponse
}

/** On the fly any of them can be produced. */
const ANY: readonly Coding[] = ['br', 'gzip', 'deflate', 'identity']

type Counter = { inc (n: number): void }

/** Statuses whose body is never re-encoded: interim, no body (204, 304), or a byte range of another representation (206). */
function untouchedStatus (s: number): boolean {
  return s < 200 || s === 204 || s === 206 || s === 304
}

/** Why a response is left alone, whatever the client accepts (undefined: it may be encoded). */
function ineligible (c: CompressionRouteConfig, res: ProxyResponse): boolean {
  if (untouchedStatus(res.status)) return true
  const h = res.headers
  if (h['content-encoding'] !== undefined || h['content-range'] !== undefined) return true
  if (hasNoTransform(h) || !isCompressibleType(h, c.contentTypes)) return true
  const len = knownLength(res)
  return len >= 0 && len < c.minBytes
}

/** The identity length when known: a Buffer's, or Content-Length; -1 for a stream of unknown length. */
function knownLength (res: ProxyResponse): number {
  if (Buffer.isBuffer(res.body)) return res.body.length
  const cl = first(res.headers['content-length'])
  if (cl === undefined) return -1
  const n = Number(cl)
  return Number.isSafeInteger(n) && n >= 0 ? n : -1
}

/**
 * A 304 on a compressing route carries the Vary the 200 had (RFC 9110 §15.4.5: a 304 has the
 * Vary a 200 to the same request would have): a 304 seldom names its type or length, so it
 * gets Vary: Accept-Encoding unless its own fields show the 200 was never compressed (another
 * type, no-transform). For a client that holds our compressed copy (it sent back the weakened
 * ETag), the 304 also carries that ETag, so a cache updating its stored headers does not pair
 * a strong ETag with encoded bytes.
 */
function notModified (c: CompressionRouteConfig, reqHeaders: Headers, res: ProxyResponse): ProxyResponse {
  const h = res.headers
  if (hasNoTransform(h) || (h['content-type'] !== undefined && !isCompressibleType(h, c.contentTypes))) return res
  const headers = { ...h }
  mergeVary(headers)
  const etag = first(h.etag)
  const inm = reqHeaders['if-none-match']
  if (etag !== undefined && !etag.startsWith('W/') && inm !== undefined && (Array.isArray(inm) ? inm.join(',') : inm).includes('W/' + etag)) weakenEtag(headers)
  return { ...res, headers }
}

/** A zlib stream's first two bytes (RFC 1950): CM 8, a window of at most 32 KiB, a valid FCHECK. */
function zlibHeader (b: Buffer): boolean {
  return (b[0]! & 0x0f) === 8 && (b[0]! >> 4) <= 7 && ((b[0]! << 8) | b[1]!) % 31 === 0
}

/**
 * An inflater for Content-Encoding: deflate, which means zlib-wrapped (RFC 9110 §8.4.1.2) but
 * some servers send raw: the first two bytes decide, as decodeBounded's fallback does for
 * stored bodies. Backpressure is the Transform's: a chunk is done when the inflater took it.
 */
function inflateEither (): Transform {
  let inner: zlib.Inflate | zlib.InflateRaw | undefined
  let head: Buffer | undefined
  const start = (t: Transform, first: Buffer): zlib.Inflate | zlib.InflateRaw => {
    const z = first.length >= 2 && !zlibHeader(first) ? zlib.createInflateRaw() : zlib.createInflate()
    z.on('data', (chunk: Buffer) => t.push(chunk))
    z.on('error', (err) => t.destroy(err))
    return z
  }
  return new Transform({
    transform (chunk: Buffer, _e, cb) {
      if (inner === undefined) {
        head = head === undefined ? chunk : Buffer.concat([head, chunk])
        if (head.length < 2) { cb(); return }
        inner = start(this, head)
        chunk = head
        head = undefined
      }
      inner.write(chunk, () => cb())
    },
    flush (cb) {
      if (inner === undefined) {
        if (head === undefined) { cb(); return }
        inner = start(this, head)
        inner.write(head)
      }
      inner.once('end', () => cb())
      inner.end()
    },
    destroy (err, cb) { inner?.destroy(); cb(err) }
  })
}

export function createCompressStage (deps: { metrics: Metrics }): CompressStage {
  const { metrics } = deps
  const counters = new Map<string, { in: Counter; out: Counter }>()
  const count = (enc: string) => {
    let c = counters.get(enc)
    if (!c) { c = { in: metrics.compressionBytes.labels(enc, 'in'), out: metrics.compressionBytes.labels(enc, 'out') }; counters.set(enc, c) }
    return c
  }

  function encoder (enc: Coding, c: CompressionRouteConfig, length: number): zlib.Gzip | zlib.Deflate | zlib.BrotliCompress {
    encoderRuns.stream++
    if (enc === 'br') {
      return zlib.createBrotliCompress({
        params: {
          [zlib.constants.BROTLI_PARAM_QUALITY]: c.brQuality,
          [zlib.constants.BROTLI_PARAM_MODE]: zlib.constants.BROTLI_MODE_TEXT,
          // Brotli's default 4 MiB window costs megabytes of native memory per stream, and a
          // miss-heavy load runs one stream per response in flight: size the window to the body,
          // and to 1 MiB when its length is unknown (a streamed body).
          [zlib.constants.BROTLI_PARAM_LGWIN]: length > 0 ? brotliWindowBits(length) : STREAM_WINDOW_BITS,
          ...(length > 0 ? { [zlib.constants.BROTLI_PARAM_SIZE_HINT]: length } : {})
        }
      })
    }
    if (enc === 'deflate') return zlib.createDeflate({ level: c.gzipLevel })
    return zlib.createGzip({ level: c.gzipLevel })
  }

  /**
   * Flush the encoder at most `ms` after a chunk arrived: a compressor otherwise holds the
   * events of a streamed body until its buffer fills. The timer starts with the first chunk
   * not yet flushed and is not pushed back by later ones, so a stream whose chunks never pause
   * is flushed every `ms` too (pushed back, it was held whole). One Timeout per response,
   * re-armed with refresh(), no new timer per chunk.
   */
  function flushWhenIdle (src: Readable, z: zlib.Gzip | zlib.Deflate | zlib.BrotliCompress, enc: Coding, ms: number): void {
    const kind = enc === 'br' ? zlib.constants.BROTLI_OPERATION_FLUSH : zlib.constants.Z_SYNC_FLUSH
    let timer: NodeJS.Timeout | undefined
    let armed = false
    const fire = (): void => { armed = false; if (!z.writableEnded && !z.destroyed) z.flush(kind, () => {}) }
    // A 'data' listener next to pipe(): pipe keeps control of flow and backpressure.
    src.on('data', () => {
      if (armed) return
      armed = true
      if (timer === undefined) { timer = setTimeout(fire, ms); timer.unref() } else timer.refresh()
    })
    const stop = () => { if (timer !== undefined) clearTimeout(timer) }
    src.once('end', stop)
    src.once('close', stop)
  }

  /**
   * A response the origin encoded. Passed as sent, with Vary, to a client that accepts its
   * coding; decoded on the fly (as nginx's gunzip) for one that does not. That happens when
   * the origin was not asked with the client's Accept-Encoding (a cache fill asks for
   * identity, and an origin with pre-compressed files may send gzip anyway) or ignored it:
   * either way the client must not get bytes it said it cannot read.
   */
  function encodedAsSent (reqHeaders: Headers, method: string, res: ProxyResponse): ProxyResponse {
    const h = res.headers
    if (untouchedStatus(res.status) || hasNoTransform(h)) return res
    // One coding Sluice can decode; a list (`gzip, br`) or another coding goes as sent.
    const coding = originCoding(h)
    if (coding === null || coding === undefined) return res
    if (pickEncoding(first(reqHeaders['accept-encoding']), [coding, 'identity'], [coding]) === coding) {
      const headers = { ...h }
      mergeVary(headers)
      return { ...res, headers }
    }
    const headers = decodedHeaders(h)
    if (method === 'HEAD' || res.body === null) return { ...res, headers }
    const d = coding === 'br' ? zlib.createBrotliDecompress() : coding === 'gzip' ? zlib.createGunzip() : inflateEither()
    // Bytes that do not decode fail the stream: the client is cut, never sent a clean end.
    if (Buffer.isBuffer(res.body)) d.end(res.body); else pipeline(res.body, d, () => {})
    return { ...res, headers, body: d }
  }

  return {
    apply (route, reqHeaders, method, res) {
      const c = route.compression
      if (res.headers['content-encoding'] !== undefined) {
        // Content-Encoding: identity is no coding: the field goes and the body is any other.
        if (!namesNoCoding(res.headers)) return encodedAsSent(reqHeaders, method, res)
        res = { ...res, headers: withoutContentEncoding(res.headers) }
      }
      if (!c.enabled) return res
      if (res.status === 304) return notModified(c, reqHeaders, res)
      if (ineligible(c, res)) return res
      // From here the representation depends on Accept-Encoding (HEAD included: its headers
      // are those of the GET), so shared caches downstream must key on it, encoded or not.
      const length = knownLength(res)
      const refused = reqHeaders['x-no-compression'] !== undefined || hasNoTransform(reqHeaders)
      const enc = refused ? 'identity' : pickEncoding(first(reqHeaders['accept-encoding']), ANY, c.encodings)
      if (enc === null || enc === 'identity' || method === 'HEAD' || res.body === null) {
        const headers = { ...res.headers }
        mergeVary(headers)
        return { ...res, headers }
      }
      const headers = encodedHeaders(res.headers, enc)
      const z = encoder(enc, c, length)
      const counter = count(enc)
      // Count output in the chain: a 'data' listener on the returned stream would start it
      // flowing before the reply pipes it. Input is the encoder's own bytesWritten.
      const out = new Transform({ transform (chunk: Buffer, _e, cb) { counter.out.inc(chunk.length); cb(null, chunk) } })
      // A failing source (reset mid-body) fails the compressed stream: the client sees an
      // abort, never a clean end. A client that goes away destroys the source (the upstream).
      const done = () => { if (z.bytesWritten > 0) counter.in.inc(z.bytesWritten) }
      if (Buffer.isBuffer(res.body)) {
        pipeline(z, out, done)
        z.end(res.body)
      } else {
        pipeline(res.body, z, out, done)
        if (c.flushIdleMs > 0) flushWhenIdle(res.body, z, enc, c.flushIdleMs)
      }
      return { ...res, headers, body: out }
    }
  }
}
