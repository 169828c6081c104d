// A fill: one upstream request that refreshes or creates a stored entry for a key.
//
// The request is detached from the client (no client body or signal, no client conditionals,
// identity encoding asked, the stored validators sent), so the fill completes even if that
// client leaves. With a client, the response streams to it through a tee while the cache
// collects the body (up to maxEntryBytes); without (a HEAD, a background refresh), the answer
// comes from the stored entry once the fill is done. A 304 refreshes the stored entry; a 5xx or
// a failure serves stale when stale-if-error allows.
import { PassThrough, type Readable } from 'node:stream'
import { createHash } from 'node:crypto'
import type { Headers, ProxyResponse, UpstreamRequest } from '../types.js'
import { isSluiceError } from '../errors.js'
import { first, hasNoTransform } from '../compress/headers.js'
import { discard, drainToNull } from '../upstream/headers.js'
import { ENTRY_OVERHEAD_BYTES, NO_STRINGS, ownedConcat, type CacheEntry } from './entry.js'
import { partialKey, variantKey, varyNames } from './key.js'
import { freshness, responseDirectives, storable, withheldFields, SURROGATE_CAPABILITY, type BypassReason } from './policy.js'
import type { Directives } from './directives.js'
import { canServeStaleOnError, entryTiming } from './freshness.js'
import { respond, ttlSeconds } from './respond.js'
import type { EntryWriter } from './writer.js'
import type { CacheCore, CacheRoute, Fetcher, Fill } from './core.js'

/** Everything a fill needs to know, in one value. */
export interface FillJob {
  route: CacheRoute
  /** The request that caused the fill (a client's, or a copy for a background refresh). */
  req: UpstreamRequest
  /** The variant key looked up; the stored entry's key follows the response's own Vary. */
  key: string
  base: string
  /** Path and query as keyed (for purge by key or prefix). */
  path: string
  reqD: Directives
  /** A stored entry to revalidate, or serve on error. */
  stale: CacheEntry | undefined
  fetch: Fetcher
}

/** How a fill reports to miss coalescing (coalesce.ts). */
export interface FillHooks {
  /** The fill of job.key has started: other requests for the key may wait for `fill`. */
  started (key: string, fill: Promise<Fill>): void
  /** It has ended with `f` (`stored`: the store job, when something was stored). */
  ended (job: FillJob, fill: Promise<Fill>, f: Fill, leased: boolean, stored?: Promise<unknown>): void
}

/** Conditional request fields of the client's, never sent on a fill (the cache sends its own). */
const CONDITIONAL = ['if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since', 'if-range', 'range']
/** Headers a 304 from the origin must not overwrite in the stored response (RFC 9111 §3.2). */
const KEEP_ON_UPDATE = new Set(['content-length', 'content-encoding', 'transfer-encoding', 'content-range', 'content-md5', 'etag'])

/** The request a fill sends: no client body or signal, no client conditionals, identity encoding. */
function detached (req: UpstreamRequest, stale: CacheEntry | undefined): UpstreamRequest {
  const post = req.method === 'POST'
  const headers: Headers = { ...req.headers }
  for (const h of CONDITIONAL) delete headers[h]
  // Sluice encodes stored entries itself (once, br and gzip), so it asks the origin for identity.
  headers['accept-encoding'] = 'identity'
  // Edge Architecture: announce Sluice as a surrogate, so the origin can target `;sluice` directives at it.
  const cap = headers['surrogate-capability']
  headers['surrogate-capability'] = cap === undefined ? SURROGATE_CAPABILITY : [cap].flat().join(', ') + ', ' + SURROGATE_CAPABILITY
  if (stale !== undefined && !post) {
    const etag = first(stale.headers.etag)
    const lm = first(stale.headers['last-modified'])
    if (etag !== undefined) headers['if-none-match'] = etag
    if (lm !== undefined) headers['if-modified-since'] = lm
  }
  // A POST query fill sends its (buffered) body; every other fill is a bodiless GET.
  const body = post && Buffer.isBuffer(req.body) ? req.body : null
  // The client's SERVER span (tracing): the fill's attempts are its CLIENT children, and the
  // origin gets a traceparent naming them, never the client's own.
  return { method: post ? 'POST' : 'GET', path: req.path, headers, body, host: req.host, protocol: req.protocol, clientIp: req.clientIp, forwarded: req.forwarded, requestIdHeader: req.requestIdHeader, trace: req.trace }
}

