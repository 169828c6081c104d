// Resilience inputs as the config loader hands them to the registry: schema defaults applied
// at load (the registry applies none of its own). Tests write only the keys they care about.
import { Value } from '@sinclair/typebox/value'
import { UpstreamSchema, type UpstreamConfig } from '../../src/config/schema.js'
import { ClientRateLimitSchema, type CircuitBreakerConfig, type ClientRateLimitConfig, type PerClientConfig, type RetryConfig, type UpstreamRateLimitConfig } from '../../src/resilience/config.js'
import type { RouteResilienceInput, UpstreamResilienceInput } from '../../src/resilience/registry.js'

export interface UpstreamPartial {
  rateLimit?: Partial<UpstreamRateLimitConfig> | null
  circuitBreaker?: Partial<CircuitBreakerConfig>
  retry?: Partial<RetryConfig>
}
export interface RoutePartial { name: string; rateLimit?: { perClient?: Partial<PerClientConfig> } | null }

/** Upstreams as loaded (Value.Default over UpstreamSchema, as load.ts does). */
export function loadedUpstreams (ups: Record<string, UpstreamPartial>): Record<string, UpstreamResilienceInput> {
  const out: Record<string, UpstreamResilienceInput> = {}
  for (const [name, { rateLimit, ...rest }] of Object.entries(ups)) {
    const v = Value.Default(UpstreamSchema, structuredClone({ url: 'http://127.0.0.1', ...rest, ...(rateLimit ? { rateLimit } : {}) })) as UpstreamConfig
    out[name] = { rateLimit: v.rateLimit, circuitBreaker: v.circuitBreaker, retry: v.retry }
  }
  return out
}

/** Routes as compiled: rateLimit with its schema defaults, or null. */
export function loadedRoutes (routes: readonly RoutePartial[]): RouteResilienceInput[] {
  return routes.map((r) => ({ name: r.name, rateLimit: r.rateLimit ? Value.Default(ClientRateLimitSchema, structuredClone(r.rateLimit)) as ClientRateLimitConfig : null }))
}
