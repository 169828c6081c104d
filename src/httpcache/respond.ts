// Answering from a stored entry: the client's own conditionals (304), one byte range (206), the
// stored coding the client accepts, Age and Cache-Status. Nothing here compresses or parses a
// stored body; the response headers of each coding are built once per entry and route
// compression config (the header rules for encoded bytes are compress/headers.ts's and
// compress/variants.ts's, shared with the compress stage) and kept on the entry.
import type { Headers, ProxyResponse, UpstreamRequest, CacheResult } from '../types.js'
import { first, mergeVary } from '../compress/headers.js'
import { pickStored, shouldEncode, variantHeaders, variesByEncoding } from '../compress/variants.js'
import { ageMs, ttlMs, type CacheEntry } from './entry.js'
import { usability } from './freshness.js'
import { parseHttpDate } from './directives.js'
import type { Directives } from './directives.js'
import { rangeAsk, ifRangeMatches } from './range.js'
import type { CacheCore, CacheRoute } from './core.js'

type StoredCoding = 'identity' | 'gzip' | 'br'

/** Headers a 304 carries from the stored response (RFC 9110 §15.4.5). */
const NOT_MODIFIED_HEADERS = ['cache-control', 'content-location', 'date', 'etag', 'expires', 'vary', 'last-modified']

// The codings a hit may get, for the negotiator: constants, so a hit allocates no list.
const ONLY_IDENTITY = ['identity'] as const
const WITH_GZIP = ['gzip', 'identity'] as const
const WITH_BR = ['br', 'identity'] as const
const WITH_BOTH = ['br', 'gzip', 'identity'] as const

/**
 * The codings of `e` a hit may be served in under the route's compression config `comp`:
 * identity, the origin's own coding (kept by the writer; a miss passes it through as well), and
 * Sluice's stored copies only while `comp` would still make them (compression on, a body of at
 * least minBytes, a compressible type: the rules they were made by, which a reload may change).
 * Copies made before a reload that raised minBytes or dropped the type, read from L1 or L2,
 * are then left unserved. (With compression off pickStored serves identity anyway.)
 */
function servableCodings (e: CacheEntry, comp: CacheRoute['compression']): readonly string[] {
  if (e.gzip === undefined && e.br === undefined) return ONLY_IDENTITY
  const ours = shouldEncode(e.body, e.headers, comp)
  const gzip = e.gzip !== undefined && (ours || e.fromOrigin === 'gzip')
  const br = e.br !== undefined && (ours || e.fromOrigin === 'br')
  return br ? (gzip ? WITH_BOTH : WITH_BR) : gzip ? WITH_GZIP : ONLY_IDENTITY
}

/**
 * servableCodings for the route's current config, worked out once per entry and config and
 * kept with the entry's headers (e.out): a hit pays one identity comparison for it.
 */
function servable (e: CacheEntry, comp: CacheRoute['compression']): readonly string[] {
  const out = e.out
  if (out !== undefined && out.for === comp) return out.codings
  const codings = servableCodings(e, comp)
  e.out = { for: comp, codings }
  return codings
}

/**
 * The Age value and the fresh-hit Cache-Status of `e` at `now`. Both change once a second at
 * most, so the strings of the last hit are kept on the entry and reused: a hit builds no
 * string while its seconds stay the same.
 */
function said (e: CacheEntry, now: number): NonNullable<CacheEntry['said']> {
  const a = ageMs(e, now)
  const age = Math.floor(a / 1000)
  const ttl = Math.floor((e.lifetimeMs - a) / 1000)
  const s = e.said
  if (s !== undefined && s.age === age && s.ttl === ttl) return s
  const fresh = { age, ageText: String(age), ttl, hitStatus: `sluice; hit; ttl=${ttl}` }
  e.said = fresh
  return fresh
}

/** The Cache-Status of a fresh hit (`sluice; hit; ttl=N`), built once per second per entry. */
export function hitStatus (e: CacheEntry, now: number): string {
  return said(e, now).hitStatus
}

/** Whole seconds of freshness left (negative when stale), as Cache-Status reports it. */
export function ttlSeconds (e: CacheEntry, now: number): number {
  return Math.floor(ttlMs(e, now) / 1000)
}

