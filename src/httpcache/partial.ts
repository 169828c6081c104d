// Partial content (RFC 9111 §3.3–3.4). A 206 with one byte range of a representation whose
// length is known is stored as a partial entry under its own key (key.ts partialKey),
// never where a plain request or the fast path looks. A later range request that lies wholly
// inside the stored span is answered from it. A new 206 for the same key whose strong validator
// equals the stored one, and whose range touches or overlaps the stored span, is combined with
// it; once the span covers the whole representation it is stored as a complete 200 entry, which
// then answers plain requests and every range.
//
// Ranges are forwarded asking for identity (identityRangeHeaders): a range of a coded body could
// be neither stored nor combined. A part whose Vary is not the stored complete entry's is not
// stored (memory.ts, redis-store.ts): its key is not the one lookups compute. Known from its
// headers, it is passed through as such (`detail=VARY-PART`).
//
// An origin that answers a range request with all of it (200) gets that response stored as a
// complete entry, as any fill would be.
//
// A range that overlaps the stored span and runs past one end of it is completed: the origin is
// asked for the missing bytes only (`Range` for them, `If-Range` with the part's strong
// validator), the client gets its range made of the stored bytes and the new ones, and the two
// parts are combined (missingBytes()).
//
// Not done: a plain request for a resource with only a partial entry is forwarded whole, a
// range that runs past both ends of the stored span is forwarded as the client sent it, and one
// partial entry holds one contiguous span (a range with a gap to the stored span replaces it).
import { PassThrough, type Readable } from 'node:stream'
import type { Headers, ProxyResponse, UpstreamRequest } from '../types.js'
import { first } from '../compress/headers.js'
import { pickEncoding } from '../compress/negotiate.js'
import { ageMs, ownedConcat, type CacheEntry } from './entry.js'
import type { Directives } from './directives.js'
import { usability } from './freshness.js'
import { ifRangeMatches, rangeAsk, singleRange, strongLastModified, type ByteRange } from './range.js'
import { ttlSeconds, unsatisfiable } from './respond.js'
import { partialKey, varyNames, wholeKey } from './key.js'
import { buildEntry, passedThrough, storableFromHeaders, streamedMissStatus, tee, type FillJob } from './fill.js'
import { discard } from '../upstream/headers.js'
import type { EntryWriter } from './writer.js'
import type { CacheCore, CacheRoute, Fetcher } from './core.js'

export interface ContentRange { start: number; end: number; total: number }

/** `bytes first-last/complete-length` (RFC 9110 §14.4) with a known length, or null. */
export function parseContentRange (v: string | undefined): ContentRange | null {
  if (v === undefined) return null
  const m = /^\s*bytes\s+(\d{1,15})-(\d{1,15})\/(\d{1,15})\s*$/i.exec(v)
  if (m === null) return null
  const start = Number(m[1]); const end = Number(m[2]); const total = Number(m[3])
  return start <= end && end < total ? { start, end, total } : null
}

/**
 * The strong validator two parts must share to be combined (RFC 9111 §3.4): a strong ETag, or
 * without an ETag a Last-Modified at least one second before Date (RFC 9110 §8.8.2.2).
 */
export function strongValidator (h: Headers): string | undefined {
  const etag = first(h.etag)
  if (etag !== undefined) return etag.startsWith('W/') ? undefined : 'etag ' + etag
  return Number.isNaN(strongLastModified(h)) ? undefined : 'lm ' + first(h['last-modified'])
}

/** The stored partial entry of a variant key, from L1 or else L2 (kept in L1). */
export async function findPartial (core: CacheCore, key: string): Promise<CacheEntry | undefined> {
  const pk = partialKey(key)
  return core.l1.get(pk) ?? await core.fromL2(pk)
}

/**
 * A 206 cut from a stored partial entry when the one requested range lies wholly inside its
 * span, or null (a conditional, an If-Range that does not match, a range outside: ask the origin).
 */
