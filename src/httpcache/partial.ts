// Partial content (RFC 9111 §3.3–3.4). A 206 with one byte range of a representation whose
// length is known is stored as a partial entry under its own key (key.ts partialKey),
// never where a plain request or the fast path looks. A later range request that lies wholly
// inside the stored span is answered from it. A new 206 for the same key whose strong validator
// equals the stored one, and whose range touches or overlaps the stored span, is combined with
// it; once the span covers the whole representation it is stored as a complete 200 entry, which
// then answers plain requests and every range.
//
// An origin that answers a range request with all of it (200) gets that response stored as a
// complete entry, as any fill would be.
//
// Not done: a plain request for a resource with only a partial entry is forwarded whole (the
// cache does not ask the origin for just the missing bytes), and one partial entry holds one
// contiguous span (a range with a gap to the stored span replaces it).
import type { Readable } from 'node:stream'
import type { Headers, ProxyResponse, UpstreamRequest } from '../types.js'
import { first } from '../compress/headers.js'
import { ageMs, ownedConcat, type CacheEntry } from './entry.js'
import { parseHttpDate, type Directives } from './directives.js'
import { usability } from './freshness.js'
import { ifRangeMatches, singleRange } from './range.js'
import { ttlSeconds } from './respond.js'
import { partialKey, wholeKey } from './key.js'
import { buildEntry, passedThrough, storableFromHeaders, tee, type FillJob } from './fill.js'
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
  const lm = first(h['last-modified'])
  const date = first(h.date)
  if (lm === undefined || date === undefined) return undefined
  const l = parseHttpDate(lm); const d = parseHttpDate(date)
  return !Number.isNaN(l) && !Number.isNaN(d) && d - l >= 1000 ? 'lm ' + lm : undefined
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
  if (ifRange !== undefined && !ifRangeMatches(ifRange, first(p.headers.etag), first(p.headers['last-modified']))) return null
  const want = singleRange(first(rh.range) ?? '', span.total)
  if (want === null || want.start < span.start || want.end >= span.start + p.body.length) return null
  const result = use === 'fresh' ? 'hit' : 'stale'
  core.event(route.name, result)
  const headers: Headers = { ...p.headers, 'content-range': `bytes ${want.start}-${want.end}/${span.total}`, 'content-length': String(want.end - want.start + 1) }
  delete headers.age
  const body = req.method === 'HEAD' ? null : p.body.subarray(want.start - span.start, want.end - span.start + 1)
  return { status: 206, headers, body, cacheResult: result, cacheStatus: `sluice; hit; ttl=${ttlSeconds(p, now)}`, age: String(Math.floor(ageMs(p, now) / 1000)) }
}

/** What a range request that the cache could not answer needs to forward it and keep the 206. */
export interface RangeMiss { route: CacheRoute; req: UpstreamRequest; base: string; path: string; reqD: Directives; fetch: Fetcher; stored: CacheEntry | undefined }

/**
 * Forward a range request as the client sent it. A storable 206 with one known-length range
 * streams to the client while its bytes are collected, then is stored (combined with the
 * stored part when they share a strong validator and touch). Anything else passes through.
 */
export async function rangeMiss (core: CacheCore, writer: EntryWriter, m: RangeMiss): Promise<ProxyResponse> {
  const { route, req } = m
  const t0 = core.now()
  const res = await m.fetch(req)
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
  // Judged as the complete response it belongs to (buildEntry's `part`).
  const why = storableFromHeaders(core, job, res, t0, t1, 200)
  if (why !== null) return pass(why)
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
  return { status: res.status, headers: res.headers, body: out, cacheResult: 'miss', cacheStatus: 'sluice; fwd=miss; stored' }
}

/**
 * `part` combined with the stored partial entry when both have the same complete length and
 * strong validator and their spans touch or overlap (the newer bytes win); otherwise `part`.
 */
export function combine (stored: CacheEntry | undefined, part: CacheEntry): CacheEntry {
  const a = stored?.range; const b = part.range!
  if (stored === undefined || a === undefined || a.total !== b.total) return part
  const v = strongValidator(part.headers)
  if (v === undefined || v !== strongValidator(stored.headers)) return part
  const aEnd = a.start + stored.body.length; const bEnd = b.start + part.body.length // exclusive
  if (b.start > aEnd || a.start > bEnd) return part // a gap between them
  const start = Math.min(a.start, b.start)
  const body = Buffer.allocUnsafeSlow(Math.max(aEnd, bEnd) - start)
  stored.body.copy(body, a.start - start)
  part.body.copy(body, b.start - start)
  return { ...part, body, range: { start, total: b.total } }
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