/**
 * Weak comparison of entity tags (RFC 9110 §8.8.3.2). `*` matches any stored representation,
 * with an ETag or without (§13.1.2: the condition is false when a current representation exists).
 */
function etagMatches (header: string, etag: string | undefined): boolean {
  const opaque = etag === undefined ? undefined : etag.startsWith('W/') ? etag.slice(2) : etag
  for (const raw of header.split(',')) {
    const t = raw.trim()
    if (t === '*') return true
    if (opaque !== undefined && (t.startsWith('W/') ? t.slice(2) : t) === opaque) return true
  }
  return false
}

/**
 * Does the client's If-None-Match (or, without it, If-Modified-Since) match this stored 200?
 * An If-Modified-Since that is not a valid HTTP-date is ignored (never a 304). It compares with
 * Last-Modified; a response without Last-Modified is judged by
 * its Date, or without a valid Date by when it was received (RFC 9110 §13.1.3): not later than
 * the IMS date means not modified.
 */
function notModified (e: CacheEntry, rh: Headers): boolean {
  const inm = rh['if-none-match']
  if (inm !== undefined) return etagMatches(first(inm)!, first(e.headers.etag))
  // Only a valid HTTP-date counts (RFC 9110 §13.1.3); anything else is ignored: no 304.
  const since = parseHttpDate(first(rh['if-modified-since'])!.trim())
  if (Number.isNaN(since)) return false
  const lastModified = first(e.headers['last-modified'])
  if (lastModified !== undefined) {
    const lm = Date.parse(lastModified)
    return !Number.isNaN(lm) && lm <= since
  }
  const date = parseHttpDate(first(e.headers.date) ?? '')
  // Date has whole seconds; the receive time is floored to match before comparing.
  const at = Number.isNaN(date) ? Math.floor(e.responseTime / 1000) * 1000 : date
  return at <= since
}

/**
 * The response headers for one stored coding, built on first use and kept on the entry for the
 * route's compression config they were built with. A reload that gives the route another one
 * (compression turned off or on, other types, threshold or debug header) has them built again
 * on the next hit, and the fast path's response head with them (send.ts keys it on this
 * object): a hit pays one identity comparison for that.
 */
export function outHeaders (e: CacheEntry, coding: StoredCoding, route: CacheRoute): Headers {
  const comp = route.compression
  servable(e, comp) // e.out is this config's from here: its codings, and the blocks built under it
  const out = e.out!
  const cached = out[coding]
  if (cached !== undefined) return cached
  let h: Headers
  if (coding === 'identity') {
    // As stored (an origin coding Sluice cannot decode keeps its Content-Encoding).
    h = { ...e.headers }
    // RFC 9110 §8.6: no Content-Length in a 204.
    if (e.status === 204) delete h['content-length']
    else h['content-length'] = String(e.body.length)
    // Other clients get other bytes: from a stored copy this config serves (never while the
    // route's compression is off: pickStored), or compressed on the fly before the copies exist
    // (a miss, the entry's first hits) or when the cache keeps none (deflate). Built once per
    // entry, coding and config, so a hit pays nothing for the check.
    if ((comp.enabled && out.codings.length > 1) || (e.status !== 204 && e.range === undefined && variesByEncoding(e.body, e.headers, comp))) mergeVary(h)
  } else {
    h = variantHeaders(e.headers, { identity: e.body, [coding]: coding === 'gzip' ? e.gzip : e.br }, coding, route)
  }
  delete h.age // Sluice sends its own
  // An origin response without Date gets the time it was received (RFC 9110 §6.6.1), not each
  // hit's clock: a Date that moves with the hits, next to Age, makes a downstream cache count
  // the age twice (an Expires lifetime shrinks as Age grows).
  if (h.date === undefined) h.date = new Date(e.responseTime).toUTCString()
  e.out = { ...out, [coding]: h }
  return h
}

