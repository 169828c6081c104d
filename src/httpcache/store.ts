// The cache stores behind one small interface: the in-process L1 (memory.ts) and the shared L2
// (redis-store.ts) pass the same conformance suite (test/cache/store-suite.ts), fill leases
// included.
import type { CacheEntry } from './entry.js'

export interface PurgeSelector { key?: string; prefix?: string; tag?: string }
/** What a purge names: a selector, or every variant of one base key (an unsafe-method invalidation). */
export type Purge = PurgeSelector | { base: string }

export interface EntryStore {
  /** The entry stored under a variant key. */
  get (key: string): CacheEntry | undefined | Promise<CacheEntry | undefined>
  /** The Vary header names last seen for a base key (empty when the response had no Vary). */
  getVary (base: string): string[] | undefined | Promise<string[] | undefined>
  set (entry: CacheEntry, ttlMs: number): boolean | void | Promise<void>
  /** Remove every variant of a base key (unsafe-method invalidation). */
  deleteBase (base: string): number | Promise<number>
  purge (sel: PurgeSelector): number | Promise<number>
  stats (): { entries: number; bytes: number } | Promise<{ entries: number; bytes: number }>
}

/**
 * Fill leases: one filler per key at a time (miss coalescing across replicas). `check` (a pure
 * miss) first looks for an entry stored since the caller's lookup: 'filled'. Otherwise the lease
 * is taken ('acquired', for ttlMs) or another owner holds it ('held': that owner now knows one
 * more caller waits). 'error': the store failed (the caller coalesces in-process only).
 */
export type LeaseResult = 'acquired' | 'held' | 'filled' | 'error'
export interface FillLeases {
  lease (key: string, owner: string, ttlMs: number, check: boolean): Promise<LeaseResult>
  /** Give a lease back: how many callers waited for it, or -1 when it was no longer `owner`'s. */
  release (key: string, owner: string): Promise<number>
}

/** The L2 the cache stage takes: entries, leases, and a bounded-cost size sample for the gauges. */
/** How long a purge stays in the shared purge log: longer than any fill, its encode and its L2 write take. */
export const PURGE_LOG_MS = 3_600_000

/** A purge read from the purge log; `gap`: it stands for purges the log no longer holds (purgedSince). */
export interface PurgeLogRead { sel: Purge; at: number; gap?: true }

export interface SharedEntryStore extends EntryStore, FillLeases {
  /** The size of the last completed sampling pass (null before one ends, or on error); bounded work per call. */
  sampleStats (): Promise<{ entries: number; bytes: number } | null>
  /**
   * deleteBase for an unsafe-method invalidation: the invalidation is written to the purge log
   * first, as a purge is, so another replica's fill that lands after the deletes finds it.
   */
  invalidate (base: string): Promise<number>
  /**
   * The purges (by key, prefix or tag) and invalidations (by base key) other replicas ran since
   * `since` (ms since the epoch, by their clocks), or null when the log could not be read. A
   * replica whose fill began before such a purge, and whose L2 write landed after the purge's
   * L2 part, asks this after the write: the purge's message may not have reached it yet
   * (EntryWriter.store). While Redis is marked down the answer is [] (the write was skipped
   * too), unless `evenIfDown`: then the log is read anyway, and null if that fails (the
   * catch-up after a resubscribe must not take "down" for "no purges").
   * When the log cannot show it still holds every purge since `since` (it is at its cap and its
   * oldest entry is not older than `since`: purges of the gap were trimmed), the list starts with
   * a purge of everything (`{ prefix: '' }`, at `since`) marked `gap`.
   */
  purgedSince (since: number, evenIfDown?: boolean): Promise<PurgeLogRead[] | null>
  /**
   * Another replica's purge, heard now on the purge bus. A tag set lists a bounded number of
   * entries, so a purge by tag may leave some in L2: the store remembers when each tag was last
   * purged (this, its own purges, the purge log it reads, and a record in Redis), and a get()
   * of an entry carrying a tag purged after its fill began is a miss, and deletes it.
   */
  notePurge (p: Purge): void
}

/** Does a stored path match a purge selector? `key` is an exact path (and query); `prefix` a path prefix. */
export function matches (e: { path: string; tags: readonly string[] }, sel: PurgeSelector): boolean {
  if (sel.key !== undefined) return e.path === sel.key
  if (sel.prefix !== undefined) return e.path.startsWith(sel.prefix)
  if (sel.tag !== undefined) return e.tags.includes(sel.tag)
  return false
}
