// L1: an in-process cache bounded by total bytes (headers and bodies counted), evicting by
// CLOCK (second chance), an LRU approximation: Map insertion order is the queue; a hit only sets
// the entry's `used` bit (no Map delete and re-insert per hit); eviction takes from the front,
// and an entry whose bit is set gets it cleared and goes to the back instead of out.
import type { CacheEntry } from './entry.js'
import { entrySize, sizeWith } from './entry.js'
import { matches, type EntryStore, type FillLeases, type LeaseResult, type PurgeSelector } from './store.js'

interface Slot { e: CacheEntry; size: number; expires: number; used: boolean }
type Count = { inc (): void }
const UNCOUNTED: Count = { inc () {} }

/** Two Vary name lists (varyNames: lower case, sorted) are the same. */
function sameNames (a: readonly string[] | undefined, b: readonly string[]): boolean {
  return a !== undefined && a.length === b.length && a.every((n, i) => n === b[i])
}

export class MemoryStore implements EntryStore, FillLeases {
  private readonly slots = new Map<string, Slot>()
  private readonly vary = new Map<string, string[]>()
  /** Variant keys by base key: the key itself while there is one (most bases), a Set beyond. */
  private readonly byBase = new Map<string, string | Set<string>>()
  private readonly leases = new Map<string, { owner: string; waiting: number; expires: number }>()
  bytes = 0
  /**
   * Entries the store dropped by itself (sluice_cache_evictions_total{tier="memory"}, bound by
   * the cache stage): `size` evicted to make room, `expired` found expired (on lookup, or at
   * the front of the eviction queue). Replacements, deleteBase and purge are not counted.
   */
  dropped: { size: Count; expired: Count } = { size: UNCOUNTED, expired: UNCOUNTED }
  /**
   * Called when get() drops an expired entry (the stage refreshes the L1 gauges): the one change
   * of size no caller of get() would otherwise see. Never called on a hit.
   */
  onExpired: () => void = () => {}

  /** `now`: the clock expiry is read from (injectable for tests). */
  constructor (private maxBytes: number, private readonly maxEntryBytes: number, private readonly now: () => number = Date.now) {}

  get (key: string): CacheEntry | undefined {
    const s = this.slots.get(key)
    if (s === undefined) return undefined
    if (s.expires <= this.now()) { this.remove(key); this.dropped.expired.inc(); this.onExpired(); return undefined }
    s.used = true
    return s.e
  }

  getVary (base: string): string[] | undefined {
    return this.vary.get(base)
  }

  /** Accepts an entry if it fits; returns false when its body is larger than maxEntryBytes or the entry than the cache. */
  set (e: CacheEntry, ttlMs: number): boolean {
    // The key's old entry goes even when the new one is refused: the response that superseded
    // it is the current one, and serving the old in its place (for its whole stale window) is wrong.
    this.remove(e.key)
    // The Vary record is the complete response's: lookups of the complete entry compute their
    // variant key from it (and a part's from the same key, partialKey). A part (206) whose Vary
    // differs must not replace it, or the complete entry is missed (or another variant is
    // served); a part only sets the record while no complete entry of the base is stored. Such
    // a part would be stored under a key no lookup computes, costing memory until it expired:
    // it is not stored.
    if (e.range !== undefined && this.refusesPart(e.base, e.varyNames)) return false
    // maxEntryBytes bounds the body, the measure the fill collects it by (fill.ts): a response
    // within it is stored. The whole entry, bookkeeping included, counts against maxBytes.
    if (e.body.length > this.maxEntryBytes || ttlMs <= 0 || sizeWith(e, undefined, undefined) > this.maxBytes) return false
    const size = this.fit(e)
    // Room first, then the insert: evicting after it could take the new entry itself (when
    // every other one is marked used) while set() reports it stored.
    this.evict(size)
    this.slots.set(e.key, { e, size, expires: this.now() + ttlMs, used: false })
    this.bytes += size
    const had = this.byBase.get(e.base)
    if (e.range === undefined || !this.hasComplete(had)) this.vary.set(e.base, e.varyNames)
    if (had === undefined) this.byBase.set(e.base, e.key)
    else if (typeof had === 'string') { if (had !== e.key) this.byBase.set(e.base, new Set([had, e.key])) } else had.add(e.key)
    return true
  }

  /**
   * Would set() refuse a part (206) of `base` with these Vary names? While a complete entry of
   * the base is stored, the Vary record is its own, and such a part's key is one no lookup
   * computes. Asked from the part's headers too (partial.ts), so that its Cache-Status does not
   * say `stored` of a part that will not be.
   */
  refusesPart (base: string, names: readonly string[]): boolean {
    return this.hasComplete(this.byBase.get(base)) && !sameNames(this.vary.get(base), names)
  }

