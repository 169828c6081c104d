// Miss coalescing: one fill per key at a time, in this process and (with Redis) in the fleet.
//
// - A miss with no fill running leads one (fill.ts). Requests for the same key that arrive
//   meanwhile wait for it, boundedly (coalesceTimeoutMs), and answer from the stored entry
//   when it is their variant; otherwise they go upstream alone.
// - An uncacheable answer makes the key hit-for-miss for hitForMissSeconds: its requests go
//   straight upstream, never queued behind one another (nginx's proxy_cache_lock queues them).
// - With a shared L2, the leader first takes the key's fill lease in Redis (SET-NX-like, in the
//   URL's slot), so one replica fills each key: the others wait for its "filled" message and
//   read the entry from L2. A lease that times out, or a Redis that fails, leaves coalescing
//   in-process. Background refreshes (stale-while-revalidate, refresh-ahead) take it too.
import type { ProxyResponse, UpstreamRequest } from '../types.js'
import type { CacheRouteConfig } from './config.js'
import { variantKey } from './key.js'
import { canServeStaleOnError, NO_DIRECTIVES } from './freshness.js'
import { respond } from './respond.js'
import { bypass, runFill, type FillHooks, type FillJob } from './fill.js'
import type { EntryWriter } from './writer.js'
import type { CacheBus, FilledMessage } from './bus.js'
import type { CacheCore, Fill } from './core.js'
import { upstreamRequestId } from '../request-id.js'

/**
 * A copy of a request for work that outlives its client: no signal, no streamed body, and
 * not in the client's trace: the client's traceparent and tracestate stay behind (the refresh
 * is not part of the request it was started by, which has been answered).
 */
function detachedCopy (req: UpstreamRequest): UpstreamRequest {
  const post = req.method === 'POST' // a POST query refreshes with its own (buffered) body
  const headers = { ...req.headers }
  delete headers.traceparent
  delete headers.tracestate
  // The request ID stays (its header, and which header it is): the refresh's log lines (retries,
  // failures) name the request that started it.
  return { method: post ? 'POST' : 'GET', path: req.path, headers, body: post ? req.body : null, host: req.host, protocol: req.protocol, clientIp: req.clientIp, forwarded: req.forwarded, requestIdHeader: req.requestIdHeader }
}

/** A response nobody reads (a background fill's): let its body go. */
function release (r: ProxyResponse): void {
  (r.body as { resume?: () => void } | null)?.resume?.()
}

const COALESCE_FAILED: Fill = { reason: 'ERROR' }

/** How long a "filled" message that came before its wait is kept for it, and how many are kept. */
const EARLY_MS = 2000
const EARLY_MAX = 1000

/**
 * Set `key` as the newest entry of `map` (an insertion-ordered map: a key set again moves to
 * the end), then drop the oldest while there are more than `max`.
 */
function setNewest<V> (map: Map<string, V>, key: string, value: V, max: number): void {
  map.delete(key)
  map.set(key, value)
  for (const k of map.keys()) {
    if (map.size <= max) break
    map.delete(k)
  }
}

/**
 * This replica's wait for another replica's fill of one key. Every request or refresh that
 * waits for the key is one of `waiters`; each is called once, with the fill, or with null when
 * the wait timed out (then it runs its own fallback).
 */
interface RemoteWait { timer: NodeJS.Timeout; waiters: Array<(f: Fill | null) => void> }

export class Coalescer implements FillHooks {
  private readonly inflight = new Map<string, Promise<Fill>>()
  /** Keys whose last answer was uncacheable, until when (ms). */
  private readonly hitForMiss = new Map<string, number>()
  /** Fills this replica waits for from another replica, by variant key: one wait, every waiter of the key in it. */
  private readonly remote = new Map<string, RemoteWait>()
  /**
   * "filled" messages that came before any wait here for their key, kept for EARLY_MS. A lease's
   * 'held' reply and the holder's "filled" message travel on two connections: the message can
   * arrive first (the holder released and published as this replica's lease call returned), and
   * the wait registered just after would sit out the whole coalesce timeout for it.
   */
  private readonly early = new Map<string, { m: FilledMessage, at: number }>()
  /** In-flight promises that stand for another replica's fill (their joiners wait longer). */
  private readonly remoteFills = new WeakSet<Promise<Fill>>()
  /** Keys whose background refresh is asking Redis for the lease. */
  private readonly leasing = new Set<string>()
  private readonly shared: boolean
  private closed = false