/**
 * Decided from the headers, before the body streams: may the response be stored, or why not.
 * `asStatus`: the status it is judged by (a 206 part is judged as the 200 it belongs to).
 */
export function storableFromHeaders (core: CacheCore, job: FillJob, res: ProxyResponse, t0: number, t1: number, asStatus = res.status): BypassReason | null {
  const p = core.policy(job.route.cache)
  const { d, targeted } = responseDirectives(res.headers, p.targetedField)
  const why = storable(asStatus, res.headers, d, job.req.headers, job.reqD, p, freshness(asStatus, res.headers, d, targeted, p, t0, t1))
  if (why !== null) return why
  const length = declaredLength(res)
  if (length > core.config.memory.maxEntryBytes) return 'TOO-LARGE'
  // Without an L2, a body L1 cannot hold even with the least bookkeeping an entry has is stored
  // nowhere: said now, before the body streams to the client under `stored`.
  if (core.l2 === null && length + ENTRY_OVERHEAD_BYTES > core.l1.capacity) return 'TOO-LARGE'
  return null
}

/**
 * The stored entry for an upstream response, or why it may not be stored. With `part` (a 206
 * of one byte range, partial.ts), the entry is that part: judged as the 200 it belongs to (206
 * is heuristically cacheable as 200 is, RFC 9110 §15.3.7), kept under the variant's part key,
 * without Content-Range and Content-Length (each answer cut from it has its own), and never
 * given an ETag from its bytes (they are not the representation's).
 */
export function buildEntry (core: CacheCore, job: FillJob, res: ProxyResponse, body: Buffer, t0: number, t1: number, part?: NonNullable<CacheEntry['range']>): CacheEntry | BypassReason {
  const { route, req, base, path } = job
  const p = core.policy(route.cache)
  const { d, targeted } = responseDirectives(res.headers, p.targetedField)
  const status = part === undefined ? res.status : 200
  const f = freshness(status, res.headers, d, targeted, p, t0, t1)
  const why = storable(status, res.headers, d, req.headers, job.reqD, p, f)
  if (why !== null) return why
  // A copy without the withheld fields (built, not deleted from: `delete` turns a V8 object
  // into a larger dictionary, and this one lives as long as the entry).
  const withheld = withheldFields(d)
  const headers: Headers = {}
  for (const k in res.headers) {
    if (k === 'set-cookie2' || (withheld.length > 0 && withheld.includes(k))) continue
    if (part !== undefined && (k === 'content-range' || k === 'content-length')) continue
    headers[k] = res.headers[k]
  }
  if (route.cache.etagFromBody && headers.etag === undefined && res.status === 200) {
    headers.etag = '"' + createHash('sha256').update(body).digest('base64url').slice(0, 27) + '"'
  }
  // The variant key follows the response's own Vary (the lookup key was computed before it was known).
  const names = varyNames(res.headers.vary)
  const key = variantKey(base, names, req.headers)
  return {
    key: part === undefined ? key : partialKey(key),
    base,
    path,
    status: res.status,
    headers,
    body,
    ...entryTiming(f, t0, t1),
    tags: tagsOf(res.headers),
    varyNames: names,
    ...(part === undefined ? {} : { range: { start: part.start, total: part.total } }),
    authOk: d.has('public') || d.has('s-maxage') || d.has('must-revalidate')
  }
}

/** The purge tags a response names in Cache-Tag and Surrogate-Key (at most 64). */
export function tagsOf (h: Headers): string[] {
  const tagHeader = [h['cache-tag'], h['surrogate-key']].flat().filter(Boolean).join(' ')
  return tagHeader === '' ? NO_STRINGS : [...new Set(tagHeader.split(/[\s,]+/).filter(Boolean))].slice(0, 64)
}

/**
 * Stream `body` to the client (a new PassThrough, or nobody when `toClient` is false) while
 * collecting up to `limit` bytes for the cache. `collected` is called once: with the chunks at
 * the end, or with null and why (past the limit: at once; a body error). Backpressure follows
 * the client; a client that leaves stops the stream only once nothing is being collected.
 */