  /** Is one of these variant keys (byBase's) a complete entry's, not a part's? */
  private hasComplete (had: string | Set<string> | undefined): boolean {
    if (had === undefined) return false
    for (const k of typeof had === 'string' ? [had] : had) { const s = this.slots.get(k); if (s !== undefined && s.e.range === undefined) return true }
    return false
  }

  /** Account for bytes added to a stored entry (encoded variants made after the store). */
  grew (key: string): void {
    const s = this.slots.get(key)
    if (!s) return
    // Copies that take the entry past either bound are dropped (fit), rather than the rest of
    // the cache evicted for them; room for what is left is made as for an insert, with the
    // grown entry out of the eviction pass (and then at the back of the queue, as a new one).
    const size = this.fit(s.e)
    if (size > this.maxBytes) { this.remove(key); this.dropped.size.inc(); return } // maxBytes lowered since it was stored
    this.slots.delete(key)
    this.bytes -= s.size
    this.evict(size)
    s.size = size
    this.slots.set(key, s)
    this.bytes += size
  }

  /**
   * Drop the encoded copies of `e` that do not fit, the larger first, and return its size then:
   * its bodies together stay within maxEntryBytes, and the entry within maxBytes. Copies are
   * an optimisation (a hit without them gets identity), so they give way, not the entry.
   */
  private fit (e: CacheEntry): number {
    let { gzip, br } = e
    while ((gzip !== undefined || br !== undefined) &&
        (e.body.length + (gzip?.length ?? 0) + (br?.length ?? 0) > this.maxEntryBytes || sizeWith(e, gzip, br) > this.maxBytes)) {
      if (br === undefined || (gzip !== undefined && gzip.length >= br.length)) gzip = undefined
      else br = undefined
    }
    if (gzip !== e.gzip || br !== e.br) {
      e.gzip = gzip
      e.br = br
      e.out = undefined // each coding's headers name the others (Vary, ETag)
    }
    return entrySize(e)
  }

  setMaxBytes (n: number): void { this.maxBytes = n; this.evict() }

  /** The configured byte bound (sluice_cache_max_bytes). */
  get capacity (): number { return this.maxBytes }

  /** Evict until `room` more bytes fit within maxBytes. */
  private evict (room = 0): void {
    let now = -1
    while (this.bytes + room > this.maxBytes && this.slots.size > 0) {
      const [oldest, s] = this.slots.entries().next().value as [string, Slot]
      if (now === -1) now = this.now()
      // Expiry first: an expired entry can only be dropped on its next lookup, so a hit it had
      // while fresh must not keep it resident ahead of fresh entries.
      if (s.expires <= now) {
        this.dropped.expired.inc()
        this.remove(oldest)
      } else if (s.used) {
        // Second chance: used since it last reached the front; to the back, unmarked.
        s.used = false
        this.slots.delete(oldest)
        this.slots.set(oldest, s)
      } else {
        this.dropped.size.inc()
        this.remove(oldest)
      }
    }
  }

  /** Drop the entry stored under `key` (a newer response for it that could not be stored). */
  delete (key: string): boolean { return this.remove(key) }

  private remove (key: string): boolean {
    const s = this.slots.get(key)
    if (!s) return false
    this.slots.delete(key)
    this.bytes -= s.size
    const base = s.e.base
    const had = this.byBase.get(base)
    if (had !== undefined) {
      if (typeof had === 'string') { if (had === key) { this.byBase.delete(base); this.vary.delete(base) } } else {
        had.delete(key)
        if (had.size === 1) this.byBase.set(base, had.values().next().value as string)
      }
    }
    return true
  }

  deleteBase (base: string): number {
    const had = this.byBase.get(base)
    if (had === undefined) return 0
    let n = 0
    for (const k of typeof had === 'string' ? [had] : [...had]) if (this.remove(k)) n++
    this.vary.delete(base)
    return n
  }

  purge (sel: PurgeSelector): number {
    let n = 0
    for (const [k, s] of this.slots) if (matches(s.e, sel) && this.remove(k)) n++
    return n
  }

  stats (): { entries: number; bytes: number } {
    return { entries: this.slots.size, bytes: this.bytes }
  }

  /** Fill leases within this process (the same contract as Redis's, for the conformance suite). */
  async lease (key: string, owner: string, ttlMs: number, check: boolean): Promise<LeaseResult> {
    const now = this.now()
    if (check && this.slots.has(key) && this.slots.get(key)!.expires > now) return 'filled'
    const l = this.leases.get(key)
    if (l === undefined || l.expires <= now) {
      this.leases.set(key, { owner, waiting: 0, expires: now + Math.max(1, Math.ceil(ttlMs)) })
      return 'acquired'
    }
    l.waiting++
    return 'held'
  }

  async release (key: string, owner: string): Promise<number> {
    const l = this.leases.get(key)
    if (l === undefined || l.owner !== owner || l.expires <= this.now()) return -1
    this.leases.delete(key)
    return l.waiting
  }
}
