// The cache policy judged as the cache does it, at a fixed time: a response's freshness and
// whether it may be stored, for the policy unit tests (test/cache/policy.test.ts,
// test/cache/rfc-parsing.test.ts).
import type { Headers } from '../../src/types.js'
import { freshness, storable, requestDirectives, responseDirectives, type RouteCachePolicy } from '../../src/httpcache/policy.js'

export const NOW = Date.parse('2026-01-01T00:00:00Z')
export const date = (offsetSeconds: number) => new Date(NOW + offsetSeconds * 1000).toUTCString()

export const ROUTE: RouteCachePolicy = {
  defaultTtlSeconds: 0,
  staleWhileRevalidateSeconds: 0,
  staleIfErrorSeconds: 0,
  allowSetCookie: false,
  targetedField: 'sluice-cache-control',
  heuristicPercent: 10,
  maxHeuristicSeconds: 86400
}

/** Freshness and storability of a response, as the stage computes them. */
export function judge (status: number, h: Headers, opts: { route?: Partial<RouteCachePolicy>; req?: Headers } = {}) {
  const route = { ...ROUTE, ...opts.route }
  const headers: Headers = { date: date(0), ...h }
  const { d, targeted } = responseDirectives(headers, route.targetedField)
  const f = freshness(status, headers, d, targeted, route, NOW, NOW)
  const req = opts.req ?? {}
  return { f, why: storable(status, headers, d, req, requestDirectives(req), route, f) }
}