export function tee (core: CacheCore, body: Readable, limit: number, toClient: boolean, collected: (chunks: Buffer[] | null, size: number, why?: 'TOO-LARGE' | 'BODY-ERROR', err?: Error) => void): PassThrough | null {
  const chunks: Buffer[] = []
  let size = 0
  let collecting = true
  const out = toClient ? new PassThrough() : null
  let clientGone = out === null
  out?.on('close', () => { if (!out.writableFinished) { clientGone = true; body.resume() } })
  out?.on('drain', () => body.resume())
  body.on('data', (c: Buffer) => {
    if (collecting) {
      size += c.length
      if (size > limit) { collecting = false; chunks.length = 0; collected(null, size, 'TOO-LARGE') } else chunks.push(c)
    }
    // While the cache is still collecting, a slow client does not hold the fill back: the chunks
    // are held for the cache anyway, and the client's buffer holds the same ones. Past the
    // limit (or with nothing collected), the upstream goes at the client's pace.
    if (!clientGone && out !== null && !out.write(c) && !collecting) body.pause()
    if (clientGone && !collecting) discard(body) // nobody wants the rest
  })
  body.once('end', () => { if (collecting) { collecting = false; collected(chunks, size) } out?.end() })
  body.once('error', (err) => {
    if (collecting) { collecting = false; collected(null, size, 'BODY-ERROR', err) }
    out?.destroy(err)
  })
  // Closed with neither 'end' nor 'error' (destroyed): the fill ends with nothing stored.
  core.track(new Promise<void>((resolve) => { body.once('close', () => { if (collecting) { collecting = false; collected(null, size, 'BODY-ERROR') } resolve() }) }))
  return out
}

/** Does the response carry a validator, an ETag or a Last-Modified? */
function hasValidator (h: Headers): boolean {
  return first(h.etag) !== undefined || first(h['last-modified']) !== undefined
}

/**
 * Does the 304 `res` select the stored entry `e` for update? Not when its Vary names other
 * request fields than the entry's: the entry's secondary key would no longer match the headers
 * it would then carry. Nor when it carries no validator at all while the entry has one (RFC
 * 9111 §4.3.4: such a 304 selects only a stored response that lacks a validator too): nothing
 * in it says which representation it is about (RFC 9110 §15.4.5 has the origin repeat the ETag
 * it would send in a 200, though not Last-Modified: an origin that validates by Last-Modified
 * alone and answers a bare 304 is within RFC 9110, and its stale entries are then revalidated
 * on every use, never freshened). The values of the validators it does carry are
 * not compared: a 304 answers the validators the cache sent (an origin that checks
 * If-Modified-Since may name a tag of its own, as behind a balancer whose servers make
 * different tags), and the stored ETag is kept either way (KEEP_ON_UPDATE), as the public
 * cache test suite requires (304-etag-update-response-ETag).
 */
function selects (res: ProxyResponse, e: CacheEntry): boolean {
  if (res.headers.vary !== undefined && varyNames(res.headers.vary).join(',') !== e.varyNames.join(',')) return false
  return hasValidator(res.headers) || !hasValidator(e.headers)
}

/**
 * A 304 from the origin refreshes the stored entry: new headers over old, new times. The age
 * counts from this validation (RFC 9111 §4.3.4, §5.1): Age is the 304's, or none (the old
 * response's Age described the old response); Date is the 304's, or the validation time.
 */
function revalidated (core: CacheCore, e: CacheEntry, res: ProxyResponse, route: CacheRoute, t0: number, t1: number): CacheEntry {
  const headers: Headers = { ...e.headers }
  delete headers.age
  headers.date = new Date(t1).toUTCString()
  for (const [k, v] of Object.entries(res.headers)) if (!KEEP_ON_UPDATE.has(k) && v !== undefined) headers[k] = v
  const p = core.policy(route.cache)
  const { d, targeted } = responseDirectives(headers, p.targetedField)
  for (const name of withheldFields(d)) delete headers[name]
  const f = freshness(e.status, headers, d, targeted, p, t0, t1)
  // A 304 that adds no-transform: the compressed copies are Sluice's transformation, so they go.
  const copies = hasNoTransform(headers) ? { gzip: undefined, br: undefined } : null
  // What the entry derives from its headers follows the updated ones: its purge tags, and
  // whether a request with Authorization may use it.
  return { ...e, headers, out: undefined, ...copies, ...entryTiming(f, t0, t1), tags: tagsOf(headers), authOk: d.has('public') || d.has('s-maxage') || d.has('must-revalidate') }
}