export function fromPartial (core: CacheCore, p: CacheEntry, route: CacheRoute, req: UpstreamRequest, reqD: Directives): ProxyResponse | null {
  const rh = req.headers
  const span = p.range
  if (span === undefined || rh['if-none-match'] !== undefined || rh['if-modified-since'] !== undefined) return null
  const now = core.now()
  const use = usability(p, route.cache, reqD, now)
  if (use !== 'fresh' && use !== 'stale-ok') return null
  const ifRange = first(rh['if-range'])
  if (ifRange !== undefined && !ifRangeMatches(ifRange, p.headers)) return null
  const want = rangeAsk(first(rh.range) ?? '', span.total)
  if (want === 'unsatisfiable') {
    // Past the end of the complete length the part names: a 416, no origin needed.
    const result = use === 'fresh' ? 'hit' : 'stale'
    core.event(route.name, result)
    return unsatisfiable(span.total, result, `sluice; hit; ttl=${ttlSeconds(p, now)}`, String(Math.floor(ageMs(p, now) / 1000)))
  }
  if (want === null || want === 'invalid' || want.start < span.start || want.end >= span.start + p.body.length) return null
  const result = use === 'fresh' ? 'hit' : 'stale'
  core.event(route.name, result)
  const headers: Headers = { ...p.headers, 'content-range': `bytes ${want.start}-${want.end}/${span.total}`, 'content-length': String(want.end - want.start + 1) }
  delete headers.age
  const body = req.method === 'HEAD' ? null : p.body.subarray(want.start - span.start, want.end - span.start + 1)
  return { status: 206, headers, body, cacheResult: result, cacheStatus: `sluice; hit; ttl=${ttlSeconds(p, now)}`, age: String(Math.floor(ageMs(p, now) / 1000)) }
}

/**
 * The headers a range is forwarded with: the client's, asking for identity (RFC 9110 §12.5.3).
 * A range of a coded representation (bytes of a gzip stream) could be neither stored nor
 * combined with other parts, and identity is acceptable to every client that does not exclude
 * it (`identity;q=0`, or `*;q=0` without identity): the range is that client's answer as well,
 * as a fill's identity response is (fill.ts detached). A client that excludes identity keeps
 * its own Accept-Encoding (its coded 206 passes through, not stored).
 */
export function identityRangeHeaders (rh: Headers): Headers {
  const ae = first(rh['accept-encoding'])
  if (ae !== undefined && pickEncoding(ae, IDENTITY, IDENTITY) === null) return rh
  return { ...rh, 'accept-encoding': 'identity' }
}
const IDENTITY = ['identity'] as const

/** No Content-Encoding, or one that names no coding (identity). */
function uncoded (h: Headers): boolean {
  const ce = first(h['content-encoding'])
  return ce === undefined || ce.trim().toLowerCase() === 'identity'
}

/** What a range request that the cache could not answer needs to forward it and keep the 206. */
export interface RangeMiss { route: CacheRoute; req: UpstreamRequest; base: string; path: string; reqD: Directives; fetch: Fetcher; stored: CacheEntry | undefined }

/**
 * Forward a range request as the client sent it, but for Accept-Encoding (identityRangeHeaders). A storable 206 with one known-length range
 * streams to the client while its bytes are collected, then is stored (combined with the
 * stored part when they share a strong validator and touch). Anything else passes through.
 */
export async function rangeMiss (core: CacheCore, writer: EntryWriter, m: RangeMiss): Promise<ProxyResponse> {
  const { route, req } = m
  if (m.stored !== undefined && req.method === 'GET') {
    const completed = await missingBytes(core, writer, m, m.stored)
    if (completed !== null) return completed
  }
  const t0 = core.now()
  const res = await m.fetch({ ...req, headers: identityRangeHeaders(req.headers) })
  const t1 = core.now()
  const pass = (detail: string): ProxyResponse => { core.event(route.name, 'bypass'); return passedThrough(res, detail) }
  if (req.method !== 'GET' || res.body === null) return pass('RANGE')
  const job: FillJob = { route, req, key: m.base, base: m.base, path: m.path, reqD: m.reqD, stale: undefined, fetch: m.fetch }
  if (res.status === 200) return completeAnswer(core, writer, job, res, t0, t1)
  if (res.status !== 206) return pass('RANGE')
  const cr = parseContentRange(first(res.headers['content-range']))
  const length = first(res.headers['content-length'])
  if (cr === null || (length !== undefined && Number(length) !== cr.end - cr.start + 1)) return pass('CONTENT-RANGE')
  if (cr.end - cr.start + 1 > core.config.memory.maxEntryBytes) return pass('TOO-LARGE')
  // A range of a coded body (bytes of a gzip stream: the client excluded identity, or the origin
  // ignored Accept-Encoding: identity) is that client's only, and could not be combined with
  // identity bytes.
  if (!uncoded(res.headers)) return pass('CONTENT-ENCODING')
  // Judged as the complete response it belongs to (buildEntry's `part`).
  const why = storableFromHeaders(core, job, res, t0, t1, 200)
  if (why !== null) return pass(why)
  // A part whose Vary names are not the stored complete response's is refused by the stores
  // (memory.ts, redis-store.ts): no lookup computes its key. That is known from its headers, so
  // it is passed through and said so (VARY-PART), not streamed under `stored` (RFC 9211 §2.6)
  // and then dropped. Not one that completes the representation: the complete entry it makes is
  // stored like any other.
  if (!completes(m.stored, cr, res.headers) && await partRefused(core, m.base, varyNames(res.headers.vary))) return pass('VARY-PART')
  const out = tee(core, res.body as Readable, cr.end - cr.start + 1, true, (chunks, size, _why, err) => {
    if (chunks === null) { if (err !== undefined) core.log.warn({ err: err.message, path: m.path }, 'cache: upstream 206 body failed; nothing stored'); return }
    if (size !== cr.end - cr.start + 1) { core.log.warn({ path: m.path, size, contentRange: `${cr.start}-${cr.end}` }, 'cache: 206 body does not match its Content-Range; not stored'); return }
    const part = buildEntry(core, job, res, ownedConcat(chunks, size), t0, t1, cr)
    if (typeof part === 'string') return
    void storeCombined(core, writer, route, combine(m.stored, part))
  })
  core.event(route.name, 'miss')
  return { status: 206, headers: res.headers, body: out, cacheResult: 'miss', cacheStatus: `sluice; fwd=${m.stored === undefined ? 'miss' : 'partial'}; stored` }
}

