// A stored response and its timing, plus the binary record it becomes in Redis:
// [u32 meta length][meta JSON][body][gzip body][br body]: bodies stay bytes, never base64.
import type { Headers } from '../types.js'
import type { CompressionRouteConfig } from '../compress/config.js'

export interface CacheEntry {
  /** Variant key (base key plus the Vary'd request values). */
  key: string
  /** Base key: method class, host, path and query. */
  base: string
  /** Path and query, for purge by key or prefix. */
  path: string
  status: number
  /** Stored end-to-end headers (hop-by-hop and Connection-named ones never reach here). */
  headers: Headers
  body: Buffer
  /** Encoded copies made once at store time, served to clients that accept them. */
  gzip?: Buffer
  br?: Buffer
  /**
   * Which stored copy is the origin's own encoded body (kept by writer.ts normalise), not one
   * Sluice made: it is served whatever the route's minBytes and types say, as a miss passes the
   * origin's coding through; Sluice's copies are served only while the route would make them.
   */
  fromOrigin?: 'gzip' | 'br'
  requestTime: number
  responseTime: number
  lifetimeMs: number
  initialAgeMs: number
  swrMs: number
  sieMs: number
  mustRevalidate: boolean
  noCache: boolean
  tags: string[]
  varyNames: string[]
  /** The response may be served to requests that carry Authorization (public, s-maxage, must-revalidate). */
  authOk: boolean
  /** A partial entry (status 206, RFC 9111 §3.3): its body is bytes start.. of a representation of `total` bytes. */
  range?: { start: number; total: number }
  /**
   * Response headers ready to send, per encoding; built on first use, never stored in Redis.
   * `for` is the route compression config they were built for, and `codings` what a hit may
   * pick from under it (respond.ts servable: the stored copies that config would serve): after
   * a reload gives the route another, both are worked out again (respond.ts outHeaders).
   */
  out?: { for: Readonly<CompressionRouteConfig>; codings: readonly string[] } & Partial<Record<'identity' | 'gzip' | 'br', Headers>>
  /** The Age and hit Cache-Status strings of the last hit, reused while their seconds stay the same; never stored in Redis. */
  said?: { age: number; ageText: string; ttl: number; hitStatus: string }
}

/**
 * The memory an L1 entry really costs, as counted against cache.memory.maxBytes: its bodies, plus
 * what V8 holds for it. Measured with a heap snapshot under churn (bench scenario memory, 43k
 * entries of 1 KB): about 1.1 KB of objects, strings and index structures per entry beyond its
 * body, which the count must include for maxBytes to bound resident memory, not just bodies.
 * Headers are counted once as stored, and once more per coding the entry holds (identity, and
 * gzip and br when it has them): each coding gets its own ready-to-send header object
 * (respond.ts outHeaders, sharing the stored value strings) and its own response head block, one
 * flat string of those fields (send.ts storedBlock), both built on its first hit and kept while
 * the entry is. An identity-only entry counts its headers twice, as when the overhead was measured.
 */
export const ENTRY_OVERHEAD_BYTES = 1024
/** What one copy of the headers costs: names and values, and about 40 bytes of structure per field. */
function headerBytes (h: Headers): number {
  let n = 0
  for (const k in h) { const v = h[k]; n += k.length + (Array.isArray(v) ? v.join('').length : (v?.length ?? 0)) + 40 }
  return n
}
export function entrySize (e: CacheEntry): number {
  return sizeWith(e, e.gzip, e.br)
}

/**
 * entrySize as if the entry held these encoded copies (undefined: none). No default
 * parameters: an explicit undefined must mean "without", and a default would put the entry's
 * own copy back.
 */
export function sizeWith (e: CacheEntry, gzip: Buffer | undefined, br: Buffer | undefined): number {
  const h = headerBytes(e.headers)
  const codings = 1 + (gzip !== undefined ? 1 : 0) + (br !== undefined ? 1 : 0)
  return e.body.length + (gzip?.length ?? 0) + (br?.length ?? 0) + (1 + codings) * h + e.key.length + e.base.length + e.path.length + ENTRY_OVERHEAD_BYTES
}

/** The empty tags/Vary list every entry without any shares (frozen: nothing appends to it). */
export const NO_STRINGS = Object.freeze([]) as unknown as string[]

