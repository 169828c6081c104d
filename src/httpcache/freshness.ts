// The one place that answers "may this stored response be used now, and how?" (RFC 9111 §4.2
// freshness, §5.2.1 request directives, RFC 5861 stale-while-revalidate and stale-if-error).
// The fast path, the stage's hot path and its slow path all ask here.
import { ageMs, ttlMs, type CacheEntry } from './entry.js'
import type { CacheRouteConfig } from './config.js'
import { seconds, type Directives } from './directives.js'
import type { Freshness } from './policy.js'

/**
 * - fresh: serve it (a hit);
 * - stale-ok: stale, but the client's max-stale accepts it;
 * - swr: stale within stale-while-revalidate: serve it and refresh in the background;
 * - revalidate: ask the origin (conditionally when it has a validator).
 */
export type Use = 'fresh' | 'stale-ok' | 'swr' | 'revalidate'

export const NO_DIRECTIVES: Directives = new Map()

export function usability (e: CacheEntry, rc: CacheRouteConfig, reqD: Directives, now: number): Use {
  if (e.noCache) return 'revalidate'
  const ttl = ttlMs(e, now)
  if (reqD.size !== 0) {
    if (reqD.has('no-cache') && rc.clientNoCacheRevalidates) return 'revalidate'
    // seconds() resolves a duplicated directive to its most restrictive value (directives.ts).
    const maxAge = seconds(reqD, 'max-age')
    if (maxAge !== undefined && ageMs(e, now) > maxAge * 1000) return 'revalidate'
    const minFresh = seconds(reqD, 'min-fresh')
    if (minFresh !== undefined && ttl < minFresh * 1000) return 'revalidate'
    if (ttl <= 0 && !e.mustRevalidate && reqD.has('max-stale')) {
      // A bare max-stale accepts any staleness; an invalid value accepts none.
      const maxStale = seconds(reqD, 'max-stale') ?? (reqD.get('max-stale') === true ? Infinity : undefined)
      if (maxStale !== undefined && -ttl <= maxStale * 1000) return 'stale-ok'
    }
  }
  if (ttl > 0) return 'fresh'
  if (!e.mustRevalidate && -ttl <= e.swrMs) return 'swr'
  return 'revalidate'
}

/** stale-if-error: may this entry answer for an upstream that failed? */
export function canServeStaleOnError (e: CacheEntry, now: number): boolean {
  // no-cache (like must-revalidate) forbids a stale answer: it is served only once validated (RFC 9111 §4.2.4).
  return !e.mustRevalidate && !e.noCache && -ttlMs(e, now) <= Math.max(e.sieMs, 0)
}

/** refreshAheadPercent: a fresh entry past that share of its lifetime is refreshed in the background. */
export function refreshDue (e: CacheEntry, rc: CacheRouteConfig, now: number): boolean {
  return rc.refreshAheadPercent > 0 && e.lifetimeMs > 0 && ttlMs(e, now) < e.lifetimeMs * (100 - rc.refreshAheadPercent) / 100
}

/** An entry's timing fields, from its freshness and the times of the exchange that produced it. */
export function entryTiming (f: Freshness, t0: number, t1: number) {
  return {
    requestTime: t0,
    responseTime: t1,
    lifetimeMs: f.lifetimeMs,
    initialAgeMs: f.initialAgeMs,
    // must-revalidate (or s-maxage) and no-cache forbid any stale use, whatever the stale windows say.
    swrMs: f.mustRevalidate || f.noCache ? 0 : f.swrMs,
    sieMs: f.mustRevalidate || f.noCache ? 0 : f.sieMs,
    mustRevalidate: f.mustRevalidate,
    noCache: f.noCache
  }
}