/**
 * Does the new part `cr` (with the fields `h`) make the whole representation, alone or
 * combined with the stored part as combine() would? Then storeCombined stores a complete entry.
 */
function completes (stored: CacheEntry | undefined, cr: ContentRange, h: Headers): boolean {
  if (cr.start === 0 && cr.end + 1 === cr.total) return true
  const span = joinedSpan(stored, cr.start, cr.end + 1, cr.total, h)
  return span !== null && span.start === 0 && span.end === cr.total
}

/**
 * The span [start, end) a stored part and a new part [start, end) of `total` bytes with the
 * fields `h` make together, or null when they cannot be combined: another length, no common
 * strong validator (RFC 9111 §3.4), or a gap between them.
 */
function joinedSpan (stored: CacheEntry | undefined, start: number, end: number, total: number, h: Headers): { start: number; end: number } | null {
  const a = stored?.range
  if (stored === undefined || a === undefined || a.total !== total) return null
  const v = strongValidator(h)
  if (v === undefined || v !== strongValidator(stored.headers)) return null
  const aEnd = a.start + stored.body.length // exclusive
  if (start > aEnd || a.start > end) return null
  return { start: Math.min(a.start, start), end: Math.max(aEnd, end) }
}

/**
 * Would a part of `base` with these Vary names be stored nowhere? L1 refuses it while it holds
 * a complete entry with another Vary record; L2 (its SET_SCRIPT) while its record is another.
 * A part L1 takes is stored, whatever L2 says.
 */
async function partRefused (core: CacheCore, base: string, names: readonly string[]): Promise<boolean> {
  if (!core.l1.refusesPart(base, names)) return false
  if (core.l2 === null) return true
  const record = await core.l2.getVary(base)
  return record !== undefined && record.join(',') !== names.join(',')
}

/**
 * The one range the origin must send so that the stored span and it hold `want`: when `want`
 * overlaps the span and runs past one end of it. Null when `want` lies inside the span, runs
 * past both ends, or does not overlap it (then the client's range is forwarded as it is).
 */
export function missingRange (span: { start: number, total: number }, have: number, want: ByteRange): ByteRange | null {
  const end = span.start + have // exclusive
  if (want.start >= span.start && want.start < end && want.end >= end) return { start: end, end: want.end }
  if (want.start < span.start && want.end >= span.start && want.end < end) return { start: want.start, end: span.start - 1 }
  return null
}

/** Fields that describe one stored message (its age, its bytes), not the representation: never carried onto other bytes. */
const PER_MESSAGE = ['age', 'content-range', 'content-length', 'content-md5', 'content-digest']

/** A stored part's fields without the per-message ones. */
function representationFields (h: Headers): Headers {
  const out: Headers = { ...h }
  for (const k of PER_MESSAGE) delete out[k]
  return out
}

