// Config schemas of the resilience stages: upstream budgets, circuit breakers, retries, client limits.
// The keys shown in the README's configuration example are a fixed interface; the others are
// additions with defaults, so an
// existing config file keeps its meaning.
import { Type, type Static } from '@sinclair/typebox'
import { Strict, Ms, Bool, Bytes } from '../config/types-helpers.js'

const Replicas = () => Type.Integer({
  minimum: 1,
  default: 1,
  description: 'Processes expected to share this limit (replicas × workers); while Redis is absent or down each process (each worker with `workers`) enforces rate / expectedReplicas on its own (with a burst of at least 1, so a burst below expectedReplicas is exceeded)'
})

export const UpstreamRateLimitSchema = Strict({
  requestsPerSecond: Type.Number({ exclusiveMinimum: 0, description: 'Sustained rate of requests that may reach the upstream (all replicas together)' }),
  burst: Type.Integer({ minimum: 1, description: 'Bucket size: requests allowed at once' }),
  maxQueueMs: Ms(0, 'How long a request may wait for a token before it gets 429'),
  expectedReplicas: Replicas(),
  adaptive: Bool(true, 'Pause the budget when the upstream answers 429/503 with Retry-After or RateLimit fields saying it is exhausted, and halve the rate on a 429 without them (it recovers over 10 s)'),
  maxPauseMs: Ms(60000, 'Longest pause an upstream\'s Retry-After or RateLimit reset can impose')
}, { description: 'Outbound budget toward the upstream (token bucket, shared through Redis)' })
export type UpstreamRateLimitConfig = Static<typeof UpstreamRateLimitSchema>

export const CircuitBreakerSchema = Strict({
  enabled: Bool(true, 'Run a circuit breaker for this upstream'),
  errorThresholdPercent: Type.Number({ minimum: 1, maximum: 100, default: 50, description: 'Error percentage in the window that opens the breaker' }),
  volumeThreshold: Type.Integer({ minimum: 1, default: 20, description: 'Requests in the window before the breaker may open (so one failure never trips it)' }),
  windowMs: Ms(10000, 'Rolling window of the error rate', 100),
  resetTimeoutMs: Ms(10000, 'Time an open breaker waits before half-open', 1),
  halfOpenMaxRequests: Type.Integer({ minimum: 1, maximum: 100, default: 1, description: 'Probe requests a half-open breaker lets through at once; the first probe to finish decides (success closes, failure reopens)' }),
  failureStatuses: Type.Array(Type.Integer({ minimum: 500, maximum: 599 }), { default: [500, 502, 503, 504], uniqueItems: true, description: 'Response statuses that count as failures (connect errors, resets and timeouts always do; a 4xx never does)' })
}, { description: 'Circuit breaker of the upstream (opossum)' })
export type CircuitBreakerConfig = Static<typeof CircuitBreakerSchema>

export const RetrySchema = Strict({
  attempts: Type.Integer({ minimum: 0, maximum: 10, default: 0, description: 'Extra attempts after the first (idempotent methods only)' }),
  backoffMs: Ms(100, 'Base of the exponential backoff'),
  maxBackoffMs: Ms(2000, 'Cap of one backoff; a Retry-After longer than this is not waited for (no retry)'),
  statuses: Type.Array(Type.Integer({ minimum: 400, maximum: 599 }), { default: [502, 503, 504], uniqueItems: true, description: 'Response statuses that are retried (connect errors and resets before any response byte always are)' }),
  budgetPercent: Type.Number({ minimum: 0, maximum: 100, default: 20, description: 'Retries may add at most this percentage of extra requests per upstream (over a 10 s window)' }),
  budgetMinRetries: Type.Integer({ minimum: 0, default: 3, description: 'Retries allowed in any 10 s window whatever the percentage, so a quiet upstream can still be retried' }),
  maxBufferBytes: Bytes(65536, 'Request bodies up to this size are buffered so they can be replayed on a retry; larger bodies stream and are never retried')
}, { description: 'Retries toward the upstream' })
export type RetryConfig = Static<typeof RetrySchema>

/** Per-route retry opt-ins (compose as `routes[].retry`). */
export const RouteRetrySchema = Strict({
  nonIdempotent: Bool(false, 'Also retry POST, PATCH and other non-idempotent methods on this route (only safe when the upstream deduplicates)')
}, { description: 'Retry options of the route' })
export type RouteRetryConfig = Static<typeof RouteRetrySchema>

export const ClientRateLimitSchema = Strict({
  perClient: Type.Optional(Strict({
    requestsPerSecond: Type.Number({ exclusiveMinimum: 0, description: 'Sustained rate per client' }),
    burst: Type.Integer({ minimum: 1, description: 'Bucket size per client' }),
    key: Type.String({ default: 'ip', pattern: '^(ip|route|header:[A-Za-z0-9!#$%&\'*+.^_`|~-]+)$', description: '`ip` (an IPv6 client by its /64), `route`, or `header:<name>` (a request without that header is keyed by its IP)' }),
    shadow: Bool(false, 'Count would-be rejections without rejecting'),
    expectedReplicas: Replicas()
  }))
}, { description: 'Per-client rate limit of the route' })
export type ClientRateLimitConfig = Static<typeof ClientRateLimitSchema>
export type PerClientConfig = NonNullable<ClientRateLimitConfig['perClient']>
