// The one place that answers "may this stored response be used now, and how?" (RFC 9111 §4.2
// freshness, §5.2.1 request directives, RFC 5861 stale-while-revalidate and stale-if-error).
// The fast path, the stage's hot path and its slow path all ask here.
import { ageMs, ttlMs, type CacheEntry } from './entry.js'
import type { CacheRouteConfig } from './config.js'
import type { Directives } from './directives.js'
import type { Freshness } from './policy.js'

/**
 * - fresh: serve it (a hit);
 * - stale-ok: stale, but the client's max-stale accepts it;
 * - swr: stale within stale-while-revalidate: serve it and refresh in the background;
 * - revalidate: ask the origin (conditionally when it has a validator).
 */
export type Use = 'fresh' | 'stale-ok' | 'swr' | 'revalidate'

export const NO_DIRECTIVES: Directives = new Map()
const DIGITS = /^\d+$/

export function usability (e: CacheEntry, rc: CacheRouteConfig, reqD: Directives, now: number): Use {
  if (e.noCache) return 'revalidate'
  const ttl = ttlMs(e, now)
  if (reqD.size !== 0) {
    if (reqD.has('no-cache') && rc.clientNoCacheRevalidates) return 'revalidate'
    const maxAge = reqD.get('max-age')
    if (typeof maxAge === 'string' && DIGITS.test(maxAge) && ageMs(e, now) > Number(maxAge) * 1000) return 'revalidate'
    const minFresh = reqD.get('min-fresh')
    if (typeof minFresh === 'string' && DIGITS.test(minFresh) && ttl < Number(minFresh) * 1000) return 'revalidate'
    const maxStale = reqD.get('max-stale')
    if (ttl <= 0 && maxStale !== undefined && !e.mustRevalidate && (maxStale === true || (DIGITS.test(maxStale) && -ttl <= Number(maxStale) * 1000))) return 'stale-ok'
  }
  if (ttl > 0) return 'fresh'
  if (!e.mustRevalidate && -ttl <= e.swrMs) return 'swr'
  return 'revalidate'
}

/** stale-if-error: may this entry answer for an upstream that failed? */
export function canServeStaleOnError (e: CacheEntry, now: number): boolean {
  return !e.mustRevalidate && -ttlMs(e, now) <= Math.max(e.sieMs, 0)
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
    // must-revalidate (or s-maxage) forbids any stale use, whatever the stale windows say.
    swrMs: f.mustRevalidate ? 0 : f.swrMs,
    sieMs: f.mustRevalidate ? 0 : f.sieMs,
    mustRevalidate: f.mustRevalidate,
    noCache: f.noCache
  }
}

// ---- Strict field parsing for freshness (RFC 9110 §5.6.7, RFC 9111 §5.1, §5.3) ----

/** Largest delta-seconds a cache needs to tell apart (RFC 9111 §1.2.2). */
export const MAX_DELTA_SECONDS = 2147483648

/**
 * The Age field's value in seconds (RFC 9111 §5.1), or undefined when it is absent or invalid
 * (an invalid Age is ignored, as if there were none). A list, or repeated lines (Node joins
 * them with ", " or gives an array), uses the first value; values past 2^31 are 2^31.
 */
export function ageSeconds (v: string | string[] | undefined): number | undefined {
  if (v === undefined) return undefined
  const line = Array.isArray(v) ? v[0] : v
  if (line === undefined) return undefined
  const comma = line.indexOf(',')
  const s = (comma === -1 ? line : line.slice(0, comma)).trim()
  if (!/^[0-9]+$/.test(s)) return undefined
  const n = Number(s)
  return n >= MAX_DELTA_SECONDS ? MAX_DELTA_SECONDS : n
}

const MONTHS = 'Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec'
const MONTH_INDEX: Record<string, number> = Object.fromEntries(MONTHS.split('|').map((m, i) => [m, i]))
// HTTP-date is case-sensitive; each form exactly as RFC 9110 §5.6.7 writes it.
const IMF_FIXDATE = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) (${MONTHS}) ([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT$`)
const RFC850_DATE = new RegExp(`^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), ([0-9]{2})-(${MONTHS})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT$`)
const ASCTIME_DATE = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (${MONTHS}) ([0-9]{2}| [0-9]) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([0-9]{4})$`)

function utc (year: number, month: number, day: number, hour: number, minute: number, second: number): number {
  if (day < 1 || hour > 23 || minute > 59 || second > 60) return NaN
  const t = Date.UTC(year, month, day, hour, minute, Math.min(second, 59))
  // The day must exist in that month (no rolling 31 Feb over into March).
  if (new Date(t).getUTCDate() !== day) return NaN
  return year < 100 ? NaN : t
}

/**
 * One HTTP-date (RFC 9110 §5.6.7), strictly: IMF-fixdate, or the obsolete RFC 850 and asctime
 * forms; ms since the epoch, or NaN for anything else. An RFC 850 two-digit year that would be
 * more than 50 years after `now` is read in the previous century.
 */
export function parseHttpDate (s: string, now: number = Date.now()): number {
  let m = IMF_FIXDATE.exec(s)
  if (m !== null) return utc(Number(m[3]), MONTH_INDEX[m[2]], Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6]))
  m = ASCTIME_DATE.exec(s)
  if (m !== null) return utc(Number(m[6]), MONTH_INDEX[m[1]], Number(m[2].trim()), Number(m[3]), Number(m[4]), Number(m[5]))
  m = RFC850_DATE.exec(s)
  if (m !== null) {
    const yy = Number(m[3])
    const century = Math.floor(new Date(now).getUTCFullYear() / 100) * 100
    const args = [MONTH_INDEX[m[2]], Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6])] as const
    const t = utc(century + yy, ...args)
    const limit = new Date(now)
    limit.setUTCFullYear(limit.getUTCFullYear() + 50)
    return t > limit.getTime() ? utc(century - 100 + yy, ...args) : t
  }
  return NaN
}

/**
 * The Expires field (RFC 9111 §5.3) as ms since the epoch; NaN (already expired) when it is
 * not exactly one valid HTTP-date: several lines or values, or any other form.
 */
export function expiresTime (v: string | string[] | undefined, now: number = Date.now()): number {
  if (v === undefined) return NaN
  if (Array.isArray(v)) { if (v.length !== 1) return NaN; v = v[0] }
  return parseHttpDate(v.trim(), now)
}
