// Stage 3, cache: an RFC 9111 shared cache in front of the upstream stage. This file wires the
// parts and holds the decisions; each part has its own file:
//
//   lookup.ts     key → L1 → L2 (an L2 hit is kept in L1)
//   freshness.ts  fresh, usable stale, stale-while-revalidate, or revalidate: one answer
//   respond.ts    answering from an entry: 304, one range, the stored coding, Age, Cache-Status
//   partial.ts    206 responses: stored as parts, ranges answered from them, parts combined
//   coalesce.ts   one fill per key (in-process and, with Redis, fleet-wide leases), hit-for-miss
//   fill.ts       one upstream fill: detached request, tee to the client, revalidation, stale-if-error
//   writer.ts     storing: L1 now; encoded copies and L2 in the background
//   bus.ts        the replicas' purge and "filled" messages (Redis pub/sub)
//
// A fresh L1 hit is answered synchronously from stored bytes and header objects: no parsing
// beyond the key, no Redis, no compression (src/fast-path.ts calls peek() before Fastify runs).
import type { Logger } from 'pino'
import { createHash } from 'node:crypto'
import type { Metrics } from '../observability/metrics.js'
import type { CacheResult, ProxyResponse, UpstreamRequest } from '../types.js'
import { SluiceError } from '../errors.js'
import { SAFE } from '../upstream/methods.js'
import { first } from '../compress/headers.js'
import type { CacheGlobalConfig } from './config.js'
import { ttlMs, type CacheEntry } from './entry.js'
import { MemoryStore } from './memory.js'
import { PURGE_LOG_MS, type Purge, type PurgeSelector, type SharedEntryStore } from './store.js'
import { baseKey, keyPath } from './key.js'
import { requestDirectives } from './policy.js'
import type { Directives } from './directives.js'
import { usability, refreshDue, NO_DIRECTIVES } from './freshness.js'
import { respond, ranged, ttlSeconds, hitStatus } from './respond.js'
import { lookup, lookupL1 } from './lookup.js'
import { findPartial, fromPartial, rangeMiss } from './partial.js'
import { invalidRange } from './range.js'
import { bypass, type FillJob } from './fill.js'
import { Coalescer } from './coalesce.js'
import { EntryWriter } from './writer.js'
import type { CacheBus } from './bus.js'
import { CacheCore, type CacheRoute, type Fetcher } from './core.js'

export interface CacheStageDeps {
  config: CacheGlobalConfig
  metrics: Metrics
  log: Logger
  /** L1 (default: a MemoryStore sized by config.memory). */
  l1?: MemoryStore
  /** L2 shared by the replicas, or null (default) for memory only. */
  l2?: SharedEntryStore | null
  /** The replicas' purge and fill messages; null (default) without Redis. */
  bus?: CacheBus | null
  /** The clock (default Date.now): tests move it instead of sleeping. */
  now?: () => number
  /** Called after a purge (the gateway re-runs cache.warmup). */
  onPurged?: () => void
}

export interface CacheStage {
  handle (route: CacheRoute, req: UpstreamRequest, fetch: Fetcher): ProxyResponse | Promise<ProxyResponse>
  /**
   * A fresh L1 hit for a plain request, or null (then use handle). No side effects but LRU
   * recency and the hit counter: the caller has already ruled out conditionals, Range,
   * Authorization and request cache directives.
   */
  peek (route: CacheRoute, req: UpstreamRequest): ProxyResponse | null
  /**
   * Purge L1 and L2, and tell the other replicas. `incomplete` names what it could not reach
   * (`redis`: L2 still holds what it had, and other replicas may serve it from there).
   */
  purge (p: PurgeSelector): Promise<{ purged: number; incomplete?: string }>
  stats (): Record<string, unknown>
  close (): Promise<void>
  /** The metrics the stage was built with (the fast path observes body sizes through it). */
  readonly metrics?: Metrics
}

