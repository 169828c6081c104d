// The seam between the upstream stage and resilience (budget, breaker, retries).
// src/resilience/guard.ts (class UpstreamGuard) is the implementation, one per upstream;
// the resilience registry is the GuardProvider.
import type { Headers } from '../types.js'

/** What the retry policy is told about a failed or answered attempt. */
export interface RetryContext {
  method: string
  /** The upstream's status, when it answered. */
  status?: number
  /** The attempt's error, when it failed without an answer (a SluiceError, or a raw undici/socket error). */
  error?: unknown
  /** The upstream's Retry-After header, if any. */
  retryAfter?: string | string[]
  /** false when the request body streamed (too big to buffer) and cannot be sent again. */
  bodyReplayable: boolean
  /** The route opts in to retrying non-idempotent methods. */
  routeAllowsNonIdempotent: boolean
  /** A byte of the response already went to the client: never retry then. */
  responseStarted?: boolean
  /** Time left before the exchange's deadline; a retry that cannot start before it is not made. */
  remainingMs?: number
}

/** What the upstream stage asks about one upstream. */
export interface UpstreamGuardPort {
  /** Take a budget token, waiting up to maxQueueMs; resolves with the wait in ms; throws SluiceError (429). */
  acquire (signal?: AbortSignal): number | Promise<number>
  /** Ask the breaker; throws SluiceError (503 SLUICE_ERR_CIRCUIT_OPEN) when open. */
  allow (): unknown
  record (ticket: unknown, outcome: { status?: number; error?: Error; unsent?: boolean }): void
  observeResponse (status: number, headers: Headers): void
  /** ms to wait before the next attempt, or null to stop. `attempt` counts from 1 (the first retry). */
  retryDelayMs (attempt: number, ctx: RetryContext): number | null
  /** A retry that retryDelayMs allowed is being sent now (sluice_upstream_retries_total). */
  retrySent (): void
}

export interface GuardProvider {
  upstream (name: string): UpstreamGuardPort
}