  constructor (private readonly core: CacheCore, private readonly writer: EntryWriter, private readonly bus: CacheBus | null) {
    this.shared = core.l2 !== null && bus !== null && core.config.coalesceAcrossReplicas
    if (bus !== null) bus.onFilled = (m) => this.filled(m)
  }

  // ---- FillHooks ----------------------------------------------------------------------------

  started (key: string, fill: Promise<Fill>): void {
    this.inflight.set(key, fill)
  }

  ended (job: FillJob, fill: Promise<Fill>, f: Fill, leased: boolean, stored?: Promise<unknown>): void {
    if (this.inflight.get(job.key) === fill) this.inflight.delete(job.key)
    this.rememberUncacheable(job.key, f, job.route.cache)
    if (leased) this.announce(job.key, f, stored)
  }

  // ---- entry points -------------------------------------------------------------------------

  /** Nothing usable stored (or a stale entry to revalidate): bypass, join a running fill, or lead one. */
  fetch (job: FillJob): Promise<ProxyResponse> {
    const hfm = this.hitForMiss.get(job.key)
    if (hfm !== undefined && hfm > this.core.now() && job.stale === undefined) return bypass(this.core, job.route, job.req, job.fetch, 'HIT-FOR-MISS')
    const running = this.inflight.get(job.key)
    if (running !== undefined) return this.join(job, running)
    return this.leadShared(job)
  }

  /** Refresh a stored entry in the background (stale-while-revalidate, refresh-ahead), once. */
  refresh (job: FillJob): void {
    const { core } = this
    const key = job.key
    if (this.inflight.has(key) || this.remote.has(key) || this.leasing.has(key) || this.closed) return // already refreshing
    const bg: FillJob = { ...job, req: detachedCopy(job.req), reqD: NO_DIRECTIVES }
    const run = (leased: boolean) => core.track(runFill(core, this.writer, this, bg, false, leased)
      .then(release, (err: Error) => core.log.debug({ reqId: upstreamRequestId(bg.req), err: err.message, path: job.path }, 'background refresh failed')))
    if (!this.shared) { run(false); return }
    // One refresh in the fleet: another replica holding the lease refreshes for everyone, and
    // its "filled" message updates this replica's L1. Until then the stale entry is served.
    const rc = job.route.cache
    this.leasing.add(key)
    core.track(core.l2!.lease(key, this.bus!.instance, rc.coalesceTimeoutMs, false).then((r) => {
      core.metrics.cacheLeases.labels(r).inc()
      this.leasing.delete(key)
      if (this.closed || this.inflight.has(key)) return
      if (r === 'held') { core.track(this.awaitRemote(key, rc.coalesceTimeoutMs, async () => COALESCE_FAILED)); return }
      run(r === 'acquired')
    }))
  }

  /** Forget hit-for-miss marks that have run out. */
  sweep (now: number): void {
    for (const [k, until] of this.hitForMiss) if (until <= now) this.hitForMiss.delete(k)
  }

  stats (): { inflight: number; hitForMiss: number } {
    return { inflight: this.inflight.size, hitForMiss: this.hitForMiss.size }
  }

  close (): void {
    this.closed = true
    for (const [key, w] of this.remote) this.settleRemote(key, w, COALESCE_FAILED)
  }

  // ---- in-process ---------------------------------------------------------------------------

  /**
   * After an uncacheable answer (not a failure), the key goes straight upstream for
   * hitForMissSeconds. Not when it was uncacheable because of this request (its Authorization
   * or Cookie): the next client's answer may well be stored.
   */
  private rememberUncacheable (key: string, f: Fill, rc: CacheRouteConfig): void {
    const r = f.reason
    if (r === undefined || r === 'ERROR' || r === 'BODY-ERROR' || r === 'AUTHORIZATION' || r === 'COOKIE') return
    // Bounded: unique uncacheable URLs would otherwise pile up until the next sweep.
    setNewest(this.hitForMiss, key, this.core.now() + rc.hitForMissSeconds * 1000, this.core.config.hitForMissMaxKeys)
  }