/**
 * The Cache-Status of a miss whose head goes to the client before its body has ended. `stored`
 * says the response was stored (RFC 9211 §2.6), so it is said only of a body whose length is
 * known (Content-Length, already checked against the bounds by storableFromHeaders): one of
 * unknown length may turn out too large to store, when the head is long gone.
 */
export function streamedMissStatus (res: ProxyResponse): string {
  return Number.isFinite(declaredLength(res)) ? 'sluice; fwd=miss; stored' : 'sluice; fwd=miss'
}

/** The body length the response's Content-Length declares; NaN when it declares none. */
function declaredLength (res: ProxyResponse): number {
  return Number(first(res.headers['content-length']) ?? NaN)
}

/** Straight to the upstream, nothing stored: `Cache-Status: ...; fwd=bypass; detail=<reason>`. */
export async function bypass (core: CacheCore, route: CacheRoute, req: UpstreamRequest, fetch: Fetcher, reason: string): Promise<ProxyResponse> {
  core.event(route.name, 'bypass')
  return passedThrough(await fetch(req), reason)
}

/** An upstream response sent on unstored: `Cache-Status: sluice; fwd=bypass; detail=<reason>`. */
export function passedThrough (res: ProxyResponse, reason: string): ProxyResponse {
  return { ...res, cacheResult: 'bypass', cacheStatus: `sluice; fwd=bypass; detail=${reason}` }
}

/**
 * Run a fill for `job`. With `client`, the client's response streams from the fill; without,
 * the answer waits for the stored entry. `leased`: this replica holds the fleet-wide fill lease
 * (the hooks announce the result). Resolves with the ProxyResponse for the client.
 */
