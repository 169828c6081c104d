// Stage 3, cache: L1 → L2 (backfill L1) → a coalesced upstream fill, stale-while-revalidate,
// stale-if-error, revalidation, and storage of what RFC 9111 lets a shared cache store.
//
// - An L1 hit is answered synchronously from stored bytes and header objects: no parsing
//   beyond the key, no Redis, no compression.
// - A miss has one leader per key. Its upstream request is detached (no client signal, no
//   body), so the fill completes even if that client leaves. The leader's client is streamed
//   through a tee while the body is collected. Waiters get the stored entry, or go upstream
//   themselves when it turns out uncacheable; that key is then remembered as hit-for-miss.
// - With Redis, the leader first takes the key's fill lease (SET-NX-like, in the URL's slot), so
//   one replica in the fleet fills a key: the others wait for its "filled" message and read the
//   entry from L2. A lease that times out, or a Redis that fails, leaves coalescing in-process.
import { PassThrough, type Readable } from 'node:stream'
import { createHash, randomUUID } from 'node:crypto'
import type { Redis, Cluster } from 'ioredis'
import type { Logger } from 'pino'
import type { Metrics } from '../observability/metrics.js'
import type { Headers, ProxyResponse, UpstreamRequest, CacheResult } from '../types.js'
import { SluiceError, isSluiceError } from '../errors.js'
import type { CacheGlobalConfig, CacheRouteConfig } from './config.js'
import type { CompressionRouteConfig } from '../compress/config.js'
import { type CacheEntry, ageMs, ttlMs, storeTtlMs } from './entry.js'
import { MemoryStore } from './memory.js'
import { RedisStore } from './redis-store.js'
import type { PurgeSelector } from './store.js'
import { baseKey, keyPath, variantKey, varyNames } from './key.js'
import { freshness, requestDirectives, responseDirectives, storable, withheldFields, SURROGATE_CAPABILITY, type BypassReason, type RouteCachePolicy, type Freshness } from './policy.js'
import { parseDirectives, type Directives } from './directives.js'
import { pickEncoding } from './encodings.js'
import { singleRange, ifRangeMatches } from './range.js'
import { encodeForStore, decodeBounded, isCompressibleType, hasNoTransform } from '../compress/codec.js'
import { discard } from '../upstream/headers.js'

export interface CacheStageDeps {
  config: CacheGlobalConfig
  metrics: Metrics
  redis: Redis | Cluster | null
  redisPrefix: string
  log: Logger
  onRedisError?: (op: string, err: Error) => void
  /** Called after a purge (the gateway re-runs cache.warmup). */
  onPurged?: () => void
}

export interface CacheRoute { name: string; cache: CacheRouteConfig; compression: CompressionRouteConfig }
export type Fetcher = (req: UpstreamRequest) => Promise<ProxyResponse>

export interface CacheStage {
  handle (route: CacheRoute, req: UpstreamRequest, fetch: Fetcher): ProxyResponse | Promise<ProxyResponse>
  /**
   * A fresh L1 hit for a plain request, or null (then use handle). No side effects but LRU
   * recency and the hit counter: the caller has already ruled out conditionals, Range,
   * Authorization and request cache directives.
   */
  peek (route: CacheRoute, req: UpstreamRequest): ProxyResponse | null
  purge (p: PurgeSelector): Promise<{ purged: number }>
  stats (): Record<string, unknown>
  close (): Promise<void>
}

interface Fill { entry?: CacheEntry; reason?: BypassReason | 'ERROR' }

/** Store-time encodes allowed to run at once (libuv's thread pool has 4 threads). */
const MAX_ENCODES = 4
let encodesRunning = 0

/** Safe methods (RFC 9110 §9.2.1); any other method that succeeds invalidates (RFC 9111 §4.4). */
const SAFE = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE'])
const CONDITIONAL = ['if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since', 'if-range', 'range']
const EMPTY_D: Directives = new Map()
/** Headers a 304 carries from the stored response (RFC 9110 §15.4.5). */
const NOT_MODIFIED_HEADERS = ['cache-control', 'content-location', 'date', 'etag', 'expires', 'vary', 'last-modified']
/** Headers a 304 from the origin must not overwrite in the stored response (RFC 9111 §3.2). */
const KEEP_ON_UPDATE = new Set(['content-length', 'content-encoding', 'transfer-encoding', 'content-range', 'content-md5', 'etag'])

function first (v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v
}

/** An entry's timing fields, from its freshness and the times of the exchange that produced it. */
function entryTiming (f: Freshness, t0: number, t1: number) {
  return {
    requestTime: t0,
    responseTime: t1,
    lifetimeMs: f.lifetimeMs,
    initialAgeMs: f.initialAgeMs,
    // must-revalidate (or s-maxage) forbids any stale use, whatever the stale windows say.
    swrMs: f.mustRevalidate ? 0 : f.swrMs,
    sieMs: f.mustRevalidate ? 0 : f.sieMs,
    mustRevalidate: f.mustRevalidate,
    noCache: f.noCache
  }
}

function policyOf (rc: CacheRouteConfig, g: CacheGlobalConfig): RouteCachePolicy {
  return {
    defaultTtlSeconds: rc.defaultTtlSeconds,
    staleWhileRevalidateSeconds: rc.staleWhileRevalidateSeconds,
    staleIfErrorSeconds: rc.staleIfErrorSeconds,
    allowSetCookie: rc.allowSetCookie,
    targetedField: g.targetedField,
    heuristicPercent: rc.heuristicPercent,
    maxHeuristicSeconds: rc.maxHeuristicSeconds
  }
}