/**
 * Complete a range from the stored part (RFC 9111 §3.4): ask the origin for the missing bytes
 * only, with `If-Range` naming the part's strong validator, so that a changed resource comes
 * back whole (200) instead of as bytes of another version. A 206 of exactly those bytes with the
 * same validator is streamed to the client between the stored bytes, and combined with the
 * part in the cache (when it may be stored). The answer's fields are the part's, updated by
 * the new 206's: an origin need not repeat Content-Type and the like in a 206 answering
 * If-Range (RFC 9110 §15.3.7).
 *
 * Null when this does not apply, and when the origin's answer cannot be the client's: a 206 of
 * other bytes or another version, a 416, a 3xx, or a 200 that this client (who sent no
 * If-Range of its own) would get whole although it cannot be stored. That answer is dropped,
 * and the client's own range is forwarded.
 */
async function missingBytes (core: CacheCore, writer: EntryWriter, m: RangeMiss, stored: CacheEntry): Promise<ProxyResponse | null> {
  const { route, req } = m
  const rh = req.headers
  const span = stored.range
  const validator = strongValidator(stored.headers)
  if (span === undefined || validator === undefined || rh['if-none-match'] !== undefined || rh['if-modified-since'] !== undefined) return null
  const clientIfRange = first(rh['if-range'])
  if (clientIfRange !== undefined && !ifRangeMatches(clientIfRange, stored.headers)) return null
  const want = singleRange(first(rh.range) ?? '', span.total)
  if (want === null) return null
  const missing = missingRange(span, stored.body.length, want)
  if (missing === null) return null
  const size = missing.end - missing.start + 1
  if (stored.body.length + size > core.config.memory.maxEntryBytes) return null
  // The part's validator as the origin sent it: a strong ETag, or else its Last-Modified.
  const ifRange = first(stored.headers.etag) ?? first(stored.headers['last-modified'])!
  const sub: UpstreamRequest = { ...req, headers: { ...identityRangeHeaders(rh), range: `bytes=${missing.start}-${missing.end}`, 'if-range': ifRange } }
  const t0 = core.now()
  const res = await m.fetch(sub)
  const t1 = core.now()
  const job: FillJob = { route, req, key: m.base, base: m.base, path: m.path, reqD: m.reqD, stale: undefined, fetch: m.fetch }
  if (res.status === 200 && res.body !== null) {
    // The resource changed (If-Range did not match), or the origin ignores Range. All of it is
    // the client's answer when it asked with If-Range itself, or when it is stored (then later
    // ranges are cut from it); otherwise the client's range is asked for instead.
    const length = Number(first(res.headers['content-length']) ?? NaN)
    if (clientIfRange !== undefined || (length <= core.config.memory.maxEntryBytes && storableFromHeaders(core, job, res, t0, t1) === null)) {
      return completeAnswer(core, writer, job, res, t0, t1)
    }
    discard(res.body as Readable)
    return null
  }
  const fields = { ...representationFields(stored.headers), ...res.headers }
  const cr = res.status === 206 ? parseContentRange(first(res.headers['content-range'])) : null
  const length = first(res.headers['content-length'])
  if (cr === null || cr.start !== missing.start || cr.end !== missing.end || cr.total !== span.total ||
    (length !== undefined && Number(length) !== size) || strongValidator(fields) !== validator || res.body === null ||
    // Coded bytes (an origin that ignored Accept-Encoding: identity) never go between identity bytes.
    !uncoded(res.headers)) {
    // An error is the client's answer as well; anything else it cannot use as its range.
    if (res.status >= 400 && res.status !== 416) { core.event(route.name, 'bypass'); return passedThrough(res, 'RANGE') }
    discard(res.body as Readable | null)
    return null
  }
  // Private or no-store now: the client still gets its range, and nothing is stored.
  const storable = storableFromHeaders(core, job, { ...res, headers: fields }, t0, t1, 200) === null
  const fresh = !storable
    ? res.body as Readable
    : tee(core, res.body as Readable, size, true, (chunks, got, _why, err) => {
      if (chunks === null) { if (err !== undefined) core.log.warn({ err: err.message, path: m.path }, 'cache: upstream 206 body failed; nothing stored'); return }
      if (got !== size) return // reported below
      const part = buildEntry(core, job, { ...res, headers: fields }, ownedConcat(chunks, got), t0, t1, cr)
      if (typeof part === 'string') return
      void storeCombined(core, writer, route, combine(stored, part))
    })!
  // The client's range: stored bytes before the new ones, or after them. The new ones are
  // counted: a body longer or shorter than its Content-Range breaks the client's response
  // instead of shifting the stored bytes.
  const out = new PassThrough()
  const storedEnd = span.start + stored.body.length
  if (missing.start === storedEnd) out.write(stored.body.subarray(want.start - span.start))
  let got = 0
  const broken = (): void => {
    core.log.warn({ path: m.path, contentRange: `${cr.start}-${cr.end}`, bytes: got }, 'cache: 206 body does not match its Content-Range; the response was cut off and nothing stored')
    out.destroy(new Error('upstream 206 body does not match its Content-Range'))
    fresh.destroy()
  }
  fresh.on('data', (c: Buffer) => {
    got += c.length
    if (got > size) { broken(); return }
    if (!out.write(c)) fresh.pause()
  })
  out.on('drain', () => fresh.resume())
  fresh.once('end', () => {
    if (got !== size) { broken(); return }
    if (missing.end === span.start - 1) out.write(stored.body.subarray(0, want.end - span.start + 1))
    out.end()
  })
  fresh.once('error', (err) => out.destroy(err))
  out.once('close', () => { if (!out.writableFinished) fresh.destroy() })
  core.event(route.name, 'miss')
  const headers: Headers = { ...fields, 'content-range': `bytes ${want.start}-${want.end}/${span.total}`, 'content-length': String(want.end - want.start + 1) }
  delete headers['content-md5']
  delete headers['content-digest']
  return { status: 206, headers, body: out, cacheResult: 'miss', cacheStatus: storable ? 'sluice; fwd=partial; stored' : 'sluice; fwd=partial' }
}