type Count = { inc (): void }

/** How far before a lost subscription the purge log is read again: purge durations and clock skew. */
const RESUBSCRIBE_CATCHUP_MS = 30_000
/** The first and the longest wait before a failed purge-log catch-up is tried again. */
const CATCHUP_RETRY_MIN_MS = 200
const CATCHUP_RETRY_MAX_MS = 10_000

/**
 * The shared cache parts, with hits counted by layer: sluice_cache_events_total{result="hit",
 * layer}. respond() counts through event() synchronously, so the stage sets `hitLayer` to l2
 * around answering an entry that lookup() read from Redis, and puts it back to l1 at once.
 */
class LayeredCore extends CacheCore {
  hitLayer: 'l1' | 'l2' = 'l1'
  private readonly hits = new Map<string, [Count, Count]>()

  override event (route: string, result: CacheResult): void {
    if (result !== 'hit') return super.event(route, result)
    let h = this.hits.get(route)
    if (h === undefined) {
      h = [this.metrics.cacheEvents.labels(route, 'hit', 'l1'), this.metrics.cacheEvents.labels(route, 'hit', 'l2')]
      this.hits.set(route, h)
    }
    h[this.hitLayer === 'l1' ? 0 : 1].inc()
  }
}

/**
 * The path and query of the key (key.ts keyPath), which from here on is also the one forwarded:
 * a query parameter the route leaves out of the key (ignoreParams) never reaches the origin,
 * and a sorted query (sortQuery) reaches it sorted. Otherwise whatever the origin made of an
 * unkeyed parameter (`?utm_source=<script>` reflected in a page) would be stored under the key
 * of the URL without it and served to every client, and two orders of a repeated parameter
 * (`?a=1&a=2`, `?a=2&a=1`) would share one answer the origin gave to only one of them.
 */
function forwardAsKeyed (req: UpstreamRequest, o: CacheRoute['cache']['key']): string {
  const path = keyPath(req.path, o)
  if (path !== req.path) req.path = path
  return path
}

/** A stored entry this request may use: a request with Authorization only one marked authOk. */
function usableWith (e: CacheEntry | undefined, rh: UpstreamRequest['headers']): CacheEntry | undefined {
  return e !== undefined && rh.authorization !== undefined && !e.authOk ? undefined : e
}

