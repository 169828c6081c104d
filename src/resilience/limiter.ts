// One named token bucket with its two homes: shared in Redis when a client is configured and
// answers, else a local bucket sized to this replica's share (rate and burst divided by
// expectedReplicas). The answer is synchronous whenever the local bucket decides; a promise
// says whether the shared store answered or the local bucket did (the store failed).
import { MemoryBucketStore } from './bucket-memory.js'
import { RedisUnavailableError, type RedisBucketStore } from './bucket-redis.js'
import { GIVE_BACK } from './bucket-store.js'
import type { RedisHealth } from './redis-health.js'

export interface BucketParams {
  requestsPerSecond: number
  burst: number
  expectedReplicas: number
}

/**
 * A store every replica (or every worker) shares: RedisBucketStore, or the cluster primary's
 * buckets (src/cluster/ipc-buckets.ts) for workers without Redis.
 */
export interface SharedBucketStore {
  readonly kind: 'redis' | 'primary'
  /** A command can be sent now. */
  readonly ready: boolean
  /** The connection was lost (not merely still opening). */
  readonly lost: boolean
  take (key: string, ratePerSecond: number, burst: number, maxWaitMs: number): Promise<number>
  ping (): Promise<unknown>
  /** A reload changed the rate or burst of a bucket (keyed: of every bucket under the name). */
  rescale? (name: string, keyed: boolean, old: { rate: number; burst: number }, ratePerSecond: number, burst: number): Promise<void>
}

export interface SharedStore {
  store: SharedBucketStore | RedisBucketStore
  health: RedisHealth
}

/** take()'s asynchronous answer: the result, and whether the local bucket gave it (the shared store failed). */
export interface SharedAnswer { r: number; local: boolean }

export class Limiter {
  private rate = 0
  private burst = 0
  /** What the local bucket enforces (this process's share), for the RateLimit-Policy it states. */
  localRate = 0
  localBurst = 0

  /**
   * `namespace` prefixes keys in Redis only (the local store is this limiter's own), so the
   * memory path builds no key string beyond the caller's. `keyed`: take() is given keys (a
   * per-client limit); otherwise only '' (an upstream budget: one bucket named `namespace`).
   */
  constructor (
    private readonly namespace: string,
    private readonly local: MemoryBucketStore,
    private readonly shared: SharedStore | null,
    params: BucketParams,
    private readonly keyed = true
  ) {
    this.update(params)
  }

  /**
   * New settings (a reload). Buckets that already exist take them at once, in the local store
   * and in the shared one (asynchronously, best effort): tokens clamped to the new burst, and
   * in Redis an expiry from the new rate. Left alone, a bucket kept what the old settings gave
   * it: a Redis key the expiry of the old rate (a drained bucket vanished, read as full, long
   * before a lowered rate refilled it), a local bucket the old rate its sweep judged it by.
   */
  update (p: BucketParams): void {
    const old = { rate: this.rate, burst: this.burst }
    const oldLocal = { rate: this.localRate, burst: this.localBurst }
    this.rate = p.requestsPerSecond
    this.burst = p.burst
    this.localRate = p.requestsPerSecond / p.expectedReplicas
    this.localBurst = Math.max(1, Math.floor(p.burst / p.expectedReplicas))
    if (oldLocal.rate !== 0 && (oldLocal.rate !== this.localRate || oldLocal.burst !== this.localBurst)) {
      this.local.rescale('', true, this.localRate, this.localBurst)
    }
    const sh = this.shared
    if (old.rate !== 0 && (old.rate !== this.rate || old.burst !== this.burst) && sh !== null && sh.health.up && sh.store.ready && sh.store.rescale !== undefined) {
      sh.store.rescale(this.namespace, this.keyed, old, this.rate, this.burst).then(undefined, (err: unknown) => {
        sh.health.failed('ratelimit', err)
      })
    }
  }

  get usingLocal (): boolean {
    return this.shared === null || !this.shared.health.up
  }

  /**
   * Take one token for `key` (see bucket-store.ts for the result). `rateFactor` (0..1] slows
   * the refill (adaptive budget). A Redis failure is answered by the local bucket, never thrown.
   * A number is always the local bucket's answer; a promise says which bucket answered.
   */
  take (key: string, maxWaitMs: number, rateFactor = 1): number | Promise<SharedAnswer> {
    const sh = this.shared
    if (sh === null || !sh.health.up) return this.local.take(key, this.localRate * rateFactor, this.localBurst, maxWaitMs)
    if (!sh.store.ready) {
      // Before the first connection is up, answer locally without calling it an outage;
      // a lost connection is one (logged once, counted, probed until Redis answers).
      if (sh.store.lost) sh.health.failed('ratelimit', new RedisUnavailableError('redis connection lost'))
      return this.local.take(key, this.localRate * rateFactor, this.localBurst, maxWaitMs)
    }
    return sh.store.take(this.namespace + key, this.rate * rateFactor, this.burst, maxWaitMs).then((r) => ({ r, local: false }), (err: unknown) => {
      sh.health.failed('ratelimit', err)
      return { r: this.local.take(key, this.localRate * rateFactor, this.localBurst, maxWaitMs), local: true }
    })
  }

  /**
   * Give back a token take() granted whose request will not be sent (it left while it waited):
   * to the bucket a take would use now. Best effort: a failed give-back only leaves the bucket
   * one token short, as before.
   */
  giveBack (key: string, rateFactor = 1): void {
    const sh = this.shared
    if (sh === null || !sh.health.up || !sh.store.ready) {
      this.local.take(key, this.localRate * rateFactor, this.localBurst, GIVE_BACK)
      return
    }
    sh.store.take(this.namespace + key, this.rate * rateFactor, this.burst, GIVE_BACK).then(undefined, () => {})
  }
}