  /** Wait for a fill led by another request (here or on another replica), boundedly, then answer from it. */
  private async join (job: FillJob, running: Promise<Fill>): Promise<ProxyResponse> {
    const { core } = this
    const { route, req } = job
    const rc = route.cache
    const rh = req.headers
    let timer: NodeJS.Timeout | undefined
    // A fill of another replica may fall back to one of this replica after coalesceTimeoutMs.
    const wait = this.remoteFills.has(running) ? 2 * rc.coalesceTimeoutMs : rc.coalesceTimeoutMs
    const fill = await Promise.race([running, new Promise<Fill>((resolve) => { timer = setTimeout(() => resolve(COALESCE_FAILED), wait) })])
    clearTimeout(timer)
    // The fill's Vary was unknown when this request joined it: use it only if it is this request's variant.
    const e = fill.entry
    if (e !== undefined && !(rh.authorization !== undefined && !e.authOk) && variantKey(job.base, e.varyNames, rh) === e.key) {
      return respond(core, e, route, req, 'sluice; fwd=miss; collapsed', 'coalesced', core.now())
    }
    // Failed (the origin's 5xx or reset, a body cut short, or a fill that did not answer in
    // time): a stale entry serves under stale-if-error, with the status the fill got (none when
    // it is not known: a wait that timed out, another replica's fill).
    if (job.stale !== undefined && (fill.reason === 'ERROR' || fill.reason === 'BODY-ERROR') && canServeStaleOnError(job.stale, core.now())) {
      const fwd = fill.status === undefined ? '' : `; fwd-status=${fill.status}`
      return respond(core, job.stale, route, req, `sluice; fwd=stale${fwd}; detail=COALESCED-FILL-FAILED`, 'stale', core.now())
    }
    // Uncacheable, failed or slow: go upstream alone (in parallel with the others).
    return bypass(core, route, req, job.fetch, fill.reason === undefined || fill.reason === 'ERROR' ? 'COALESCE-FALLBACK' : fill.reason)
  }

  // ---- across replicas ----------------------------------------------------------------------

  /**
   * Lead the fill of a missed (or stale) key. With a shared L2, take the fleet-wide fill lease
   * first: when another replica holds it, this replica's requests for the key wait for that
   * replica's fill instead (coalesced across replicas).
   */
  private leadShared (job: FillJob): Promise<ProxyResponse> {
    const { core } = this
    if (!this.shared || job.req.method === 'POST') return runFill(core, this.writer, this, job, true, false)
    const key = job.key
    const rc = job.route.cache
    let resolveWait!: (f: Fill) => void
    const waitP = new Promise<Fill>((resolve) => { resolveWait = resolve })
    // Requests for this key arriving while the lease is asked join waitP, as they would a local fill.
    this.inflight.set(key, waitP)
    this.remoteFills.add(waitP)
    const mine = () => { if (this.inflight.get(key) === waitP) this.inflight.delete(key) }
    /** Fill in-process, without a lease, in the background; waitP gets its outcome. */
    const fillHere = (): Promise<Fill> => {
      mine()
      const running = this.inflight.get(key)
      if (running !== undefined && running !== waitP) return running
      runFill(core, this.writer, this, { ...job, req: detachedCopy(job.req), reqD: NO_DIRECTIVES }, false, false).then(release, () => {})
      return this.inflight.get(key) ?? Promise.resolve(COALESCE_FAILED) // runFill registered its fill synchronously
    }
    return core.l2!.lease(key, this.bus!.instance, rc.coalesceTimeoutMs, job.stale === undefined).then(async (r) => {
      core.metrics.cacheLeases.labels(r).inc()
      if (r === 'acquired' || r === 'error') {
        mine()
        const p = runFill(core, this.writer, this, job, true, r === 'acquired')
        const fillP = this.inflight.get(key) // runFill registered its fill synchronously
        if (fillP !== undefined) fillP.then(resolveWait); else p.then(() => resolveWait(COALESCE_FAILED), () => resolveWait(COALESCE_FAILED))
        return p
      }
      if (r === 'filled') {
        // Stored by another replica since this one looked: read it like an L2 hit.
        const got = await core.fromL2(key)
        mine()
        if (got !== undefined) resolveWait({ entry: got }); else fillHere().then(resolveWait)
      } else {
        // 'held': another replica fills; wait for its message, then fill here if it never comes.
        this.awaitRemote(key, rc.coalesceTimeoutMs, fillHere).then((f) => {
          mine()
          this.rememberUncacheable(key, f, rc)
          resolveWait(f)
        })
      }
      return this.join(job, waitP)
    })
  }