/** Weak comparison of entity tags (RFC 9110 §8.8.3.2). */
function etagMatches (header: string, etag: string | undefined): boolean {
  if (etag === undefined) return false
  const opaque = etag.startsWith('W/') ? etag.slice(2) : etag
  for (const raw of header.split(',')) {
    const t = raw.trim()
    if (t === '*') return true
    if ((t.startsWith('W/') ? t.slice(2) : t) === opaque) return true
  }
  return false
}

export function createCacheStage (deps: CacheStageDeps): CacheStage {
  const { config, metrics, log } = deps
  const onRedisError = deps.onRedisError ?? ((op: string) => metrics.redisErrors.labels(op).inc())
  const l1 = new MemoryStore(config.memory.maxBytes, config.memory.maxEntryBytes)
  const l2 = deps.redis ? new RedisStore(deps.redis, deps.redisPrefix, onRedisError) : null
  const inflight = new Map<string, Promise<Fill>>()
  const hitForMiss = new Map<string, number>()
  const background = new Set<Promise<unknown>>()
  const policies = new WeakMap<CacheRouteConfig, RouteCachePolicy>()
  const events = new Map<string, Record<string, { inc (): void }>>()
  const instance = randomUUID()
  const channel = `${deps.redisPrefix}purge`
  const filledChannel = `${deps.redisPrefix}filled`
  /** Fills this replica waits for from another replica, by variant key. */
  const remote = new Map<string, { resolve: (f: Fill) => void; timer: NodeJS.Timeout }>()
  /** In-flight promises that stand for another replica's fill (their joiners wait longer). */
  const remoteFills = new WeakSet<Promise<Fill>>()
  const shared = l2 !== null && config.coalesceAcrossReplicas
  /** Keys whose background refresh is asking Redis for the lease. */
  const leasing = new Set<string>()
  let closed = false

  const policy = (rc: CacheRouteConfig) => {
    let p = policies.get(rc)
    if (!p) { p = policyOf(rc, config); policies.set(rc, p) }
    return p
  }
  const event = (route: string, result: CacheResult | 'revalidated') => {
    let r = events.get(route)
    if (!r) { r = {}; events.set(route, r) }
    let c = r[result]
    if (!c) { c = metrics.cacheEvents.labels(route, result); r[result] = c }
    c.inc()
  }

  // L1 purges reach every replica through Redis pub/sub.
  let sub: Redis | Cluster | null = null
  if (deps.redis) {
    // The subscriber queues its SUBSCRIBE until connected (the shared client fails fast instead),
    // and ioredis re-subscribes after every reconnect.
    sub = deps.redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null, commandTimeout: undefined } as never)
    sub.on('error', () => {})
    sub.subscribe(channel, ...(shared ? [filledChannel] : [])).catch((err: Error) => onRedisError('cache_subscribe', err))
    sub.on('message', (ch: string, msg: string) => {
      if (ch === filledChannel) { filledMessage(msg); return }
      if (ch !== channel) return
      try {
        const m = JSON.parse(msg) as { from: string; base?: string } & PurgeSelector
        if (m.from === instance) return
        if (m.base !== undefined) l1.deleteBase(m.base)
        else l1.purge(m)
      } catch { /* not ours */ }
    })
  }
  const publish = (m: Record<string, string>) => {
    if (!deps.redis) return
    deps.redis.publish(channel, JSON.stringify({ ...m, from: instance })).catch((err: Error) => onRedisError('cache_publish', err))
  }

  /** Another replica's fill is done: `e` names the stored entry, `r` why nothing was stored. */
  function filledMessage (msg: string): void {
    let m: { k?: string; e?: string; r?: BypassReason | 'ERROR'; from?: string }
    try { m = JSON.parse(msg) } catch { return }
    if (m.from === instance || typeof m.k !== 'string') return
    const w = remote.get(m.k)
    if (w === undefined) return
    remote.delete(m.k)
    clearTimeout(w.timer)
    if (typeof m.e !== 'string') { w.resolve({ reason: m.r ?? 'ERROR' }); return }
    fromL2(m.e).then((e) => w.resolve(e === undefined ? { reason: 'ERROR' } : { entry: e }))
  }

  /** An entry another replica stored, read from L2 and kept in L1 (undefined when it is not there, or Redis failed). */
  async function fromL2 (key: string): Promise<CacheEntry | undefined> {
    const e = await l2!.get(key)
    if (e !== undefined) l1.set(e, storeTtlMs(e, Date.now()))
    return e
  }

  /** After an uncacheable answer (not a failure), the key goes straight upstream for hitForMissSeconds. */
  function rememberUncacheable (key: string, f: Fill, rc: CacheRouteConfig): void {
    if (f.reason !== undefined && f.reason !== 'ERROR' && f.reason !== 'BODY-ERROR') hitForMiss.set(key, Date.now() + rc.hitForMissSeconds * 1000)
  }

  /** Tell waiting replicas that this replica's leased fill of `key` is done, once L2 has it. */
  function announce (key: string, f: Fill, stored: Promise<unknown> | undefined): void {
    const l = l2!
    track(Promise.resolve(stored).then(() => l.release(key, instance)).then((waiting) => {
      if (waiting === 0) return
      const m = f.entry ? { k: key, e: f.entry.key, from: instance } : { k: key, r: f.reason ?? 'ERROR', from: instance }
      return deps.redis!.publish(filledChannel, JSON.stringify(m)).then(() => {}, (err: Error) => onRedisError('cache_publish', err))
    }).catch(() => {}))
  }

  /**
   * Wait up to `ms` for another replica's fill of `key`. On timeout, `onTimeout` decides the Fill
   * (a fill of our own, in-process).
   */
  function awaitRemote (key: string, ms: number, onTimeout: () => Promise<Fill>): Promise<Fill> {
    return new Promise<Fill>((resolve) => {
      const timer = setTimeout(() => {
        if (remote.get(key)?.timer !== timer) return
        remote.delete(key)
        metrics.cacheLeases.labels('timeout').inc()
        onTimeout().then(resolve, () => resolve({ reason: 'ERROR' }))
      }, ms)
      timer.unref()
      remote.set(key, { resolve, timer })
    })
  }

  const gauges = () => {
    const s = l1.stats()
    metrics.cacheBytes.labels('memory').set(s.bytes)
    metrics.cacheEntries.labels('memory').set(s.entries)
  }
  const gaugeTimer = setInterval(() => {
    gauges()
    if (l2) {
      // Bounded work per tick: a large L2 is measured over several ticks, never scanned at once.
      l2.sampleStats().then((s) => {
        if (s !== null) { metrics.cacheBytes.labels('redis').set(s.bytes); metrics.cacheEntries.labels('redis').set(s.entries) }
      }, () => {})
    }
    const now = Date.now()
    for (const [k, until] of hitForMiss) if (until <= now) hitForMiss.delete(k)
  }, 5000)
  gaugeTimer.unref()

  const track = <T>(p: Promise<T>): Promise<T> => {
    background.add(p)
    p.finally(() => background.delete(p)).catch(() => {})
    return p
  }

  // ---- serving stored entries ------------------------------------------------------------

  function available (e: CacheEntry, order: readonly string[]): string[] {
    const out: string[] = []
    for (const enc of order) if ((enc === 'br' && e.br) || (enc === 'gzip' && e.gzip)) out.push(enc)
    out.push('identity')
    return out
  }

  function outHeaders (e: CacheEntry, enc: 'identity' | 'gzip' | 'br', route: CacheRoute): Headers {
    const cached = e.out?.[enc]
    if (cached) return cached
    const h: Headers = { ...e.headers }
    delete h.age
    const body = enc === 'identity' ? e.body : enc === 'gzip' ? e.gzip! : e.br!
    h['content-length'] = String(body.length)
    if (e.gzip || e.br) {
      const vary = h.vary
      const list = vary === undefined ? [] : (Array.isArray(vary) ? vary.join(',') : vary).split(',').map((s) => s.trim()).filter(Boolean)
      if (!list.some((v) => v.toLowerCase() === 'accept-encoding')) list.push('Accept-Encoding')
      h.vary = list.join(', ')
    }
    if (enc !== 'identity') {
      h['content-encoding'] = enc
      const etag = first(h.etag)
      if (etag !== undefined && !etag.startsWith('W/')) h.etag = 'W/' + etag // the bytes differ per encoding
      if (route.compression.debugHeader) h['x-sluice-compression'] = `${enc} ${e.body.length} ${(body.length / e.body.length).toFixed(3)}`
    }
    e.out = { ...e.out, [enc]: h }
    return h
  }

  function respond (e: CacheEntry, route: CacheRoute, req: UpstreamRequest, status: string, result: CacheResult, now: number): ProxyResponse {
    const age = String(Math.floor(ageMs(e, now) / 1000))
    event(route.name, result)
    const rh = req.headers
    // The client's own conditional request, answered from the cache.
    const inm = rh['if-none-match']
    const ims = rh['if-modified-since']
    if ((inm !== undefined || ims !== undefined) && e.status === 200) {
      let notModified = false
      if (inm !== undefined) notModified = etagMatches(first(inm)!, first(e.headers.etag))
      else if (ims !== undefined) {
        const since = Date.parse(first(ims)!)
        const lm = Date.parse(first(e.headers['last-modified']) ?? first(e.headers.date) ?? '')
        notModified = !Number.isNaN(since) && !Number.isNaN(lm) && lm <= since
      }
      if (notModified) {
        const h: Headers = {}
        for (const k of NOT_MODIFIED_HEADERS) if (e.headers[k] !== undefined) h[k] = e.headers[k]
        return { status: 304, headers: h, body: null, cacheResult: result, cacheStatus: status, age }
      }
    }
    let enc: 'identity' | 'gzip' | 'br' = 'identity'
    if ((e.gzip || e.br) && route.compression.enabled && !('x-no-compression' in rh)) {
      const pick = pickEncoding(first(rh['accept-encoding']), available(e, route.compression.encodings))
      if (pick === 'gzip' || pick === 'br') enc = pick
    }
    const body = req.method === 'HEAD' ? null : enc === 'identity' ? e.body : enc === 'gzip' ? e.gzip! : e.br!
    return { status: e.status, headers: outHeaders(e, enc, route), body, cacheResult: result, cacheStatus: status, age }
  }

  type Use = 'fresh' | 'stale-ok' | 'swr' | 'revalidate'

  function usability (e: CacheEntry, rc: CacheRouteConfig, reqD: Directives, now: number): Use {
    const ttl = ttlMs(e, now)
    if (e.noCache) return 'revalidate'
    if (reqD.size) {
      if (reqD.has('no-cache') && rc.clientNoCacheRevalidates) return 'revalidate'
      const maxAge = reqD.get('max-age')
      if (typeof maxAge === 'string' && /^\d+$/.test(maxAge) && ageMs(e, now) > Number(maxAge) * 1000) return 'revalidate'
      const minFresh = reqD.get('min-fresh')
      if (typeof minFresh === 'string' && /^\d+$/.test(minFresh) && ttl < Number(minFresh) * 1000) return 'revalidate'
      const maxStale = reqD.get('max-stale')
      if (ttl <= 0 && maxStale !== undefined && !e.mustRevalidate && (maxStale === true || (/^\d+$/.test(maxStale) && -ttl <= Number(maxStale) * 1000))) return 'stale-ok'
    }
    if (ttl > 0) return 'fresh'
    if (!e.mustRevalidate && -ttl <= e.swrMs) return 'swr'
    return 'revalidate'
  }

  function canServeStaleOnError (e: CacheEntry, now: number): boolean {
    return !e.mustRevalidate && -ttlMs(e, now) <= Math.max(e.sieMs, 0)
  }

  // ---- storing --------------------------------------------------------------------------

  function buildEntry (route: CacheRoute, req: UpstreamRequest, key: string, base: string, path: string, res: ProxyResponse, body: Buffer, reqD: Directives, t0: number, t1: number): CacheEntry | BypassReason {
    const rc = route.cache
    const p = policy(rc)
    const { d, targeted } = responseDirectives(res.headers, p.targetedField)
    const f = freshness(res.status, res.headers, d, targeted, p, t0, t1)
    const why = storable(res.status, res.headers, d, req.headers, reqD, p, f)
    if (why !== null) return why
    const headers: Headers = { ...res.headers }
    delete headers['set-cookie2']
    for (const f of withheldFields(d)) delete headers[f]
    if (rc.etagFromBody && headers.etag === undefined && res.status === 200) {
      headers.etag = '"' + createHash('sha256').update(body).digest('base64url').slice(0, 27) + '"'
    }
    const tagHeader = [res.headers['cache-tag'], res.headers['surrogate-key']].flat().filter(Boolean).join(' ')
    const tags = [...new Set(tagHeader.split(/[\s,]+/).filter(Boolean))].slice(0, 64)
    // The variant key follows the response's own Vary (the lookup key was computed before it was known).
    const names = varyNames(res.headers.vary)
    return {
      key: variantKey(base, names, req.headers), base, path,
      status: res.status,
      headers,
      body,
      ...entryTiming(f, t0, t1),
      tags,
      varyNames: names,
      authOk: d.has('public') || d.has('s-maxage') || d.has('must-revalidate')
    }
  }

  /** Store in L1 now and L2 in the background; encode the compressed copies off the response path. */
  function store (e: CacheEntry, route: CacheRoute): Promise<void> {
    const now = Date.now()
    const ttl = storeTtlMs(e, now)
    l1.set(e, ttl)
    const comp = route.compression
    // Encoded copies are an optimisation: when MAX_ENCODES are already running (a miss-heavy
    // burst), the entry is stored identity-only rather than queueing work and memory without bound.
    const encode = comp.enabled && encodesRunning < MAX_ENCODES && e.body.length >= comp.minBytes && e.headers['content-encoding'] === undefined &&
      isCompressibleType(e.headers, comp.contentTypes) && !hasNoTransform(e.headers)
    if (encode) encodesRunning++
    const job = (encode
      ? encodeForStore(e.body, { encodings: comp.encodings, storeBrQuality: comp.storeBrQuality, storeGzipLevel: comp.storeGzipLevel }).then((enc) => {
        if (enc.gzip) e.gzip = enc.gzip
        if (enc.br) e.br = enc.br
        e.out = undefined
        l1.grew(e.key)
        for (const [k, v] of Object.entries(enc)) {
          metrics.compressionBytes.labels(k, 'in').inc(e.body.length)
          metrics.compressionBytes.labels(k, 'out').inc((v as Buffer).length)
        }
      })
      : Promise.resolve())
      .finally(() => { if (encode) encodesRunning-- })
      .then(() => l2 ? l2.set(e, storeTtlMs(e, Date.now())) : undefined)
      .catch((err: Error) => log.warn({ err: err.message, key: e.path }, 'cache store failed'))
    track(job)
    gauges()
    return job
  }

  /** Origins that send an encoded body: keep it as that variant and store the decoded identity body. */
  async function normaliseEncoding (e: CacheEntry, route: CacheRoute): Promise<CacheEntry | null> {
    const enc = first(e.headers['content-encoding'])
    // Codings Sluice does not know, and bodies that do not decode, are stored as sent.
    if (enc === undefined || (enc !== 'gzip' && enc !== 'br' && enc !== 'deflate')) return e
    let identity: Buffer
    try {
      identity = await decodeBounded(e.body, enc, Math.min(route.compression.maxDecompressedBytes, config.memory.maxEntryBytes))
    } catch (err) {
      if (isSluiceError(err) && err.code === 'SLUICE_ERR_DECOMPRESSED_TOO_LARGE') throw err
      return e
    }
    const headers = { ...e.headers }
    delete headers['content-encoding']
    const out: CacheEntry = { ...e, headers, body: identity }
    if (enc === 'gzip') out.gzip = e.body
    else if (enc === 'br') out.br = e.body
    return out
  }

  // ---- upstream fills -------------------------------------------------------------------

  /** The request a fill sends: no client body or signal, no client conditionals, identity encoding. */
  function detached (req: UpstreamRequest, stale: CacheEntry | undefined, method: string): UpstreamRequest {
    const headers: Headers = { ...req.headers }
    for (const h of CONDITIONAL) delete headers[h]
    // Sluice encodes stored entries itself (once, br and gzip), so it asks the origin for identity.
    headers['accept-encoding'] = 'identity'
    // Edge Architecture: announce Sluice as a surrogate, so the origin can target `;sluice` directives at it.
    const cap = headers['surrogate-capability']
    headers['surrogate-capability'] = cap === undefined ? SURROGATE_CAPABILITY : [cap].flat().join(', ') + ', ' + SURROGATE_CAPABILITY
    if (stale) {
      const etag = first(stale.headers.etag)
      const lm = first(stale.headers['last-modified'])
      if (etag !== undefined) headers['if-none-match'] = etag
      if (lm !== undefined) headers['if-modified-since'] = lm
    }
    // A POST query fill sends its (buffered) body; every other fill is a bodiless GET.
    const body = method === 'POST' && Buffer.isBuffer(req.body) ? req.body : null
    return { method, path: req.path, headers, body, host: req.host, protocol: req.protocol, clientIp: req.clientIp, forwarded: req.forwarded }
  }

  /** A 304 from the origin refreshes the stored entry: new headers over old, new times. */
  function revalidated (e: CacheEntry, res: ProxyResponse, route: CacheRoute, t0: number, t1: number): CacheEntry {
    const headers: Headers = { ...e.headers }
    for (const [k, v] of Object.entries(res.headers)) if (!KEEP_ON_UPDATE.has(k) && v !== undefined) headers[k] = v
    const p = policy(route.cache)
    const { d, targeted } = responseDirectives(headers, p.targetedField)
    for (const name of withheldFields(d)) delete headers[name]
    const f = freshness(e.status, headers, d, targeted, p, t0, t1)
    return {
      ...e,
      headers,
      out: undefined,
      ...entryTiming(f, t0, t1)
    }
  }

  /**
   * Lead the fill for `key`. With `client`, the client's response streams from the fill (tee);
   * without, the fill is a background refresh. Resolves with the ProxyResponse for the client.
   */
  async function lead (route: CacheRoute, req: UpstreamRequest, key: string, base: string, path: string, reqD: Directives, stale: CacheEntry | undefined, fetch: Fetcher, client: boolean, leased = false): Promise<ProxyResponse> {
    let settle!: (f: Fill) => void
    const fillP = new Promise<Fill>((resolve) => { settle = resolve })
    inflight.set(key, fillP)
    let settled = false
    const done = (f: Fill, stored?: Promise<unknown>) => {
      if (settled) return
      settled = true
      if (inflight.get(key) === fillP) inflight.delete(key)
      rememberUncacheable(key, f, route.cache)
      if (leased) announce(key, f, stored)
      settle(f)
    }
    const t0 = Date.now()
    let res: ProxyResponse
    try {
      res = await fetch(detached(req, req.method === 'POST' ? undefined : stale, req.method === 'POST' ? 'POST' : 'GET'))
    } catch (err) {
      done({ reason: 'ERROR' })
      const now = Date.now()
      if (stale && canServeStaleOnError(stale, now)) {
        const e = err as SluiceError
        return respond(stale, route, req, `sluice; fwd=stale; fwd-status=${isSluiceError(e) ? e.status : 502}; ttl=${Math.floor(ttlMs(stale, now) / 1000)}; detail=${isSluiceError(e) ? e.code : 'ERROR'}`, 'stale', now)
      }
      throw err
    }
    const t1 = Date.now()
    if (res.status === 304 && stale) {
      (res.body as Readable | null)?.resume?.()
      const e = revalidated(stale, res, route, t0, t1)
      done({ entry: e }, store(e, route))
      return respond(e, route, req, 'sluice; fwd=stale; fwd-status=304; stored', 'revalidated', t1)
    }
    if (res.status >= 500 && stale && canServeStaleOnError(stale, t1)) {
      discard(res.body as Readable | null)
      done({ reason: 'ERROR' })
      return respond(stale, route, req, `sluice; fwd=stale; fwd-status=${res.status}; ttl=${Math.floor(ttlMs(stale, t1) / 1000)}`, 'stale', t1)
    }
    // Decide from the headers what the body will become.
    const p = policy(route.cache)
    const { d, targeted } = responseDirectives(res.headers, p.targetedField)
    const f = freshness(res.status, res.headers, d, targeted, p, t0, t1)
    let why: BypassReason | null = storable(res.status, res.headers, d, req.headers, reqD, p, f)
    const cl = Number(first(res.headers['content-length']) ?? NaN)
    if (why === null && cl > config.memory.maxEntryBytes) why = 'TOO-LARGE'
    if (why !== null) {
      done({ reason: why })
      return { ...res, body: req.method === 'HEAD' ? drain(res.body) : res.body, cacheResult: 'bypass', cacheStatus: `sluice; fwd=bypass; detail=${why}` }
    }
    const upstreamBody = res.body as Readable | null
    const chunks: Buffer[] = []
    let size = 0
    let collecting = true
    const finish = (): void => {
      if (!collecting) return
      const built = buildEntry(route, req, key, base, path, res, Buffer.concat(chunks, size), reqD, t0, t1)
      if (typeof built === 'string') { done({ reason: built }); return }
      normaliseEncoding(built, route).then((e) => {
        if (e === null) { done({ reason: 'STATUS' }); return }
        done({ entry: e }, store(e, route))
      }, (err: Error) => {
        log.warn({ err: err.message, path }, 'cache: stored body does not decode; not stored')
        done({ reason: 'TOO-LARGE' })
      })
    }
    if (upstreamBody === null) {
      finish()
      return withFill()
    }
    // Tee: the client gets every chunk as it arrives; the cache collects up to maxEntryBytes.
    const out = client && req.method !== 'HEAD' ? new PassThrough() : null
    let clientGone = out === null
    out?.on('close', () => { if (!out.writableFinished) { clientGone = true; upstreamBody.resume() } })
    out?.on('drain', () => upstreamBody.resume())
    upstreamBody.on('data', (c: Buffer) => {
      if (collecting) {
        size += c.length
        if (size > config.memory.maxEntryBytes) { collecting = false; chunks.length = 0; done({ reason: 'TOO-LARGE' }) } else chunks.push(c)
      }
      if (!clientGone && out !== null && !out.write(c)) upstreamBody.pause()
      if (clientGone && !collecting) discard(upstreamBody) // nobody wants the rest
    })
    upstreamBody.once('end', () => { finish(); out?.end() })
    upstreamBody.once('error', (err) => {
      collecting = false
      done({ reason: 'BODY-ERROR' })
      log.warn({ err: err.message, path }, 'cache: upstream body failed; nothing stored')
      out?.destroy(err)
    })
    track(new Promise<void>((resolve) => { upstreamBody.once('close', resolve) }))
    if (out === null) return withFill()
    event(route.name, 'miss')
    return { status: res.status, headers: res.headers, body: out, cacheResult: 'miss', cacheStatus: 'sluice; fwd=miss; stored' }

    /** A HEAD client, or a background refresh: answer once the fill is done. */
    async function withFill (): Promise<ProxyResponse> {
      const fill = await fillP
      if (fill.entry) return respond(fill.entry, route, req, 'sluice; fwd=miss; stored', 'miss', Date.now())
      return { ...res, body: null, cacheResult: 'bypass', cacheStatus: `sluice; fwd=bypass; detail=${fill.reason ?? 'ERROR'}` }
    }
  }

  function drain (body: ProxyResponse['body']): null {
    (body as Readable | null)?.resume?.()
    return null
  }

  function refreshInBackground (route: CacheRoute, req: UpstreamRequest, key: string, base: string, path: string, stale: CacheEntry, fetch: Fetcher): void {
    if (inflight.has(key) || remote.has(key) || leasing.has(key) || closed) return // already refreshing: coalesced
    const headers: Headers = { ...req.headers }
    const post = req.method === 'POST' // a POST query refreshes with its own body
    const bg: UpstreamRequest = { ...req, headers, signal: undefined, abortEmitter: undefined, clientGone: undefined, body: post ? req.body : null, method: post ? 'POST' : 'GET' }
    const run = (leased: boolean) => track(lead(route, bg, key, base, path, EMPTY_D, stale, fetch, false, leased)
      .then((r) => { (r.body as Readable | null)?.resume?.() }, (err: Error) => log.debug({ err: err.message, path }, 'background refresh failed')))
    if (!shared) { run(false); return }
    // One refresh in the fleet: another replica holding the lease refreshes for everyone, and
    // its "filled" message updates this replica's L1. Until then the stale entry is served.
    leasing.add(key)
    track(l2!.lease(key, instance, route.cache.coalesceTimeoutMs, false).then((r) => {
      metrics.cacheLeases.labels(r).inc()
      leasing.delete(key)
      if (closed || inflight.has(key)) return
      if (r === 'held') { track(awaitRemote(key, route.cache.coalesceTimeoutMs, async () => ({ reason: 'ERROR' }))); return }
      run(r === 'acquired')
    }))
  }

  /**
   * Lead the fill of a missed (or stale) key. With a shared L2, take the fleet-wide fill lease
   * first: when another replica holds it, this replica's requests for the key wait for that
   * replica's fill instead (coalesced across replicas).
   */
  function leadShared (route: CacheRoute, req: UpstreamRequest, key: string, base: string, path: string, reqD: Directives, e: CacheEntry | undefined, fetch: Fetcher): Promise<ProxyResponse> {
    if (!shared || req.method === 'POST') return lead(route, req, key, base, path, reqD, e, fetch, true)
    const rc = route.cache
    let resolveWait!: (f: Fill) => void
    const waitP = new Promise<Fill>((resolve) => { resolveWait = resolve })
    // Requests for this key arriving while the lease is asked join waitP, as they would a local fill.
    inflight.set(key, waitP)
    remoteFills.add(waitP)
    const mine = () => { if (inflight.get(key) === waitP) inflight.delete(key) }
    /** Fill in-process, without a lease, in the background; waitP gets its outcome. */
    const fillHere = (): Promise<Fill> => {
      mine()
      const running = inflight.get(key)
      if (running !== undefined && running !== waitP) return running
      const p = lead(route, { ...req, signal: undefined, abortEmitter: undefined, clientGone: undefined }, key, base, path, EMPTY_D, e, fetch, false)
      p.then((r) => { (r.body as Readable | null)?.resume?.() }, () => {})
      return inflight.get(key) ?? Promise.resolve({ reason: 'ERROR' })
    }
    return l2!.lease(key, instance, rc.coalesceTimeoutMs, e === undefined).then(async (r) => {
      metrics.cacheLeases.labels(r).inc()
      if (r === 'acquired' || r === 'error') {
        mine()
        const p = lead(route, req, key, base, path, reqD, e, fetch, true, r === 'acquired')
        const fillP = inflight.get(key) // lead() registered its fill synchronously
        if (fillP !== undefined) fillP.then(resolveWait); else p.then(() => resolveWait({ reason: 'ERROR' }), () => resolveWait({ reason: 'ERROR' }))
        return p
      }
      if (r === 'filled') {
        // Stored by another replica since this one looked: read it like an L2 hit.
        const got = await fromL2(key)
        mine()
        if (got !== undefined) resolveWait({ entry: got }); else fillHere().then(resolveWait)
      } else {
        // 'held': another replica fills; wait for its message, then fill here if it never comes.
        awaitRemote(key, rc.coalesceTimeoutMs, fillHere).then((f) => {
          mine()
          rememberUncacheable(key, f, rc)
          resolveWait(f)
        })
      }
      return join(route, req, fetch, base, e, waitP)
    })
  }

  /** Wait for a fill led by another request (here or on another replica), boundedly, then answer from it. */
  async function join (route: CacheRoute, req: UpstreamRequest, fetch: Fetcher, base: string, e: CacheEntry | undefined, running: Promise<Fill>): Promise<ProxyResponse> {
    const rc = route.cache
    const rh = req.headers
    let timer: NodeJS.Timeout | undefined
    // A fill of another replica may fall back to one of this replica after coalesceTimeoutMs.
    const wait = remoteFills.has(running) ? 2 * rc.coalesceTimeoutMs : rc.coalesceTimeoutMs
    const fill = await Promise.race([running, new Promise<Fill>((resolve) => { timer = setTimeout(() => resolve({ reason: 'ERROR' }), wait) })])
    clearTimeout(timer)
    // The fill's Vary was unknown when this request joined it: use it only if it is this request's variant.
    if (fill.entry !== undefined && !(rh.authorization !== undefined && !fill.entry.authOk) &&
      variantKey(base, fill.entry.varyNames, rh) === fill.entry.key) {
      return respond(fill.entry, route, req, 'sluice; fwd=miss; collapsed', 'coalesced', Date.now())
    }
    // Uncacheable, failed or slow: go upstream alone (in parallel with the others).
    if (e !== undefined && fill.reason === 'ERROR' && canServeStaleOnError(e, Date.now())) {
      return respond(e, route, req, 'sluice; fwd=stale; fwd-status=502; detail=COALESCED-FILL-FAILED', 'stale', Date.now())
    }
    return pass(route, req, fetch, fill.reason === undefined || fill.reason === 'ERROR' ? 'COALESCE-FALLBACK' : fill.reason)
  }

  async function pass (route: CacheRoute, req: UpstreamRequest, fetch: Fetcher, reason: string): Promise<ProxyResponse> {
    event(route.name, 'bypass')
    const res = await fetch(req)
    return { ...res, cacheResult: 'bypass', cacheStatus: `sluice; fwd=bypass; detail=${reason}` }
  }

  async function invalidateAfter (route: CacheRoute, req: UpstreamRequest, fetch: Fetcher): Promise<ProxyResponse> {
    event(route.name, 'bypass')
    const res = await fetch(req)
    if (res.status < 400) {
      const targets = new Set<string>([req.path])
      for (const h of ['location', 'content-location']) {
        const v = first(res.headers[h])
        if (v === undefined) continue
        try {
          const u = new URL(v, `http://${req.host}`)
          if (u.host.toLowerCase() === req.host.toLowerCase()) targets.add(u.pathname + u.search)
        } catch { /* not a URL */ }
      }
      for (const t of targets) {
        const base = baseKey('GET', req.host, keyPath(t, route.cache.key), req.headers, route.cache.key)
        l1.deleteBase(base)
        if (l2) track(Promise.resolve(l2.deleteBase(base)))
        publish({ base })
      }
    }
    return { ...res, cacheResult: 'bypass', cacheStatus: 'sluice; fwd=bypass; detail=METHOD' }
  }

  async function slow (route: CacheRoute, req: UpstreamRequest, fetch: Fetcher, reqD: Directives, base: string, path: string): Promise<ProxyResponse> {
    const rc = route.cache
    const rh = req.headers
    let names = l1.getVary(base)
    let e = names !== undefined ? l1.get(variantKey(base, names, rh)) : undefined
    if (e === undefined && l2 !== null) {
      if (names === undefined) {
        // Ask for the Vary record and the no-Vary entry together: one round trip in the common case.
        const [v, plain] = await Promise.all([l2.getVary(base), l2.get(base)])
        names = v
        if (names !== undefined && names.length === 0) e = plain
        else if (names !== undefined) e = await l2.get(variantKey(base, names, rh))
      } else e = await l2.get(variantKey(base, names, rh))
      if (e !== undefined) l1.set(e, storeTtlMs(e, Date.now()))
    }
    const key = variantKey(base, names ?? [], rh)
    if (e !== undefined && rh.authorization !== undefined && !e.authOk) e = undefined
    // One byte range of a usable stored response is cut from its bytes; any other range request
    // (several ranges, with a conditional, nothing usable stored) goes to the origin as it is.
    if (rh.range !== undefined) return (e !== undefined && req.method === 'GET' ? ranged(e, route, req, reqD) : null) ?? pass(route, req, fetch, 'RANGE')
    const now = Date.now()
    if (e !== undefined) {
      const use = usability(e, rc, reqD, now)
      if (use === 'fresh') return hit(e, route, req, key, base, path, fetch, now)
      if (use === 'stale-ok') return respond(e, route, req, `sluice; hit; ttl=${Math.floor(ttlMs(e, now) / 1000)}`, 'stale', now)
      if (use === 'swr') {
        refreshInBackground(route, req, key, base, path, e, fetch)
        return respond(e, route, req, `sluice; fwd=stale; ttl=${Math.floor(ttlMs(e, now) / 1000)}; detail=STALE-WHILE-REVALIDATE`, 'stale', now)
      }
    }
    if (reqD.has('only-if-cached')) throw new SluiceError('SLUICE_ERR_ONLY_IF_CACHED')
    if (reqD.has('no-store')) return pass(route, req, fetch, 'NO-STORE')
    const hfm = hitForMiss.get(key)
    if (hfm !== undefined && hfm > now && e === undefined) return pass(route, req, fetch, 'HIT-FOR-MISS')
    const running = inflight.get(key)
    if (running !== undefined) return join(route, req, fetch, base, e, running) // coalesced
    return leadShared(route, req, key, base, path, reqD, e, fetch)
  }

  /** A POST query: cached like a GET, keyed by a hash of its body and Content-Type. */
  function query (route: CacheRoute, req: UpstreamRequest, fetch: Fetcher, body: Buffer): ProxyResponse | Promise<ProxyResponse> {
    const rh = req.headers
    const reqD = rh['cache-control'] !== undefined || rh.pragma !== undefined ? requestDirectives(rh) : EMPTY_D
    const digest = createHash('sha256').update(first(rh['content-type']) ?? '').update('\u0000').update(body).digest('base64url')
    const path = keyPath(req.path, route.cache.key)
    const base = baseKey('POST', req.host, path, rh, route.cache.key) + '|q=' + digest
    if (rh.authorization !== undefined || rh.range !== undefined) return pass(route, req, fetch, rh.authorization !== undefined ? 'AUTHORIZATION' : 'RANGE')
    return slow(route, req, fetch, reqD, base, path)
  }

  /** A 206 cut from a fresh stored 200 (RFC 9110 §14), the whole 200 when If-Range does not match, or null. */
  function ranged (e: CacheEntry, route: CacheRoute, req: UpstreamRequest, reqD: Directives): ProxyResponse | null {
    const rh = req.headers
    if (e.status !== 200 || rh['if-none-match'] !== undefined || rh['if-modified-since'] !== undefined) return null
    const now = Date.now()
    const use = usability(e, route.cache, reqD, now)
    if (use !== 'fresh' && use !== 'stale-ok') return null
    const result = use === 'fresh' ? 'hit' : 'stale'
    const status = `sluice; hit; ttl=${Math.floor(ttlMs(e, now) / 1000)}`
    const ifRange = first(rh['if-range'])
    if (ifRange !== undefined && !ifRangeMatches(ifRange, first(e.headers.etag), first(e.headers['last-modified']))) {
      return respond(e, route, req, status, result, now) // the representation changed: all of it
    }
    const r = singleRange(first(rh.range) ?? '', e.body.length)
    if (r === null) return null
    event(route.name, result)
    // Ranges are cut from the identity bytes (encoded variants would need ranges of their own).
    const headers: Headers = { ...outHeaders(e, 'identity', route), 'content-range': `bytes ${r.start}-${r.end}/${e.body.length}`, 'content-length': String(r.end - r.start + 1) }
    return { status: 206, headers, body: e.body.subarray(r.start, r.end + 1), cacheResult: result, cacheStatus: status, age: String(Math.floor(ageMs(e, now) / 1000)) }
  }

  function hit (e: CacheEntry, route: CacheRoute, req: UpstreamRequest, key: string, base: string, path: string, fetch: Fetcher, now: number): ProxyResponse {
    const rc = route.cache
    const ttl = ttlMs(e, now)
    if (rc.refreshAheadPercent > 0 && e.lifetimeMs > 0 && ttl < e.lifetimeMs * (100 - rc.refreshAheadPercent) / 100) {
      refreshInBackground(route, req, key, base, path, e, fetch)
    }
    return respond(e, route, req, `sluice; hit; ttl=${Math.floor(ttl / 1000)}`, 'hit', now)
  }

  return {
    peek (route, req) {
      const rc = route.cache
      const base = baseKey(req.method, req.host, keyPath(req.path, rc.key), req.headers, rc.key)
      const names = l1.getVary(base)
      if (names === undefined) return null
      const e = l1.get(variantKey(base, names, req.headers))
      if (e === undefined || e.noCache) return null
      const now = Date.now()
      const ttl = ttlMs(e, now)
      if (ttl <= 0) return null
      if (rc.refreshAheadPercent > 0 && e.lifetimeMs > 0 && ttl < e.lifetimeMs * (100 - rc.refreshAheadPercent) / 100) return null
      return respond(e, route, req, `sluice; hit; ttl=${Math.floor(ttl / 1000)}`, 'hit', now)
    },

    handle (route, req, fetch) {
      const method = req.method
      const rc0 = route.cache
      if (method === 'POST' && rc0.queryPost.enabled && Buffer.isBuffer(req.body) && req.body.length <= rc0.queryPost.maxBodyBytes) {
        return query(route, req, fetch, req.body)
      }
      if (method !== 'GET' && method !== 'HEAD') {
        if (!SAFE.has(method)) return invalidateAfter(route, req, fetch)
        return pass(route, req, fetch, 'METHOD')
      }
      const rh = req.headers
      const reqD = rh['cache-control'] !== undefined || rh.pragma !== undefined ? requestDirectives(rh) : EMPTY_D
      const rc = route.cache
      const path = keyPath(req.path, rc.key)
      const base = baseKey(method, req.host, path, rh, rc.key)
      // The hot path: a fresh L1 hit, answered synchronously.
      const names = l1.getVary(base)
      if (names !== undefined && rh.authorization === undefined && rh.range === undefined) {
        const key = variantKey(base, names, rh)
        const e = l1.get(key)
        if (e !== undefined) {
          const now = Date.now()
          if ((reqD.size === 0 ? (e.noCache ? 'revalidate' : ttlMs(e, now) > 0 ? 'fresh' : 'x') : usability(e, rc, reqD, now)) === 'fresh') {
            return hit(e, route, req, key, base, path, fetch, now)
          }
        }
      }
      return slow(route, req, fetch, reqD, base, path)
    },

    async purge (sel) {
      let purged = l1.purge(sel)
      if (l2) purged += await l2.purge(sel)
      publish(sel as Record<string, string>)
      gauges()
      deps.onPurged?.()
      return { purged }
    },

    stats () {
      const s = l1.stats()
      return { memory: { entries: s.entries, bytes: s.bytes, maxBytes: config.memory.maxBytes }, redis: l2 !== null, inflight: inflight.size, hitForMiss: hitForMiss.size }
    },

    async close () {
      closed = true
      clearInterval(gaugeTimer)
      for (const [key, w] of remote) { clearTimeout(w.timer); w.resolve({ reason: 'ERROR' }); remote.delete(key) }
      await Promise.race([Promise.allSettled([...background]), new Promise((r) => setTimeout(r, 2000).unref())])
      if (sub) sub.disconnect()
    }
  }
}

export { parseDirectives }
