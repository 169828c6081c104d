// Shared settings of the k6 scripts: where Sluice is, the thresholds users expect, and the
// cache-hit Rate read from the Cache-Status header (RFC 9211; Sluice's member is `sluice; hit`).
import { Rate } from 'k6/metrics'

/** The proxy port (compose publishes it on localhost:8080). */
export const BASE_URL = (__ENV.BASE_URL || 'http://localhost:8080').replace(/\/$/, '')
/** The admin port (compose publishes it on 127.0.0.1:9901) and its token, for purges. */
export const ADMIN_URL = (__ENV.ADMIN_URL || 'http://localhost:9901').replace(/\/$/, '')
export const ADMIN_TOKEN = __ENV.SLUICE_ADMIN_TOKEN || 'change-me'

/** Share of responses served from Sluice's cache, by the Cache-Status header. */
export const cacheHits = new Rate('cache_hits')

/** True when Sluice answered from its cache: `Cache-Status: sluice; hit; ttl=…`. */
export function isCacheHit (res) {
  const value = res.headers['Cache-Status'] || ''
  // Several caches may add members; Sluice's own is the one that starts with "sluice".
  return value.split(',').some((member) => /^\s*sluice\s*;\s*hit\b/.test(member))
}

/** Adds one observation to cache_hits and returns whether it was a hit. */
export function recordCache (res) {
  const hit = isCacheHit(res)
  cacheHits.add(hit)
  return hit
}

/** The thresholds every script keeps: p95 under 500 ms (a histogram bucket edge) and under 1% failures. */
export const baseThresholds = {
  http_req_duration: ['p(95)<500'],
  http_req_failed: ['rate<0.01']
}

/** Base thresholds plus a cache-hit rate above 50%, for scripts whose traffic should hit. */
export const cachedThresholds = {
  ...baseThresholds,
  cache_hits: ['rate>0.5']
}

/**
 * Options for a script: its scenarios, the shared thresholds (plus any extra), and summary
 * statistics that include p(99). VUS and DURATION environment variables scale a run.
 */
export function makeOptions ({ scenarios, thresholds = baseThresholds, extraThresholds = {} }) {
  return {
    scenarios,
    thresholds: { ...thresholds, ...extraThresholds },
    summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
    discardResponseBodies: false,
    userAgent: 'k6-sluice'
  }
}

export const VUS = Number(__ENV.VUS || 20)
export const DURATION = __ENV.DURATION || '1m'