/**
 * The origin answered the range request with all of it (it ignores Range, or If-Range did not
 * match): a complete response, streamed to the client and stored like any fill, so the next
 * range of it is cut from the cache (as nginx and Varnish do).
 */
function completeAnswer (core: CacheCore, writer: EntryWriter, job: FillJob, res: ProxyResponse, t0: number, t1: number): ProxyResponse {
  const { route } = job
  const why = storableFromHeaders(core, job, res, t0, t1)
  if (why !== null) { core.event(route.name, 'bypass'); return passedThrough(res, why) }
  const out = tee(core, res.body as Readable, core.config.memory.maxEntryBytes, true, (chunks, size, _why, err) => {
    if (chunks === null) { if (err !== undefined) core.log.warn({ err: err.message, path: job.path }, 'cache: upstream body failed; nothing stored'); return }
    const built = buildEntry(core, job, res, ownedConcat(chunks, size), t0, t1)
    if (typeof built === 'string') return
    writer.normalise(built, route).then((e) => writer.store(e, route), (e: Error) => core.log.warn({ err: e.message, path: job.path }, 'cache: stored body does not decode; not stored'))
  })
  core.event(route.name, 'miss')
  return { status: res.status, headers: res.headers, body: out, cacheResult: 'miss', cacheStatus: streamedMissStatus(res) }
}

/**
 * `part` combined with the stored partial entry when both have the same complete length and
 * strong validator and their spans touch or overlap (the newer bytes win); otherwise `part`.
 */
export function combine (stored: CacheEntry | undefined, part: CacheEntry): CacheEntry {
  const b = part.range!
  const span = joinedSpan(stored, b.start, b.start + part.body.length, b.total, part.headers)
  if (span === null || stored === undefined) return part
  const start = span.start
  const body = Buffer.allocUnsafeSlow(span.end - start)
  stored.body.copy(body, stored.range!.start - start)
  part.body.copy(body, b.start - start)
  // The new part's fields replace the stored part's; those it left out are kept (RFC 9111 §3.4).
  return { ...part, headers: { ...stored.headers, ...part.headers }, body, range: { start, total: b.total } }
}

/** Store a partial entry, or, when its span is the whole representation, the complete 200 it makes. */
async function storeCombined (core: CacheCore, writer: EntryWriter, route: CacheRoute, e: CacheEntry): Promise<void> {
  const { range: span, ...rest } = e
  if (span!.start > 0 || e.body.length < span!.total) { await writer.store(e, route); return }
  // The complete entry lives where plain requests look: the variant key itself.
  const complete: CacheEntry = { ...rest, key: wholeKey(e.key), status: 200, out: undefined }
  try {
    await writer.store(await writer.normalise(complete, route), route)
  } catch (err) {
    core.log.warn({ err: (err as Error).message, path: e.path }, 'cache: combined body does not decode; not stored')
  }
}