/**
 * A copy of `bytes` that owns its memory, for anything the cache keeps. Node serves small
 * allocations (Buffer.concat, Buffer.from, zlib's output under 4 KB) as slices of a shared
 * 8 KB slab, and one kept slice keeps the whole slab alive: 1 KB entries under churn then pin
 * up to 8 KB each. A buffer that already owns its whole ArrayBuffer is returned as is.
 */
export function owned (bytes: Buffer): Buffer {
  if (bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.length) return bytes
  const b = Buffer.allocUnsafeSlow(bytes.length)
  bytes.copy(b)
  return b
}

/** Concatenate into one buffer that owns its memory (see owned). */
export function ownedConcat (chunks: readonly Buffer[], size: number): Buffer {
  if (chunks.length === 1) return owned(chunks[0])
  const b = Buffer.allocUnsafeSlow(size)
  let off = 0
  for (const c of chunks) { c.copy(b, off); off += c.length }
  return b
}

export function ageMs (e: CacheEntry, now: number): number {
  return e.initialAgeMs + Math.max(0, now - e.responseTime)
}

/** ms of freshness left (negative when stale). */
export function ttlMs (e: CacheEntry, now: number): number {
  return e.lifetimeMs - ageMs(e, now)
}

/** How long Redis should keep it: freshness plus the longest stale window. */
export function storeTtlMs (e: CacheEntry, now: number): number {
  const stale = e.mustRevalidate ? 0 : Math.max(e.swrMs, e.sieMs)
  const keep = ttlMs(e, now) + stale
  // Entries that only revalidate (no-cache, max-age=0 with a validator) are kept a while for 304s.
  const hasValidator = e.headers.etag !== undefined || e.headers['last-modified'] !== undefined
  return Math.max(keep, hasValidator ? 300_000 : 0)
}

export function encodeEntry (e: CacheEntry): Buffer {
  const { body, gzip, br, out: _out, said: _said, ...rest } = e
  const meta = Buffer.from(JSON.stringify({ ...rest, v: 1, bl: body.length, gl: gzip?.length ?? -1, rl: br?.length ?? -1 }), 'utf8')
  const head = Buffer.allocUnsafe(4)
  head.writeUInt32BE(meta.length, 0)
  return Buffer.concat([head, meta, body, gzip ?? Buffer.alloc(0), br ?? Buffer.alloc(0)])
}

export function decodeEntry (buf: Buffer): CacheEntry | undefined {
  if (buf.length < 4) return undefined
  const ml = buf.readUInt32BE(0)
  if (4 + ml > buf.length) return undefined
  const meta = JSON.parse(buf.subarray(4, 4 + ml).toString('utf8')) as CacheEntry & { v: number; bl: number; gl: number; rl: number }
  if (meta.v !== 1) return undefined
  // The bodies must fill the rest exactly: subarray() would silently cut a short record's body
  // (a truncated write, a damaged value), and serve it. Thrown like unparsable meta, so the
  // caller counts it as a failed read and answers a miss.
  const len = (n: unknown, optional: boolean) => Number.isSafeInteger(n) && ((n as number) >= 0 || (optional && n === -1))
  if (!len(meta.bl, false) || !len(meta.gl, true) || !len(meta.rl, true) ||
      4 + ml + meta.bl + Math.max(meta.gl, 0) + Math.max(meta.rl, 0) !== buf.length) {
    throw new Error(`cache record of ${buf.length} bytes does not match its declared lengths`)
  }
  let off = 4 + ml
  // Copies, so an entry backfilled into L1 does not pin the whole Redis reply buffer (or a slab).
  const take = (n: number) => { const b = owned(buf.subarray(off, off + n)); off += n; return b }
  const e: CacheEntry = { ...meta, body: take(meta.bl) }
  if (meta.gl >= 0) e.gzip = take(meta.gl)
  if (meta.rl >= 0) e.br = take(meta.rl)
  delete (e as unknown as Record<string, unknown>).v
  delete (e as unknown as Record<string, unknown>).bl
  delete (e as unknown as Record<string, unknown>).gl
  delete (e as unknown as Record<string, unknown>).rl
  return e
}