export function createCacheStage (deps: CacheStageDeps): CacheStage {
  const { config } = deps
  const now = deps.now ?? Date.now
  const l1 = deps.l1 ?? new MemoryStore(config.memory.maxBytes, config.memory.maxEntryBytes, now)
  const l2 = deps.l2 ?? null
  const bus = deps.bus ?? null
  const core = new LayeredCore(config, l1, l2, deps.metrics, deps.log, now)
  l1.dropped = { size: deps.metrics.cacheEvictions.labels('memory', 'size'), expired: deps.metrics.cacheEvictions.labels('memory', 'expired') }
  // The L1 gauges follow an expired entry dropped on lookup at once (a hit does no gauge work).
  l1.onExpired = () => core.gauges()
  if (bus !== null) core.onSuperseded = (base) => { bus.publishPurge({ base }) }
  const maxBytesGauge = deps.metrics.cacheMaxBytes.labels('memory')
  maxBytesGauge.set(l1.capacity)
  const writer = new EntryWriter(core)
  const coalescer = new Coalescer(core, writer, bus)
  // Another replica's purge: its L2 part is done; it stops this replica's L2 writes of what it
  // names (writer.ts) and clears it from L1.
  const applyRemote = (p: Purge): void => { core.purgeBegins(p)(); core.purgeL1(p) }
  // The gauges follow at once, as after a local purge (not at the next 5 s tick).
  // L2 hears of it too: an entry its tag set no longer listed is a miss from now on (store.ts notePurge).
  if (bus !== null) bus.onPurge = (m) => { l2?.notePurge(m); applyRemote(m); core.gauges() }
  // Messages sent while this replica's subscriber reconnected are lost: catch up from the purge
  // log. From a while before the connection went (a purge logs itself before its deletes, and
  // its message may have been in flight then), allowing for clock skew: an L1 purge applied
  // twice costs an L2 read, one missed serves a purged entry until it expires.
  // A read that fails (counted and logged by the store) is tried again, with backoff, until one
  // succeeds or the stage closes: until then this replica may serve what was purged. A loss
  // longer than the log keeps purges, or one during which more purges ran than it keeps, may
  // have missed some for good: then all of L1 goes.
  let closed = false
  /** The earliest loss no catch-up has read the log for since; a catch-up read running or waiting to retry. */
  let behindSince: number | null = null
  let busy = false
  let retry: NodeJS.Timeout | null = null
  const catchUp = (l2: SharedEntryStore, attempt: number): void => {
    retry = null
    if (closed || behindSince === null) { busy = false; return }
    busy = true
    const lostAt = behindSince
    behindSince = null
    const since = lostAt - RESUBSCRIBE_CATCHUP_MS
    core.track(l2.purgedSince(since, true).then((list) => {
      if (closed) return
      if (list === null) {
        behindSince = Math.min(behindSince ?? lostAt, lostAt)
        retry = setTimeout(() => catchUp(l2, attempt + 1), Math.min(CATCHUP_RETRY_MIN_MS * 2 ** attempt, CATCHUP_RETRY_MAX_MS))
        retry.unref()
        return
      }
      // The log cannot cover a loss longer than it keeps purges, nor one during which more purges
      // ran than it keeps (a gap entry: the oldest of them are gone from it).
      const missed = now() - since > PURGE_LOG_MS ? 'for longer than the purge log keeps purges' : list.length > 0 && list[0].gap === true ? 'while more purges ran than the purge log keeps' : null
      if (missed !== null) {
        deps.log.warn({ lostForMs: now() - lostAt }, `cache purge messages were lost ${missed}: dropping this replica's whole L1 cache`)
        applyRemote({ prefix: '' })
      } else {
        for (const { sel } of list) applyRemote(sel)
      }
      core.gauges()
      // A loss that began (or ended) while this read ran: read again, from it.
      catchUp(l2, 0)
    }))
  }
  if (bus !== null && l2 !== null) {
    bus.onResubscribed = (lostAt) => {
      behindSince = Math.min(behindSince ?? lostAt, lostAt)
      if (!busy) catchUp(l2, 0)
    }
  }

  const gaugeTimer = setInterval(() => {
    core.gauges()
    maxBytesGauge.set(l1.capacity)
    // Bounded work per tick: a large L2 is measured over several ticks, never scanned at once.
    l2?.sampleStats().then((s) => {
      if (s !== null) { deps.metrics.cacheBytes.labels('redis').set(s.bytes); deps.metrics.cacheEntries.labels('redis').set(s.entries) }
    }, () => {})
    coalescer.sweep(now())
  }, 5000)
  gaugeTimer.unref()

  /** A fresh hit; past the route's refreshAheadPercent, one background refresh too. */
  function hit (e: CacheEntry, job: FillJob, t: number): ProxyResponse {
    if (refreshDue(e, job.route.cache, t)) coalescer.refresh(job)
    return respond(core, e, job.route, job.req, hitStatus(e, t), 'hit', t)
  }

  /** `answer` counts a hit as an L2 one (it answers from an entry lookup() read from Redis). */
  function fromL2<T> (answer: () => T): T {
    core.hitLayer = 'l2'
    try { return answer() } finally { core.hitLayer = 'l1' }
  }

  /** Everything but a fresh L1 hit: L2, ranges, stale, request directives, then a fill. */
  async function slow (route: CacheRoute, req: UpstreamRequest, fetch: Fetcher, reqD: Directives, base: string, path: string): Promise<ProxyResponse> {
    const rh = req.headers
    const found = await lookup(core, base, rh)
    const e = usableWith(found.entry, rh)
    // One byte range of a usable stored response is cut from its bytes; any other range request
    // (several ranges, with a conditional, nothing usable stored) goes to the origin as it is,
    // unless it says only-if-cached (RFC 9111 §5.2.1.7): then it gets a 504. A HEAD, for which
    // Range means nothing, and a `bytes` Range that is not valid syntax are ignored (RFC 9110
    // §14.2): answered as without it, from the cache when it can.
    const onlyIfCached = reqD.has('only-if-cached')
    if (rh.range !== undefined && req.method === 'GET' && !invalidRange(first(rh.range)!)) {
      // A stale stored response is refreshed in the background (a revalidation: no Range, its
      // validators), as a plain GET's would be: otherwise, with clients that only send ranges
      // (players, download managers), every range would go to the origin until a plain GET came.
      // The range itself is cut from the stale entry within stale-while-revalidate (ranged()),
      // else forwarded. A no-cache entry is revalidated by plain GETs only (it never gets fresh).
      if (e !== undefined && !onlyIfCached && !e.noCache && ttlMs(e, now()) <= 0) {
        coalescer.refresh({ route, req, key: found.key, base, path, reqD, stale: e, fetch })
      }
      const cut = e !== undefined ? (found.fromL2 ? fromL2(() => ranged(core, e!, route, req, reqD)) : ranged(core, e, route, req, reqD)) : null
      if (cut !== null) return cut
      if (onlyIfCached && e !== undefined) throw new SluiceError('SLUICE_ERR_ONLY_IF_CACHED')
      if (e !== undefined || reqD.has('no-store')) return bypass(core, route, req, fetch, 'RANGE')
      // Nothing complete stored: a stored part may hold the range; else the 206 is kept (partial.ts).
      const part = usableWith(await findPartial(core, found.key), rh)
      const answer = part !== undefined ? fromPartial(core, part, route, req, reqD) : null
      if (answer !== null) return answer
      if (onlyIfCached) throw new SluiceError('SLUICE_ERR_ONLY_IF_CACHED')
      return rangeMiss(core, writer, { route, req, base, path, reqD, fetch, stored: part })
    }
    const job: FillJob = { route, req, key: found.key, base, path, reqD, stale: e, fetch }
    const t = now()
    if (e !== undefined) {
      const use = usability(e, route.cache, reqD, t)
      if (use === 'fresh') return found.fromL2 ? fromL2(() => hit(e!, job, t)) : hit(e, job, t)
      if (use === 'stale-ok') return respond(core, e, route, req, `sluice; hit; ttl=${ttlSeconds(e, t)}`, 'stale', t)
      if (use === 'swr') {
        coalescer.refresh(job)
        return respond(core, e, route, req, `sluice; fwd=stale; ttl=${ttlSeconds(e, t)}; detail=STALE-WHILE-REVALIDATE`, 'stale', t)
      }
    }
    if (onlyIfCached) throw new SluiceError('SLUICE_ERR_ONLY_IF_CACHED')
    if (reqD.has('no-store')) return bypass(core, route, req, fetch, 'NO-STORE')
    return coalescer.fetch(job)
  }

  /** A POST query: cached like a GET, keyed by a hash of its body and Content-Type. */
  function query (route: CacheRoute, req: UpstreamRequest, fetch: Fetcher, body: Buffer): Promise<ProxyResponse> {
    const rh = req.headers
    if (rh.authorization !== undefined || rh.range !== undefined) return bypass(core, route, req, fetch, rh.authorization !== undefined ? 'AUTHORIZATION' : 'RANGE')
    const reqD = rh['cache-control'] !== undefined || rh.pragma !== undefined ? requestDirectives(rh) : NO_DIRECTIVES
    const digest = createHash('sha256').update(first(rh['content-type']) ?? '').update('\u0000').update(body).digest('base64url')
    const path = forwardAsKeyed(req, route.cache.key)
    return slow(route, req, fetch, reqD, baseKey('POST', req.host, path, rh, route.cache.key) + '|q=' + digest, path)
  }

  /** An unsafe method that succeeds invalidates the URL and its Location/Content-Location (RFC 9111 §4.4). */
  async function invalidateAfter (route: CacheRoute, req: UpstreamRequest, fetch: Fetcher): Promise<ProxyResponse> {
    const res = await bypass(core, route, req, fetch, 'METHOD')
    if (res.status >= 400) return res
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
      const end = core.purgeBegins({ base })
      l1.deleteBase(base)
      if (l2 !== null) core.track(l2.invalidate(base).finally(end)); else end()
      bus?.publishPurge({ base })
    }
    core.gauges()
    return res
  }

  return {
    metrics: deps.metrics,

    peek (route, req) {
      const rc = route.cache
      const e = lookupL1(l1, baseKey(req.method, req.host, keyPath(req.path, rc.key), req.headers, rc.key), req.headers)
      if (e === undefined) return null
      const t = now()
      // A hit due for refresh-ahead goes through handle(), which starts the refresh.
      if (usability(e, rc, NO_DIRECTIVES, t) !== 'fresh' || refreshDue(e, rc, t)) return null
      return respond(core, e, route, req, hitStatus(e, t), 'hit', t)
    },

    handle (route, req, fetch) {
      const method = req.method
      const rc = route.cache
      if (method === 'POST' && rc.queryPost.enabled && Buffer.isBuffer(req.body) && req.body.length <= rc.queryPost.maxBodyBytes) {
        return query(route, req, fetch, req.body)
      }
      if (method !== 'GET' && method !== 'HEAD') return SAFE.has(method) ? bypass(core, route, req, fetch, 'METHOD') : invalidateAfter(route, req, fetch)
      const rh = req.headers
      const reqD = rh['cache-control'] !== undefined || rh.pragma !== undefined ? requestDirectives(rh) : NO_DIRECTIVES
      const path = forwardAsKeyed(req, rc.key)
      const base = baseKey(method, req.host, path, rh, rc.key)
      // The hot path: a fresh L1 hit, answered synchronously.
      if (rh.authorization === undefined && rh.range === undefined) {
        const e = lookupL1(l1, base, rh)
        if (e !== undefined) {
          const t = now()
          if (usability(e, rc, reqD, t) === 'fresh') return hit(e, { route, req, key: e.key, base, path, reqD, stale: e, fetch }, t)
        }
      }
      return slow(route, req, fetch, reqD, base, path)
    },

    async purge (sel) {
      // Begun before L1 is purged: an L2 write of an entry this purge names, pending or in flight, does not land after it (writer.ts).
      const end = core.purgeBegins(sel)
      let purged = 0
      let incomplete: string | undefined
      try {
        purged = l1.purge(sel)
        if (l2 !== null) {
          try { purged += await l2.purge(sel) } catch { incomplete = 'redis' } // counted and logged by the store
        }
      } finally { end() }
      bus?.publishPurge(sel)
      core.gauges()
      deps.onPurged?.()
      return incomplete === undefined ? { purged } : { purged, incomplete }
    },

    stats () {
      const s = l1.stats()
      // background: refreshes, lease waits and L2 writes still running (close() waits for them).
      return { memory: { entries: s.entries, bytes: s.bytes, maxBytes: config.memory.maxBytes }, redis: l2 !== null, ...coalescer.stats(), background: core.background.size }
    },

    async close () {
      clearInterval(gaugeTimer)
      closed = true
      if (retry !== null) clearTimeout(retry)
      coalescer.close()
      await Promise.race([Promise.allSettled([...core.background]), new Promise((resolve) => setTimeout(resolve, 2000).unref())])
      bus?.close()
    }
  }
}
