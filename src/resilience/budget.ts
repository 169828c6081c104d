// The upstream budget: a token bucket that only requests reaching the upstream take from
// (the pipeline calls acquire() on a cache miss, once per attempt), a bounded FIFO wait of at
// most maxQueueMs (a reservation in the bucket, so the order is the order of arrival, across
// replicas too), and an adaptive part that listens to the upstream: its Retry-After on
// 429/503 or RateLimit fields saying "exhausted" pause the budget until then; a bare 429
// halves the rate, which climbs back over RECOVERY_MS.
import { performance } from 'node:perf_hooks'
import { SluiceError } from '../errors.js'
import type { Metrics } from '../observability/metrics.js'
import type { Headers } from '../types.js'
import type { UpstreamRateLimitConfig } from './config.js'
import { exhaustedForMs, parseRetryAfter, policyField, rejectionHeaders } from './headers.js'
import type { Limiter } from './limiter.js'
import { sleep } from './sleep.js'

const RECOVERY_MS = 10_000
/**
 * The pause and the adaptive recovery run on the monotonic clock: on Date.now an NTP step back
 * stretched a pause by the step (every request 429 with a Retry-After of the step) and sent
 * the rate factor below its floor, negative even.
 */
const now = (): number => performance.now()
const MIN_FACTOR = 0.1
/**
 * A pause with less than this left is over: timers fire on the event loop's millisecond clock,
 * which may run up to a millisecond ahead of performance.now(), so a request sent the moment a
 * waiter's timer ended the pause otherwise found a fraction of a millisecond left and slept
 * again (seen on Node 22).
 */
const TIMER_MS = 1

export interface BudgetStatus {
  configured: boolean
  requestsPerSecond?: number
  burst?: number
  maxQueueMs?: number
  /** true when this replica decides alone (no Redis, or Redis down). */
  local: boolean
  /** ms left of a pause the upstream asked for (0 when none). */
  pausedForMs: number
  /** Share of the configured rate in use (adaptive slow-down), 0.1..1. */
  rateFactor: number
}

export class UpstreamBudget {
  private cfg: UpstreamRateLimitConfig | null = null
  private policy = ''
  /** The policy the local bucket enforces (this replica's share: no Redis, or Redis down). */
  private localPolicy = ''
  private pausedUntil = 0
  private factor0 = 1
  private decreasedAt = 0
  private readonly rejected: { inc(): void }
  private readonly queueWait: { observe(v: number): void }

  constructor (readonly name: string, metrics: Metrics, private limiter: Limiter | null, cfg: UpstreamRateLimitConfig | null) {
    const label = metrics.upstreamLabel(name) // bounded label values (metrics.ts LabelGuard)
    this.rejected = metrics.rateLimited.labels('upstream', label)
    this.queueWait = metrics.upstreamQueueWait.labels(label)
    this.configure(limiter, cfg)
  }

  configure (limiter: Limiter | null, cfg: UpstreamRateLimitConfig | null): void {
    this.limiter = limiter
    this.cfg = cfg
    if (cfg) this.policy = policyField('upstream', cfg.requestsPerSecond, cfg.burst)
    if (cfg && limiter) this.localPolicy = policyField('upstream', limiter.localRate, limiter.localBurst)
  }

  /**
   * Take a token, waiting up to maxQueueMs; resolves with the wait in ms. Synchronous (0)
   * when no budget is configured or a token is at hand in memory. Throws (or rejects with)
   * SLUICE_ERR_UPSTREAM_BUDGET carrying Retry-After and the RateLimit fields; rejects with
   * the signal's reason when aborted while waiting (a token it had reserved is given back).
   */
  acquire (signal?: AbortSignal): number | Promise<number> {
    const cfg = this.cfg
    if (cfg === null || this.limiter === null) return 0
    const pause = this.pausedUntil - now()
    if (pause >= TIMER_MS) {
      if (pause > cfg.maxQueueMs) throw this.reject(pause, this.limiter.usingLocal)
      return sleep(pause, signal).then(() => this.take(pause, cfg.maxQueueMs - pause, signal))
    }
    return this.take(0, cfg.maxQueueMs, signal)
  }

