// RFC 9111 shared-cache rules as small named predicates; each "no" carries the reason that
// ends up in `Cache-Status: sluice; fwd=bypass; detail=<REASON>`.
import type { Headers } from '../types.js'
import { parseDirectives, seconds, httpDate, ageSeconds, expiresTime, type Directives } from './directives.js'
import { varyNames } from './key.js'
import { parseDictionary, isInnerList, Token } from 'structured-headers'

/** Statuses a cache may store with heuristic freshness (RFC 9110 §15.1). */
export const HEURISTIC_STATUSES = new Set([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
/** Statuses whose semantics Sluice understands (for must-understand, RFC 9111 §5.2.2.3). */
const UNDERSTOOD = new Set([200, 203, 204, 300, 301, 302, 303, 307, 308, 400, 403, 404, 405, 410, 414, 500, 501, 502, 503, 504])

export interface RouteCachePolicy {
  defaultTtlSeconds: number
  staleWhileRevalidateSeconds: number
  staleIfErrorSeconds: number
  allowSetCookie: boolean
  targetedField: string
  heuristicPercent: number
  maxHeuristicSeconds: number
}

/**
 * The device token Sluice answers to in Surrogate-Control (Edge Architecture 1.0): it sends
 * `Surrogate-Capability: sluice="Surrogate/1.0"` upstream, and `max-age=60;sluice` targets it.
 */
export const SURROGATE_TOKEN = 'sluice'
export const SURROGATE_CAPABILITY = `${SURROGATE_TOKEN}="Surrogate/1.0"`

/** The directives that govern Sluice: its own targeted field, then CDN-Cache-Control, then Surrogate-Control, then Cache-Control (RFC 9213). */
export function responseDirectives (h: Headers, targetedField: string): { d: Directives; targeted: boolean } {
  const own = h[targetedField]
  if (own !== undefined) { const d = targetedDirectives(own); if (d !== null && d.size) return { d, targeted: true } }
  const cdn = h['cdn-cache-control']
  if (cdn !== undefined) { const d = targetedDirectives(cdn); if (d !== null && d.size) return { d, targeted: true } }
  const sc = h['surrogate-control']
  if (sc !== undefined) {
    const d = surrogateDirectives(sc, SURROGATE_TOKEN)
    if (d.size) return { d, targeted: true }
  }
  return { d: parseDirectives(h['cache-control']), targeted: false }
}

/** Targeted-field directives whose value is an Integer (delta-seconds). */
const INTEGER_DIRECTIVES = new Set(['max-age', 's-maxage', 'stale-while-revalidate', 'stale-if-error'])
/** Targeted-field directives whose value is a Boolean (present: true). */
const BOOLEAN_DIRECTIVES = new Set(['no-store', 'no-cache', 'private', 'public', 'must-revalidate', 'proxy-revalidate', 'must-understand', 'immutable', 'no-transform'])

/**
 * A targeted cache-control field (RFC 9213 §2.1: CDN-Cache-Control, or the route's own) as a
 * Structured Field Dictionary (RFC 8941), parsed by `structured-headers`. null when the field
 * does not parse or a known directive has the wrong type (`max-age="60"`, `max-age=1.5`,
 * `max-age=-1`, `no-store=1`): the whole field is then ignored and Cache-Control applies.
 * Parameters are ignored; a Boolean false directive is absent; unknown directives are kept as
 * Cache-Control would keep them (Integers and Tokens as text, Booleans as present).
 */
export function targetedDirectives (value: string | string[]): Directives | null {
  const raw = Array.isArray(value) ? value.join(', ') : value
  let dict
  try { dict = parseDictionary(raw) } catch { return null }
  const out: Directives = new Map()
  for (const [name, member] of dict) {
    if (isInnerList(member)) {
      if (INTEGER_DIRECTIVES.has(name) || BOOLEAN_DIRECTIVES.has(name)) return null
      continue
    }
    const v = member[0]
    if (INTEGER_DIRECTIVES.has(name)) {
      // structured-headers gives Integers and Decimals both as numbers: a Decimal is told by its text.
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || isDecimal(raw, name)) return null
      out.set(name, String(v))
    } else if (BOOLEAN_DIRECTIVES.has(name)) {
      if (typeof v !== 'boolean') return null
      if (v) out.set(name, true)
    } else if (v === true) out.set(name, true)
    else if (typeof v === 'number' || typeof v === 'string') out.set(name, String(v))
    else if (v instanceof Token) out.set(name, v.toString())
  }
  return out
}

/** Whether a dictionary member `name=...` of `raw` (which parsed) carries a Decimal value. */
function isDecimal (raw: string, name: string): boolean {
  const esc = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  return new RegExp(`(?:^|,)[ \\t]*${esc}=-?[0-9]+\\.`).test(raw)
}

/**
 * Surrogate-Control directives for one device: `max-age=60` applies to every surrogate,
 * `max-age=60;sluice` only to the one whose token is `sluice`, and wins over the untargeted
 * one; directives aimed at other devices are dropped. What applies is parsed as one
 * Cache-Control list (parseDirectives), so a directive given more than once resolves as it
 * does there: to the most restrictive (two `max-age;sluice` count as the lower).
 */
export function surrogateDirectives (value: string | string[], token: string): Directives {
  const general: Array<{ name: string; text: string }> = []
  const mine: string[] = []
  const mineNames = new Set<string>()
  for (const part of splitList(Array.isArray(value) ? value.join(',') : value)) {
    const semi = part.indexOf(';', part.indexOf('"') === -1 ? 0 : part.lastIndexOf('"'))
    const target = semi === -1 ? undefined : part.slice(semi + 1).trim().toLowerCase()
    const text = semi === -1 ? part : part.slice(0, semi)
    if (target !== undefined && target !== token) continue
    const name = directiveName(text)
    if (name === '') continue
    if (target === undefined) general.push({ name, text })
    else { mine.push(text); mineNames.add(name) }
  }
  const texts = general.filter((g) => !mineNames.has(g.name)).map((g) => g.text).concat(mine)
  return parseDirectives(texts.length === 0 ? undefined : texts.join(', '))
}

/** The lower-cased name of one directive's text (`Max-Age=60` → `max-age`), as parseDirectives reads it. */
function directiveName (text: string): string {
  const eq = text.indexOf('=')
  return (eq === -1 ? text : text.slice(0, eq)).trim().toLowerCase()
}

/** Split a comma-separated field value, keeping commas inside quoted strings. */
function splitList (s: string): string[] {
  const out: string[] = []
  let start = 0
  let quoted = false
  for (let i = 0; i < s.length; i++) {
    const c = s[i]
    if (c === '"') quoted = !quoted
    else if (c === '\\' && quoted) i++
    else if (c === ',' && !quoted) { out.push(s.slice(start, i)); start = i + 1 }
  }
  out.push(s.slice(start))
  return out.map((x) => x.trim()).filter((x) => x.length > 0)
}

export interface Freshness {
  /** Freshness lifetime in ms (0: stale at once). */
  lifetimeMs: number
  /** Age of the response when received, in ms (Age header and transit, RFC 9111 §4.2.3). */
  initialAgeMs: number
  swrMs: number
  sieMs: number
  /** must-revalidate / proxy-revalidate (or s-maxage): never served stale. */
  mustRevalidate: boolean
  /** no-cache: always revalidate before use. */
  noCache: boolean
  /** The lifetime came from the origin (not heuristics or the route default). */
  explicit: boolean
}

export function freshness (status: number, h: Headers, d: Directives, targeted: boolean, route: RouteCachePolicy, requestTime: number, responseTime: number): Freshness {
  const date = httpDate(h.date)
  const dateMs = Number.isNaN(date) ? responseTime : date
  let lifetimeMs: number | undefined
  let explicit = true
  const sMax = seconds(d, 's-maxage')
  const max = seconds(d, 'max-age')
  // A present but invalid s-maxage or max-age (`max-age=-1`, `max-age=1.5`, a bare `max-age`) is
  // freshness information that says nothing usable: stale at once (RFC 9111 §4.2.1), never
  // replaced by Expires, the route's default or heuristics, which would keep a response the
  // origin meant to be revalidated.
  if (d.has('s-maxage')) lifetimeMs = (sMax ?? 0) * 1000
  else if (d.has('max-age')) lifetimeMs = (max ?? 0) * 1000
  else if (!targeted && h.expires !== undefined) {
    const exp = expiresTime(h.expires, responseTime)
    lifetimeMs = Number.isNaN(exp) ? 0 : Math.max(0, exp - dateMs) // an invalid Expires is already stale
  }
  if (lifetimeMs === undefined) {
    explicit = false
    if (route.defaultTtlSeconds > 0) lifetimeMs = route.defaultTtlSeconds * 1000
    // Heuristics apply to heuristically cacheable statuses, and to any status marked public (RFC 9111 §4.2.2).
    else if ((HEURISTIC_STATUSES.has(status) || d.has('public')) && h['last-modified'] !== undefined) {
      const lm = httpDate(h['last-modified'])
      lifetimeMs = Number.isNaN(lm) || lm >= dateMs ? 0 : Math.min((dateMs - lm) * route.heuristicPercent / 100, route.maxHeuristicSeconds * 1000)
    } else lifetimeMs = 0
  }
  // Age (RFC 9111 §5.1): the first value of a list; an invalid value is ignored, as if absent.
  const ageValue = (ageSeconds(h.age) ?? 0) * 1000
  const apparent = Math.max(0, responseTime - dateMs)
  const corrected = ageValue + (responseTime - requestTime)
  const swr = seconds(d, 'stale-while-revalidate')
  const sie = seconds(d, 'stale-if-error')
  const mustRevalidate = d.has('must-revalidate') || d.has('proxy-revalidate') || d.has('s-maxage')
  return {
    lifetimeMs,
    initialAgeMs: Math.max(apparent, corrected),
    swrMs: (swr ?? route.staleWhileRevalidateSeconds) * 1000,
    sieMs: (sie ?? route.staleIfErrorSeconds) * 1000,
    mustRevalidate,
    noCache: d.has('no-cache') && d.get('no-cache') === true,
    explicit
  }
}

/** Request fields Sluice sets per client on the way upstream (src/forwarding.ts): never a usable secondary key. */
const PER_CLIENT_FIELDS = new Set(['x-forwarded-for'])

export type BypassReason = 'COOKIE' | 'EVENT-STREAM' | 'METHOD' | 'NO-STORE' | 'PRIVATE' | 'SET-COOKIE' | 'AUTHORIZATION' | 'VARY-STAR' | 'VARY-FORWARDED' | 'STATUS' | 'TOO-LARGE' | 'NO-FRESHNESS' | 'HIT-FOR-MISS' | 'BODY-ERROR' | 'CONTENT-RANGE'

/** Whether a response may be stored, or why not. */
export function storable (status: number, h: Headers, d: Directives, reqHeaders: Headers, reqD: Directives, route: RouteCachePolicy, f: Freshness): BypassReason | null {
  if (status < 200 || status === 206 || status === 304) return 'STATUS'
  if (d.has('must-understand') && !UNDERSTOOD.has(status)) return 'STATUS'
  if (reqD.has('no-store') || (d.has('no-store') && !(d.has('must-understand') && UNDERSTOOD.has(status)))) return 'NO-STORE'
  if (d.has('private') && d.get('private') === true) return 'PRIVATE'
  // A stream of events never ends: it is passed through, never collected or coalesced.
  const ct = h['content-type']
  if (ct !== undefined && /^\s*text\/event-stream/i.test(Array.isArray(ct) ? ct[0] : ct)) return 'EVENT-STREAM'
  if (h.vary !== undefined) {
    const names = varyNames(h.vary)
    if (names.includes('*')) return 'VARY-STAR'
    // The secondary key is read from the client's own fields, but Sluice replaces or extends
    // X-Forwarded-For with the client's address before the origin sees it: an answer varying
    // on it is per client, and keyed by the client's (usually absent) field it would be served
    // to every other client that sends the same, or none.
    if (names.some((n) => PER_CLIENT_FIELDS.has(n))) return 'VARY-FORWARDED'
  }
  if (h['set-cookie'] !== undefined && !route.allowSetCookie) return 'SET-COOKIE'
  if (reqHeaders.authorization !== undefined && !(d.has('public') || d.has('s-maxage') || d.has('must-revalidate'))) return 'AUTHORIZATION'
  // A request with a Cookie may get a per-user answer: without the origin's own freshness (or
  // public), Sluice invents none for it (route default or heuristics), as Varnish's built-in policy.
  if (reqHeaders.cookie !== undefined && !f.explicit && !d.has('public')) return 'COOKIE'
  // Statuses that are not heuristically cacheable need explicit freshness (or public).
  if (!HEURISTIC_STATUSES.has(status) && !f.explicit && !d.has('public')) return 'STATUS'
  const hasValidator = h.etag !== undefined || h['last-modified'] !== undefined
  if (f.lifetimeMs <= 0 && !hasValidator && f.swrMs <= 0 && f.sieMs <= 0) return 'NO-FRESHNESS'
  return null
}

/** Request directives (RFC 9111 §5.2.1), with Pragma: no-cache when there is no Cache-Control. */
export function requestDirectives (h: Headers): Directives {
  const cc = h['cache-control']
  if (cc !== undefined) return parseDirectives(cc)
  const pragma = h.pragma
  if (pragma !== undefined && /(^|,)\s*no-cache\s*(,|$)/i.test(Array.isArray(pragma) ? pragma.join(',') : pragma)) return parseDirectives('no-cache')
  return parseDirectives(undefined)
}

/**
 * Header fields a shared cache must not keep: those named by a qualified `private="..."`
 * (RFC 9111 §5.2.2.7) and `no-cache="..."` (§5.2.2.4; dropping them means they are never
 * served without the origin, which is what revalidation would give). Lower case.
 */
export function withheldFields (d: Directives): string[] {
  const out: string[] = []
  for (const name of ['private', 'no-cache']) {
    const v = d.get(name)
    if (typeof v === 'string') for (const f of v.split(',')) { const t = f.trim().toLowerCase(); if (t) out.push(t) }
  }
  return out
}
