// Everything the upstream stage asks about one upstream, in one object that outlives
// reloads: its budget (acquire, observeResponse), its breaker (allow, record) and its
// retry policy (retryDelayMs). See registry.ts for how it is created and kept.
// It is the implementation of the upstream stage's seam, UpstreamGuardPort (src/upstream/guard.ts).
import type { Headers } from '../types.js'
import type { RetryContext, UpstreamGuardPort } from '../upstream/guard.js'
import type { UpstreamBudget } from './budget.js'
import type { Breaker, Outcome, Ticket } from './breaker.js'
import type { RetryPolicy } from './retry.js'

export class UpstreamGuard implements UpstreamGuardPort {
  constructor (
    readonly name: string,
    readonly budget: UpstreamBudget,
    readonly breaker: Breaker,
    readonly retry: RetryPolicy
  ) {}

  /**
   * See UpstreamBudget.acquire: take a budget token (maybe waiting); throws 429 SLUICE_ERR_UPSTREAM_BUDGET.
   * A breaker that would refuse the attempt refuses it first (503 SLUICE_ERR_CIRCUIT_OPEN):
   * a request that cannot reach the upstream takes no token from its (shared) budget.
   */
  acquire (signal?: AbortSignal): number | Promise<number> {
    const refused = this.breaker.refusal()
    if (refused !== null) throw refused
    return this.budget.acquire(signal)
  }

  /** Admit one attempt through the breaker; throws 503 SLUICE_ERR_CIRCUIT_OPEN with Retry-After. */
  allow (): Ticket {
    const t = this.breaker.allow()
    this.retry.noteAttempt()
    return t
  }

  /** How the attempt ended: { status } when the upstream answered, { error } when it did not. */
  record (ticket: Ticket, outcome: Outcome): void {
    this.breaker.record(ticket, outcome)
  }

  /** Feed every upstream response (retries included) to the adaptive budget. */
  observeResponse (status: number, headers: Headers): void {
    this.budget.observeResponse(status, headers)
  }

  /** Delay before retry number `attempt` (1-based), or null for no retry; a number commits the retry. */
  retryDelayMs (attempt: number, ctx: RetryContext): number | null {
    return this.retry.delayMs(attempt, ctx)
  }

  /** A retry is being sent: counted in sluice_upstream_retries_total (not when it was scheduled). */
  retrySent (): void {
    this.retry.noteRetrySent()
  }

  status () {
    return {
      name: this.name,
      breaker: this.breaker.status(),
      budget: this.budget.status(),
      retry: this.retry.status()
    }
  }
}