export async function runFill (core: CacheCore, writer: EntryWriter, hooks: FillHooks, job: FillJob, client: boolean, leased: boolean): Promise<ProxyResponse> {
  const { route, req, stale } = job
  const maxEntryBytes = core.config.memory.maxEntryBytes
  let settle!: (f: Fill) => void
  const fillP = new Promise<Fill>((resolve) => { settle = resolve })
  hooks.started(job.key, fillP)
  let settled = false
  // Purges that run from before the upstream request until the entry is stored: an entry one
  // of them names is not stored (its bytes may be from before the purge).
  const watch = core.watch()
  const done = (f: Fill, stored?: Promise<unknown>): void => {
    core.unwatch(watch)
    if (settled) return
    settled = true
    // A newer response that is too large to store supersedes the stored one all the same: the
    // old entry goes (not served as stale in its place), as when L1 refuses a replacement.
    if (f.reason === 'TOO-LARGE' && stale !== undefined) core.dropSuperseded(stale)
    hooks.ended(job, fillP, f, leased, stored)
    settle(f)
  }
  const t0 = core.now()
  let res: ProxyResponse
  const sent = detached(req, stale)
  try {
    res = await job.fetch(sent)
  } catch (err) {
    req.attempts = sent.attempts // the client's span counts the fill's retries
    const status = isSluiceError(err) ? err.status : 502
    done({ reason: 'ERROR', status })
    const now = core.now()
    if (stale !== undefined && canServeStaleOnError(stale, now)) {
      const detail = isSluiceError(err) ? err.code : 'ERROR'
      return respond(core, stale, route, req, `sluice; fwd=stale; fwd-status=${status}; ttl=${ttlSeconds(stale, now)}; detail=${detail}`, 'stale', now)
    }
    throw err
  }
  req.attempts = sent.attempts
  const t1 = core.now()
  if (res.status === 304 && stale !== undefined && !selects(res, stale)) {
    // A 304 that does not select the stored response (another Vary, or no validator for an
    // entry that has one) does not update it. Its status still says the validators the cache
    // sent match, so this client gets the stored response as it is: not freshened (its Age
    // goes on, and the next request revalidates again), its own headers with its own body, or
    // a 304 when its own conditional matches them (respond). The stored 200 is what the origin
    // just confirmed, so it is served rather than asked for again without validators: a second
    // request per use of the entry, and an origin that answers every conditional with a bare
    // 304 (the public suite's, cc-resp-must-revalidate-stale: an unconditional request gets its
    // non-HTTP status 999) has no 200 to give it. undici's cache interceptor uses the stored
    // response on any 304 to its own conditional; this also declines to freshen it. The
    // waiting clients ask for themselves.
    drainToNull(res.body as Readable | null)
    done({ reason: 'ERROR', status: 304 })
    return respond(core, stale, route, req, 'sluice; fwd=stale; fwd-status=304; detail=NOT-SELECTED', 'revalidated', t1)
  }
  if (res.status === 304 && stale !== undefined) {
    drainToNull(res.body as Readable | null)
    const e = revalidated(core, stale, res, route, t0, t1)
    // The 304's fields may make the response unstorable now (private, no-store): then it
    // answers this client only, and neither the store nor the waiting clients get it.
    const why = storableFromHeaders(core, job, { ...res, headers: e.headers }, t0, t1, stale.status)
    if (why !== null) {
      done({ reason: why })
      return respond(core, e, route, req, `sluice; fwd=stale; fwd-status=304; detail=${why}`, 'revalidated', t1)
    }
    const stored = writer.store(e, route, watch)
    if (stored === null) {
      done({ reason: 'TOO-LARGE' })
      return respond(core, e, route, req, 'sluice; fwd=stale; fwd-status=304; detail=TOO-LARGE', 'revalidated', t1)
    }
    done({ entry: e }, stored)
    return respond(core, e, route, req, 'sluice; fwd=stale; fwd-status=304; stored', 'revalidated', t1)
  }
  if (res.status >= 500 && stale !== undefined && canServeStaleOnError(stale, t1)) {
    discard(res.body as Readable | null)
    done({ reason: 'ERROR', status: res.status })
    return respond(core, stale, route, req, `sluice; fwd=stale; fwd-status=${res.status}; ttl=${ttlSeconds(stale, t1)}`, 'stale', t1)
  }
  const why = storableFromHeaders(core, job, res, t0, t1)
  if (why !== null) {
    // An unstored 5xx is the origin failing, as a reset is (ERROR): not an answer that makes the
    // key hit-for-miss, which would send every request for it upstream while the origin struggles.
    done(res.status >= 500 ? { reason: 'ERROR', status: res.status } : { reason: why })
    return { ...res, body: req.method === 'HEAD' ? drainToNull(res.body as Readable | null) : res.body, cacheResult: 'bypass', cacheStatus: `sluice; fwd=bypass; detail=${why}` }
  }

  const upstreamBody = res.body as Readable | null
  const finish = (chunks: Buffer[], size: number): void => {
    const built = buildEntry(core, job, res, ownedConcat(chunks, size), t0, t1)
    if (typeof built === 'string') { done({ reason: built }); return }
    writer.normalise(built, route).then((e) => {
      const stored = writer.store(e, route, watch)
      if (stored === null) done({ reason: 'TOO-LARGE' }); else done({ entry: e }, stored)
    }, (err: Error) => {
      core.log.warn({ err: err.message, path: job.path }, 'cache: stored body does not decode; not stored')
      done({ reason: 'TOO-LARGE' })
    })
  }
  /** A HEAD client, or a background refresh: answer once the fill is done. */
  const withFill = async (): Promise<ProxyResponse> => {
    const fill = await fillP
    if (fill.entry !== undefined) return respond(core, fill.entry, route, req, 'sluice; fwd=miss; stored', 'miss', core.now())
    return { ...res, body: null, cacheResult: 'bypass', cacheStatus: `sluice; fwd=bypass; detail=${fill.reason ?? 'ERROR'}` }
  }
  if (upstreamBody === null) {
    finish([], 0)
    return withFill()
  }
  // Tee: the client gets every chunk as it arrives; the cache collects up to maxEntryBytes.
  const out = tee(core, upstreamBody, maxEntryBytes, client && req.method !== 'HEAD', (chunks, size, why, err) => {
    if (chunks !== null) { finish(chunks, size); return }
    done({ reason: why!, status: res.status })
    if (err !== undefined) core.log.warn({ err: err.message, path: job.path }, 'cache: upstream body failed; nothing stored')
  })
  if (out === null) return withFill()
  core.event(route.name, 'miss')
  return { status: res.status, headers: res.headers, body: out, cacheResult: 'miss', cacheStatus: streamedMissStatus(res) }
}
