// The seam between the upstream stage and resilience (budget, breaker, retries).
// src/resilience provides the real implementation; `basicGuards` is the fallback used when
// no resilience registry is wired: no budget, no breaker, retries as configured.
import type { Headers } from '../types.js'
import type { UpstreamEntry } from '../config/compile.js'
import type { SluiceError } from '../errors.js'

export interface RetryContext {
  method: string
  status?: number
  error?: SluiceError
  retryAfter?: string
  bodyReplayable: boolean
  routeAllowsNonIdempotent: boolean
  /** Time left before the route's deadline: a retry that cannot fit is not taken. */
  remainingMs?: number
  responseStarted?: boolean
}

export interface UpstreamGuard {
  /** Take a budget token, waiting up to maxQueueMs; resolves with the wait in ms; throws SluiceError (429). */
  acquire (signal?: AbortSignal): number | Promise<number>
  /** Ask the breaker; throws SluiceError (503 SLUICE_ERR_CIRCUIT_OPEN) when open. */
  allow (): unknown
  record (ticket: unknown, outcome: { status?: number; error?: Error }): void
  observeResponse (status: number, headers: Headers): void
  /** ms to wait before the next attempt, or null to stop. `attempt` counts from 1 (the first retry). */
  retryDelayMs (attempt: number, ctx: RetryContext): number | null
}

export interface GuardProvider {
  upstream (name: string): UpstreamGuard
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'])
const RETRY_STATUSES = new Set([502, 503, 504])

/** Exponential backoff with full jitter, capped. */
export function fullJitter (attempt: number, baseMs: number, capMs: number): number {
  return Math.random() * Math.min(capMs, baseMs * 2 ** (attempt - 1))
}

export function basicGuards (upstreams: () => Readonly<Record<string, UpstreamEntry>>): GuardProvider {
  const cache = new Map<string, UpstreamGuard>()
  return {
    upstream (name) {
      let g = cache.get(name)
      if (g) return g
      g = {
        acquire: () => 0,
        allow: () => null,
        record: () => {},
        observeResponse: () => {},
        retryDelayMs (attempt, ctx) {
          const r = upstreams()[name]?.config.retry
          if (!r || attempt > r.attempts || !ctx.bodyReplayable) return null
          if (!IDEMPOTENT.has(ctx.method) && !ctx.routeAllowsNonIdempotent) return null
          if (ctx.status !== undefined && !RETRY_STATUSES.has(ctx.status)) return null
          const d = fullJitter(attempt, r.backoffMs, r.maxBackoffMs)
          return ctx.remainingMs !== undefined && d >= ctx.remainingMs ? null : d
        }
      }
      cache.set(name, g)
      return g
    }
  }
}
