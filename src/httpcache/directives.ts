// Cache-Control style directive lists (RFC 9111 §5.2): `a, b=1, c="x, y"` → Map.
// Names are case-insensitive (lower-cased); quoted values are unquoted.
//
// A directive given more than once (in one line or several) is resolved to the most restrictive
// reading (RFC 9111 §4.2.1, §5.2): an unqualified `private` or `no-cache` wins over the qualified
// form (two qualified forms withhold both field lists); a duplicated delta-seconds directive
// (max-age, s-maxage, stale-while-revalidate, stale-if-error) counts as its lowest value, and as 0
// (stale at once) when one of its values is not valid delta-seconds. RFC 9111 §4.2.1 encourages
// treating such invalid freshness information as stale; taking the lowest value is that rule for
// duplicates that all parse, and never makes a response fresher than any one value says.
// The request directives follow the same rule towards the most restrictive reading: a duplicated
// max-stale counts as its lowest value (a bare `max-stale`, any staleness, is higher than any
// number; an invalid value is 0), a duplicated min-fresh as its highest (an invalid value is
// ignored); max-age is the lowest, as above; no-cache and no-store apply when present at all.
// For any other directive the first occurrence's text is kept.
export type Directives = Map<string, string | true>

const EMPTY: Directives = new Map()

/** Delta-seconds directives whose duplicates resolve to the lowest value. */
const LOWEST_WINS = new Set(['max-age', 's-maxage', 'stale-while-revalidate', 'stale-if-error', 'max-stale'])
/** Delta-seconds directives (of a request) whose duplicates resolve to the highest value. */
const HIGHEST_WINS = new Set(['min-fresh'])
/** Directives whose unqualified form is more restrictive than the qualified (field-list) form. */
const UNQUALIFIED_WINS = new Set(['private', 'no-cache'])
/**
 * For a parsed list with duplicated LOWEST_WINS or HIGHEST_WINS directives: the resolved seconds
 * of each, which seconds() returns (the map itself keeps the first occurrence's text). A
 * duplicated bare `max-stale` resolves to Infinity.
 */
const resolved = new WeakMap<Directives, Map<string, number>>()

/** A delta-seconds text as a number (capped at 2^31), or undefined when it is not one. */
function deltaSeconds (v: string | true): number | undefined {
  if (v === true || !/^\d+$/.test(v)) return undefined
  const n = Number(v)
  return n > 2147483648 ? 2147483648 : n
}

/** Record another occurrence of `name` with value `v` in `out` (see the rules above). */
function repeat (out: Directives, name: string, v: string | true): void {
  const prev = out.get(name)!
  if (UNQUALIFIED_WINS.has(name)) {
    out.set(name, prev === true || v === true ? true : prev + ', ' + v)
  } else if (LOWEST_WINS.has(name) || HIGHEST_WINS.has(name)) {
    let r = resolved.get(out)
    if (r === undefined) { r = new Map(); resolved.set(out, r) }
    const before = r.get(name) ?? occurrence(name, prev)
    r.set(name, HIGHEST_WINS.has(name) ? Math.max(before, occurrence(name, v)) : Math.min(before, occurrence(name, v)))
  }
}

/** One occurrence's seconds when resolving duplicates: an invalid value is 0, a bare max-stale is unbounded. */
function occurrence (name: string, v: string | true): number {
  return deltaSeconds(v) ?? (name === 'max-stale' && v === true ? Infinity : 0)
}

export function parseDirectives (value: string | string[] | undefined): Directives {
  if (value === undefined) return EMPTY
  const s = Array.isArray(value) ? value.join(',') : value
  if (s.length === 0) return EMPTY
  const out: Directives = new Map()
  let i = 0
  const n = s.length
  while (i < n) {
    while (i < n && (s[i] === ',' || s[i] === ' ' || s[i] === '\t')) i++
    let j = i
    while (j < n && s[j] !== '=' && s[j] !== ',') j++
    const name = s.slice(i, j).trim().toLowerCase()
    if (j < n && s[j] === '=') {
      j++
      let v: string
      if (s[j] === '"') {
        let k = j + 1
        let buf = ''
        while (k < n && s[k] !== '"') { if (s[k] === '\\' && k + 1 < n) k++; buf += s[k]; k++ }
        v = buf
        j = k + 1
        while (j < n && s[j] !== ',') j++
      } else {
        let k = j
        while (k < n && s[k] !== ',') k++
        v = s.slice(j, k).trim()
        j = k
      }
      if (name) { if (out.has(name)) repeat(out, name, v); else out.set(name, v) }
    } else if (name) { if (out.has(name)) repeat(out, name, true); else out.set(name, true) }
    i = j + 1
  }
  return out
}

/**
 * A delta-seconds directive value, or undefined when absent or malformed (RFC 9111 §1.2.2).
 * A duplicated max-age, s-maxage, stale-while-revalidate, stale-if-error or max-stale gives its
 * lowest value (0 when one of them is malformed; Infinity for two bare max-stale), a duplicated
 * min-fresh its highest: see the top of this file.
 */
export function seconds (d: Directives, name: string): number | undefined {
  const r = resolved.get(d)?.get(name)
  if (r !== undefined) return r
  const v = d.get(name)
  return v === undefined ? undefined : deltaSeconds(v)
}

export function has (d: Directives, name: string): boolean {
  return d.has(name)
}

/**
 * Parse an HTTP-date leniently (Date.parse after a shape check); NaN when invalid. Used where a
 * date is compared (Date, Last-Modified, If-Modified-Since); Expires, where an invalid value
 * has a meaning of its own, uses the strict parseHttpDate below.
 */
export function httpDate (v: string | string[] | undefined): number {
  if (v === undefined) return NaN
  const s = Array.isArray(v) ? v[0] : v
  if (!/^[A-Za-z]{3,9}, ?\d|^[A-Za-z]{3} [A-Za-z]{3} /.test(s.trim())) return NaN
  return Date.parse(s)
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