  private take (waited: number, maxWaitMs: number, signal?: AbortSignal): number | Promise<number> {
    const r = (this.limiter as Limiter).take('', maxWaitMs, this.rateFactor())
    if (typeof r === 'number') return this.settle(r, waited, signal, true)
    return r.then((v) => this.settle(v.r, waited, signal, v.local))
  }

  /** `local`: the local bucket answered (a rejection states the policy it enforces). */
  private settle (r: number, waited: number, signal?: AbortSignal, local = false): number | Promise<number> {
    if (r < 0) throw this.reject(-r, local)
    if (r === 0) {
      this.queueWait.observe(waited / 1000)
      return waited
    }
    return sleep(r, signal).then(() => this.afterWait(waited + r, signal), (err: unknown) => this.unreserved(err))
  }

  /** A request that reserved a token and will not be sent: the token goes back, `err` on. */
  private unreserved (err: unknown): never {
    this.limiter?.giveBack('', this.rateFactor())
    throw err
  }

  /**
   * A request that waited its turn: an upstream 429/503 that paused the budget meanwhile holds
   * it too (it is not sent into the pause), within what is left of maxQueueMs.
   */
  private afterWait (waited: number, signal?: AbortSignal): number | Promise<number> {
    const pause = this.pausedUntil - now()
    const cfg = this.cfg
    if (pause >= TIMER_MS && cfg !== null) {
      if (waited + pause > cfg.maxQueueMs) this.unreserved(this.reject(pause, this.limiter?.usingLocal))
      return sleep(pause, signal).then(() => this.afterWait(waited + pause, signal), (err: unknown) => this.unreserved(err))
    }
    this.queueWait.observe(waited / 1000)
    return waited
  }

  /**
   * `local`: the local bucket decided (no Redis, or Redis down), so the policy said is the share
   * it enforces (for a pause the upstream asked for: the bucket a take would use now).
   */
  private reject (retryMs: number, local = false): SluiceError {
    this.rejected.inc()
    return new SluiceError('SLUICE_ERR_UPSTREAM_BUDGET', undefined, { headers: rejectionHeaders('upstream', local ? this.localPolicy : this.policy, retryMs) })
  }

  private rateFactor (): number {
    if (this.factor0 >= 1) return 1
    const f = this.factor0 + (now() - this.decreasedAt) / RECOVERY_MS
    if (f >= 1) { this.factor0 = 1; return 1 }
    return f
  }

  /** Listen to the upstream's answer (every response, retries included). */
  observeResponse (status: number, headers: Headers): void {
    const cfg = this.cfg
    if (cfg === null || !cfg.adaptive) return
    let pauseMs: number | null = null
    if (status === 429 || status === 503) pauseMs = parseRetryAfter(headers['retry-after'])
    if (pauseMs === null && (status === 429 || headers.ratelimit !== undefined || headers['ratelimit-remaining'] !== undefined || headers['x-ratelimit-remaining'] !== undefined)) {
      pauseMs = exhaustedForMs(headers)
    }
    if (pauseMs !== null && pauseMs > 0) {
      const until = now() + Math.min(pauseMs, cfg.maxPauseMs)
      if (until > this.pausedUntil) this.pausedUntil = until
      return
    }
    if (status === 429) {
      this.factor0 = Math.max(MIN_FACTOR, this.rateFactor() / 2)
      this.decreasedAt = now()
    }
  }

  status (): BudgetStatus {
    const cfg = this.cfg
    const pausedForMs = Math.max(0, this.pausedUntil - now())
    if (cfg === null || this.limiter === null) return { configured: false, local: true, pausedForMs: 0, rateFactor: 1 }
    return {
      configured: true,
      requestsPerSecond: cfg.requestsPerSecond,
      burst: cfg.burst,
      maxQueueMs: cfg.maxQueueMs,
      local: this.limiter.usingLocal,
      pausedForMs,
      rateFactor: Math.round(this.rateFactor() * 100) / 100
    }
  }
}
