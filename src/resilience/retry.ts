// When to retry an attempt toward an upstream, and after how long.
// - Only idempotent methods (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE), unless
//   the route opts in.
// - Only when the body can be sent again (none, or buffered up to retry.maxBufferBytes), and
//   never once a response byte has reached the client.
// - On failures before any response byte (connect refused, reset, DNS, connect timeout: see
//   isRetryableError in src/upstream/errors.ts), and on retry.statuses.
// - Backoff: exponential with full jitter, capped at maxBackoffMs; a Retry-After is honoured,
//   and one longer than maxBackoffMs means "not now": no retry.
// - A retry budget: retries in a 10 s window stay within budgetPercent of first attempts
//   (plus budgetMinRetries), so a failing upstream sees at most ~20% more, never a storm.
import type { RetryConfig } from './config.js'
import type { RetryContext } from '../upstream/guard.js'
import { isRetryableError } from '../upstream/errors.js'
import { IDEMPOTENT } from '../upstream/methods.js'
import { parseRetryAfter } from './headers.js'

const SLOTS = 10
const SLOT_MS = 1000

/** Counts of first attempts and retries over a rolling 10 s window (ten 1 s slots). */
class RetryBudget {
  private readonly requests = new Array<number>(SLOTS).fill(0)
  private readonly retries = new Array<number>(SLOTS).fill(0)
  private epoch = 0 // index of the current slot, in slots since the Unix epoch

  private rotate (now: number): number {
    const e = Math.floor(now / SLOT_MS)
    if (e !== this.epoch) {
      const gap = Math.min(SLOTS, e - this.epoch)
      for (let i = 1; i <= gap; i++) {
        const j = (this.epoch + i) % SLOTS
        this.requests[j] = 0
        this.retries[j] = 0
      }
      this.epoch = e
    }
    return e % SLOTS
  }

  attempt (now: number): void { this.requests[this.rotate(now)]++ }

  /** Take one retry from the budget if it has room. */
  tryRetry (now: number, percent: number, min: number): boolean {
    const i = this.rotate(now)
    let req = 0
    let ret = 0
    for (let k = 0; k < SLOTS; k++) { req += this.requests[k]; ret += this.retries[k] }
    // Every attempt (retries too) is counted in `requests`; first attempts are the rest.
    const firsts = Math.max(0, req - ret)
    if (ret + 1 > min && ret + 1 > firsts * percent / 100) return false
    this.retries[i]++
    return true
  }

  totals (now: number) {
    this.rotate(now)
    let req = 0
    let ret = 0
    for (let k = 0; k < SLOTS; k++) { req += this.requests[k]; ret += this.retries[k] }
    return { windowAttempts: req, windowRetries: ret }
  }
}

export class RetryPolicy {
  private cfg: RetryConfig
  private statuses: Set<number>
  private readonly budget = new RetryBudget()

  constructor (cfg: RetryConfig, private readonly onRetry: () => void = () => {}, private readonly random: () => number = Math.random) {
    this.cfg = cfg
    this.statuses = new Set(cfg.statuses)
  }

  configure (cfg: RetryConfig): void {
    this.cfg = cfg
    this.statuses = new Set(cfg.statuses)
  }

  /** Count an attempt sent to the upstream (the budget's base). */
  noteAttempt (): void { this.budget.attempt(Date.now()) }

  /**
   * A retry went out to the upstream: counted in sluice_upstream_retries_total. Called by the
   * upstream stage when the retry is sent, not when delayMs schedules it: a retry that is then
   * never sent (the client left during the backoff, the budget or the breaker refused it, the
   * deadline passed, no target was in rotation) is not a retry the upstream saw.
   */
  noteRetrySent (): void { this.onRetry() }

  /**
   * The delay before retry number `attempt` (1 = the first retry), or null for "do not retry".
   * A number commits the retry: it is taken from the retry budget. It is counted in
   * sluice_upstream_retries_total only once sent (noteRetrySent).
   */
  delayMs (attempt: number, ctx: RetryContext): number | null {
    const cfg = this.cfg
    if (attempt < 1 || attempt > cfg.attempts) return null
    if (ctx.responseStarted === true || !ctx.bodyReplayable) return null
    if (!ctx.routeAllowsNonIdempotent && !IDEMPOTENT.has(ctx.method)) return null
    if (ctx.error !== undefined && ctx.error !== null) {
      if (!isRetryableError(ctx.error)) return null
    } else if (ctx.status === undefined || !this.statuses.has(ctx.status)) {
      return null
    }
    const cap = Math.min(cfg.maxBackoffMs, cfg.backoffMs * 2 ** (attempt - 1))
    let delay = Math.floor(this.random() * (cap + 1))
    const ra = ctx.retryAfter === undefined ? null : parseRetryAfter(ctx.retryAfter)
    if (ra !== null) {
      if (ra > cfg.maxBackoffMs) return null
      if (ra > delay) delay = ra
    }
    if (ctx.remainingMs !== undefined && delay >= ctx.remainingMs) return null
    if (!this.budget.tryRetry(Date.now(), cfg.budgetPercent, cfg.budgetMinRetries)) return null
    return delay
  }

  status () {
    return { maxAttempts: this.cfg.attempts, ...this.budget.totals(Date.now()) }
  }
}