  /**
   * Wait up to `ms` for another replica's fill of `key`; on timeout, `onTimeout` decides (a fill
   * of our own). A second wait for a key already waited for joins that wait (its timer and its
   * "filled" message): every waiter settles, once.
   */
  private awaitRemote (key: string, ms: number, onTimeout: () => Promise<Fill>): Promise<Fill> {
    return new Promise<Fill>((resolve) => {
      const waiter = (f: Fill | null): void => {
        if (f !== null) resolve(f); else onTimeout().then(resolve, () => resolve(COALESCE_FAILED))
      }
      const running = this.remote.get(key)
      if (running !== undefined) { running.waiters.push(waiter); return }
      const w: RemoteWait = {
        timer: setTimeout(() => {
          this.core.metrics.cacheLeases.labels('timeout').inc()
          this.settleRemote(key, w, null)
        }, ms),
        waiters: [waiter]
      }
      w.timer.unref()
      this.remote.set(key, w)
      const early = this.early.get(key)
      if (early !== undefined) {
        this.early.delete(key)
        if (this.core.now() - early.at <= EARLY_MS) this.filled(early.m)
      }
    })
  }

  /** End the wait `w` for `key`: each of its waiters gets `f` (null: timed out), once. */
  private settleRemote (key: string, w: RemoteWait, f: Fill | null): void {
    if (this.remote.get(key) === w) this.remote.delete(key)
    clearTimeout(w.timer)
    for (const waiter of w.waiters.splice(0)) waiter(f)
  }

  /** Keep a "filled" message no wait here has asked for yet (bounded: EARLY_MAX, the oldest go first). */
  private keepEarly (m: FilledMessage): void {
    if (typeof m.k !== 'string') return
    const now = this.core.now()
    setNewest(this.early, m.k, { m, at: now }, EARLY_MAX)
    // The oldest first: those past EARLY_MS go too.
    for (const [k, v] of this.early) {
      if (now - v.at <= EARLY_MS) break
      this.early.delete(k)
    }
  }

  /** Tell waiting replicas that this replica's leased fill of `key` is done, once L2 has it. */
  private announce (key: string, f: Fill, stored: Promise<unknown> | undefined): void {
    const { l2 } = this.core
    const bus = this.bus!
    this.core.track(Promise.resolve(stored).then(() => l2!.release(key, bus.instance)).then((waiting) => {
      if (waiting === 0) return // -1 (the lease ran out): tell anyone who may still wait
      return bus.publishFilled(f.entry !== undefined ? { k: key, e: f.entry.key } : { k: key, r: f.reason ?? 'ERROR', ...(f.status === undefined ? {} : { s: f.status }) })
    }).catch(() => {}))
  }

  /**
   * Another replica's fill is done: `e` names the stored entry, `r` why nothing was stored, `s`
   * the status its origin answered (absent from older replicas' messages: then none is named).
   */
  private filled (m: FilledMessage): void {
    const w = this.remote.get(m.k)
    if (w === undefined) { this.keepEarly(m); return }
    clearTimeout(w.timer)
    if (typeof m.e !== 'string') {
      const s = typeof m.s === 'number' && Number.isInteger(m.s) && m.s >= 100 && m.s <= 599 ? m.s : undefined
      this.settleRemote(m.k, w, s === undefined ? { reason: m.r ?? 'ERROR' } : { reason: m.r ?? 'ERROR', status: s })
      return
    }
    // Still the key's wait while the entry is read: requests arriving meanwhile get it too.
    this.core.fromL2(m.e).then((e) => this.settleRemote(m.k, w, e === undefined ? COALESCE_FAILED : { entry: e }),
      () => this.settleRemote(m.k, w, COALESCE_FAILED))
  }
}