/** Answer from a stored entry: 304 to a matching conditional (412 for a POST query), else the best stored coding. */
export function respond (core: CacheCore, e: CacheEntry, route: CacheRoute, req: UpstreamRequest, status: string, result: CacheResult, now: number): ProxyResponse {
  const age = said(e, now).ageText
  core.event(route.name, result)
  const rh = req.headers
  let coding: StoredCoding = 'identity'
  if (e.gzip !== undefined || e.br !== undefined) {
    const pick = pickStored(rh, servable(e, route.compression), route.compression)
    if (pick === 'gzip' || pick === 'br') coding = pick
  }
  const getOrHead = req.method === 'GET' || req.method === 'HEAD'
  // A cached POST query (RFC 9110 §13.1.2, §13.1.3): If-Modified-Since applies to GET and HEAD
  // only and is ignored; an If-None-Match that matches is a false condition, answered 412 (a
  // 304 is for GET and HEAD only). Evaluated rather than ignored: a cache answering from storage
  // evaluates preconditions (RFC 9110 §13.2.1), and 412 is what the RFC asks of the origin too.
  if (!getOrHead && e.status === 200 && rh['if-none-match'] !== undefined && etagMatches(first(rh['if-none-match'])!, first(e.headers.etag))) {
    return { status: 412, headers: { 'content-length': '0' }, body: Buffer.alloc(0), cacheResult: result, cacheStatus: status, age }
  }
  if (getOrHead && (rh['if-none-match'] !== undefined || rh['if-modified-since'] !== undefined) && e.status === 200 && notModified(e, rh)) {
    // The fields of the 200 this client would get: for an encoded copy, its weak ETag and a
    // Vary with Accept-Encoding (a downstream cache updates its stored headers from them).
    const full = outHeaders(e, coding, route)
    const h: Headers = {}
    for (const k of NOT_MODIFIED_HEADERS) if (full[k] !== undefined) h[k] = full[k]
    return { status: 304, headers: h, body: null, cacheResult: result, cacheStatus: status, age }
  }
  const body = req.method === 'HEAD' ? null : coding === 'identity' ? e.body : coding === 'gzip' ? e.gzip! : e.br!
  return { status: e.status, headers: outHeaders(e, coding, route), body, cacheResult: result, cacheStatus: status, age }
}

/**
 * One byte range cut from a usable stored 200 (RFC 9110 §14), the whole 200 when If-Range no
 * longer matches, or null (several ranges, a conditional, nothing usable: ask the origin). A
 * stale entry within stale-while-revalidate answers too (the caller starts the refresh).
 */
export function ranged (core: CacheCore, e: CacheEntry, route: CacheRoute, req: UpstreamRequest, reqD: Directives): ProxyResponse | null {
  const rh = req.headers
  if (e.status !== 200 || rh['if-none-match'] !== undefined || rh['if-modified-since'] !== undefined) return null
  const now = core.now()
  const use = usability(e, route.cache, reqD, now)
  if (use !== 'fresh' && use !== 'stale-ok' && use !== 'swr') return null
  const result = use === 'fresh' ? 'hit' : 'stale'
  const status = use === 'swr' ? `sluice; fwd=stale; ttl=${ttlSeconds(e, now)}; detail=STALE-WHILE-REVALIDATE` : `sluice; hit; ttl=${ttlSeconds(e, now)}`
  const ifRange = first(rh['if-range'])
  if (ifRange !== undefined && !ifRangeMatches(ifRange, e.headers)) {
    return respond(core, e, route, req, status, result, now) // the representation changed: all of it
  }
  const r = rangeAsk(first(rh.range) ?? '', e.body.length)
  if (r === null || r === 'invalid') return null
  core.event(route.name, result)
  const age = String(Math.floor(ageMs(e, now) / 1000))
  // Starts at or past the end (RFC 9110 §15.5.17): the stored length says so, no origin needed.
  if (r === 'unsatisfiable') return unsatisfiable(e.body.length, result, status, age)
  // Ranges are cut from the identity bytes (encoded variants would need ranges of their own).
  const headers: Headers = { ...outHeaders(e, 'identity', route), 'content-range': `bytes ${r.start}-${r.end}/${e.body.length}`, 'content-length': String(r.end - r.start + 1) }
  return { status: 206, headers, body: e.body.subarray(r.start, r.end + 1), cacheResult: result, cacheStatus: status, age }
}

/** A 416 for a representation of `length` bytes: `Content-Range: bytes *\/length` (RFC 9110 §14.4). */
export function unsatisfiable (length: number, result: CacheResult, status: string, age: string): ProxyResponse {
  return { status: 416, headers: { 'content-range': `bytes */${length}`, 'content-length': '0' }, body: Buffer.alloc(0), cacheResult: result, cacheStatus: status, age }
}
