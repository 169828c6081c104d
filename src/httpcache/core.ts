// What the parts of the cache stage share: the config, the two stores (injected), metrics, the
// clock and the set of background jobs that close() waits for. One instance per process.
import type { Logger } from 'pino'
import type { Metrics } from '../observability/metrics.js'
import type { CacheResult, ProxyResponse, UpstreamRequest } from '../types.js'
import type { CompressionRouteConfig } from '../compress/config.js'
import type { CacheGlobalConfig, CacheRouteConfig } from './config.js'
import type { MemoryStore } from './memory.js'
import { matches, type Purge, type SharedEntryStore } from './store.js'
import { storeTtlMs, type CacheEntry } from './entry.js'
import type { BypassReason, RouteCachePolicy } from './policy.js'

/** What the cache needs of a route (the compiled RouteEntry has more). */
export interface CacheRoute { name: string; cache: CacheRouteConfig; compression: CompressionRouteConfig }
export type Fetcher = (req: UpstreamRequest) => Promise<ProxyResponse>
/**
 * How a fill ended: the stored entry, or why nothing was stored. `status`: the origin's status
 * (or the gateway's error status for a failed request) when the fill failed, for the
 * Cache-Status fwd-status of the stale answers its followers get.
 */
export interface Fill { entry?: CacheEntry; reason?: BypassReason | 'ERROR'; status?: number }

type Counter = { inc (): void }

export type { Purge } from './store.js'
/** Does purge `p` name entry `e`? */
export function purges (p: Purge, e: { base: string; path: string; tags: readonly string[] }): boolean {
  return 'base' in p ? e.base === p.base : matches(e, p)
}
/** The purges that began (or were still running) while an L2 read or write was in flight. */
export interface PurgeWatch { seen: Purge[] }

export class CacheCore {
  /** Background work (stores, refreshes, body drains) that close() lets finish. */
  readonly background = new Set<Promise<unknown>>()
  private readonly policies = new WeakMap<CacheRouteConfig, RouteCachePolicy>()
  private readonly events = new Map<string, Partial<Record<CacheResult, Counter>>>()
  /** L2 reads and writes in flight, each collecting the purges that run meanwhile. */
  private readonly watches = new Set<PurgeWatch>()
  /** Purges whose L2 part has not finished (one object per run, so equal selectors do not collide). */
  private readonly running = new Set<{ p: Purge }>()

  constructor (
    readonly config: CacheGlobalConfig,
    /** L1: in-process, synchronous (the hot path never awaits). */
    readonly l1: MemoryStore,
    /** L2: shared by every replica, or null for memory only. */
    readonly l2: SharedEntryStore | null,
    readonly metrics: Metrics,
    readonly log: Logger,
    /** Milliseconds since the epoch; injectable so tests move time without sleeping. */
    readonly now: () => number
  ) {}

  /** The freshness inputs of a route's cache config, built once per (frozen) config object. */
  policy (rc: CacheRouteConfig): RouteCachePolicy {
    let p = this.policies.get(rc)
    if (p === undefined) {
      p = {
        defaultTtlSeconds: rc.defaultTtlSeconds,
        staleWhileRevalidateSeconds: rc.staleWhileRevalidateSeconds,
        staleIfErrorSeconds: rc.staleIfErrorSeconds,
        allowSetCookie: rc.allowSetCookie,
        targetedField: this.config.targetedField,
        heuristicPercent: rc.heuristicPercent,
        maxHeuristicSeconds: rc.maxHeuristicSeconds
      }
      this.policies.set(rc, p)
    }
    return p
  }

  /** Count one cache decision (label children bound once per route and result). */
  event (route: string, result: CacheResult): void {
    let r = this.events.get(route)
    if (r === undefined) { r = {}; this.events.set(route, r) }
    let c = r[result]
    if (c === undefined) { c = this.metrics.cacheEvents.labels(route, result); r[result] = c }
    c.inc()
  }

  track<T> (p: Promise<T>): Promise<T> {
    this.background.add(p)
    p.finally(() => this.background.delete(p)).catch(() => {})
    return p
  }

  /**
   * A purge begins: every L2 read or write in flight sees it, and so does every one that starts
   * before the returned `end` is called (a local purge ends when its L2 part is done; a purge
   * from another replica, whose L2 part is already done, begins and ends at once).
   */
  purgeBegins (p: Purge): () => void {
    const run = { p }
    this.running.add(run)
    for (const w of this.watches) w.seen.push(p)
    return () => { this.running.delete(run) }
  }

  /** Is a purge naming `e` running now? */
  purgeRunning (e: CacheEntry): boolean {
    for (const r of this.running) if (purges(r.p, e)) return true
    return false
  }

  /** Watch for purges while an L2 read or write is in flight (the purges running now count as seen); unwatch() after. */
  watch (): PurgeWatch {
    const w: PurgeWatch = { seen: [] }
    for (const r of this.running) w.seen.push(r.p)
    this.watches.add(w)
    return w
  }

  unwatch (w: PurgeWatch): void { this.watches.delete(w) }

  /** Did a purge seen by `w` (from its `from`th on) name `e`? */
  purgedDuring (w: PurgeWatch, e: CacheEntry, from = 0): boolean {
    for (let i = from; i < w.seen.length; i++) if (purges(w.seen[i], e)) return true
    return false
  }

  /**
   * An entry read from L2 and kept in L1 too (undefined when L2 has none, or failed). An entry
   * a purge named while the read was in flight is returned but not kept: the read may have
   * beaten the purge's L2 part, and L1 would then keep what the purge removed.
   */
  async fromL2 (key: string): Promise<CacheEntry | undefined> {
    const l2 = this.l2
    return l2 === null ? undefined : await this.readL2(async () => await l2.get(key))
  }

  /** Run an L2 read (one or more commands) under a purge watch; its entry is kept in L1 as fromL2() says. */
  async readL2 (read: () => Promise<CacheEntry | undefined>): Promise<CacheEntry | undefined> {
    const w = this.watch()
    let e: CacheEntry | undefined
    try { e = await read() } finally { this.unwatch(w) }
    if (e !== undefined && !this.purgedDuring(w, e)) {
      this.l1.set(e, storeTtlMs(e, this.now()))
      this.gauges()
    }
    return e
  }

  /** Apply a purge or an invalidation (by base key) to L1. */
  purgeL1 (p: Purge): void {
    if ('base' in p) this.l1.deleteBase(p.base); else this.l1.purge(p)
  }

  /**
   * A newer response for `e`'s key could not be stored (too large): `e` goes from L1 and L2, as
   * a refused replacement does (MemoryStore.set), so it is not served in the newer one's place.
   * L2 has no single-variant delete: every variant of the URL goes there (they fill again),
   * logged as an invalidation is, so a fill racing on another replica does not put it back;
   * the other replicas drop their L1 copies when `onSuperseded` tells them (the purge bus).
   */
  dropSuperseded (e: CacheEntry): void {
    this.l1.delete(e.key)
    if (this.l2 !== null) this.track(this.l2.invalidate(e.base)) // errors are counted and logged by the store
    this.onSuperseded(e.base)
    this.gauges()
  }

  /** Set by the stage: tell the other replicas to drop `base` from their L1 (the purge bus). */
  onSuperseded: (base: string) => void = () => {}

  /** The L1 gauges (L2's are sampled on a timer by the stage). */
  gauges (): void {
    const s = this.l1.stats()
    this.metrics.cacheBytes.labels('memory').set(s.bytes)
    this.metrics.cacheEntries.labels('memory').set(s.entries)
  }
}
