// In-process token buckets. Synchronous and allocation-free per take (one small object per
// key, reused), so a per-client limit in memory stays far under the 0.5 ms p99 target.
import { performance } from 'node:perf_hooks'
import { GIVE_BACK, type BucketStore } from './bucket-store.js'

/** `ref`: taken again since the store last looked for a key to evict (CLOCK's reference bit). */
interface Slot { tokens: number; ts: number; rate: number; burst: number; ref: boolean }

/** A bucket's tokens at `now`: what it held, plus the refill since, at most `burst`. */
function refilled (s: Slot, now: number, ratePerSecond: number, burst: number): number {
  const tokens = s.tokens + (now > s.ts ? now - s.ts : 0) * ratePerSecond / 1000
  return tokens > burst ? burst : tokens
}

export interface MemoryBucketOptions {
  /** Keys held before idle (refilled) buckets are swept; beyond maxKeys the oldest go. */
  sweepAbove?: number
  maxKeys?: number
  /** Monotonic milliseconds (tests may inject a clock). */
  now?: () => number
}

export class MemoryBucketStore implements BucketStore {
  readonly kind = 'memory' as const
  private readonly slots = new Map<string, Slot>()
  private readonly sweepAbove: number
  private readonly maxKeys: number
  private readonly now: () => number
  private lastSweep = 0

  constructor (opts: MemoryBucketOptions = {}) {
    this.sweepAbove = opts.sweepAbove ?? 10_000
    this.maxKeys = opts.maxKeys ?? 100_000
    this.now = opts.now ?? (() => performance.now())
  }

  get size (): number { return this.slots.size }

  take (key: string, ratePerSecond: number, burst: number, maxWaitMs: number): number {
    const now = this.now()
    let s = this.slots.get(key)
    if (maxWaitMs === GIVE_BACK) {
      // A bucket gone (swept or evicted) was full: nothing to give back to.
      if (s !== undefined) {
        const tokens = refilled(s, now, ratePerSecond, burst) + 1
        s.tokens = tokens > burst ? burst : tokens
        s.ts = now
      }
      return 0
    }
    let tokens: number
    if (s === undefined) {
      tokens = burst
      s = { tokens, ts: now, rate: ratePerSecond, burst, ref: false }
      // At most one sweep a second, whatever the size: a flood of new keys must not make every
      // request O(n). Past maxKeys, one key goes per new one, in constant time (evictOne).
      if (this.slots.size >= this.sweepAbove && now - this.lastSweep >= 1000) this.sweep(now)
      if (this.slots.size >= this.maxKeys) this.evictOne()
      this.slots.set(key, s)
    } else {
      tokens = refilled(s, now, ratePerSecond, burst)
      s.rate = ratePerSecond
      s.burst = burst
      s.ref = true
    }
    const wait = tokens >= 1 ? 0 : (1 - tokens) * 1000 / ratePerSecond
    if (wait > maxWaitMs) {
      s.tokens = tokens
      s.ts = now
      const r = Math.ceil(wait - maxWaitMs)
      return r < 1 ? -1 : -r
    }
    s.tokens = tokens - 1
    s.ts = now
    return Math.ceil(wait)
  }

  /** Drop buckets that have refilled: they are indistinguishable from absent ones. */
  private sweep (now: number): void {
    this.lastSweep = now
    for (const [k, s] of this.slots) {
      if (s.tokens + (now - s.ts) * s.rate / 1000 >= s.burst) this.slots.delete(k)
    }
  }

  /**
   * Make room for one key when the store is full of buckets that have not refilled (CLOCK):
   * the oldest goes, except that a bucket taken again since the last look is moved to the back
   * with its mark cleared (up to 8 of them), so the buckets of clients and budgets in use keep
   * their state while a flood of one-off keys pushes out its own.
   */
  private evictOne (): void {
    let chances = 8
    for (;;) {
      // One iterator across calls: a new one per call would step again over every entry
      // deleted from the Map's front so far (V8 keeps them until it rehashes), and each new
      // key in a flood of distinct keys cost more than the one before.
      if (this.cursor === null) this.cursor = this.slots.entries()
      const n = this.cursor.next()
      if (n.done === true) {
        this.cursor = null
        if (this.slots.size === 0) return
        continue
      }
      const [k, s] = n.value
      this.slots.delete(k)
      if (chances-- > 0 && s.ref) { s.ref = false; this.slots.set(k, s); continue }
      return
    }
  }

  private cursor: IterableIterator<[string, Slot]> | null = null

  /**
   * A reload changed the rate or burst of the buckets named `name` (keyed: every key that
   * starts with it): each is brought to now at the rate it had, clamped to the new burst, and
   * takes the new rate and burst, so that a sweep judges it by them (by the old rate, a lowered
   * one, it dropped buckets the new rate had not refilled: a fresh full bucket on the next take).
   */
  rescale (name: string, keyed: boolean, ratePerSecond: number, burst: number): void {
    const now = this.now()
    const one = (s: Slot): void => {
      const t = refilled(s, now, s.rate, s.burst)
      s.tokens = t > burst ? burst : t
      s.ts = now
      s.rate = ratePerSecond
      s.burst = burst
    }
    if (!keyed) {
      const s = this.slots.get(name)
      if (s !== undefined) one(s)
      return
    }
    for (const [k, s] of this.slots) if (k.startsWith(name)) one(s)
  }

  delete (key: string): void { this.slots.delete(key) }
  clear (): void { this.slots.clear() }
}
