// Reading and writing the rate-limit fields: Retry-After (RFC 9110 §10.2.3) and the
// RateLimit / RateLimit-Policy fields (draft-ietf-httpapi-ratelimit-headers), plus the
// older RateLimit-Remaining/-Reset and X-RateLimit-* pairs that many upstreams still send.
import type { Headers, HeaderValue } from '../types.js'
import { first } from '../compress/headers.js'

/** Retry-After as milliseconds from now (delta-seconds or HTTP-date); null when absent or invalid. */
export function parseRetryAfter (value: HeaderValue | undefined, now = Date.now()): number | null {
  const v = first(value)?.trim()
  if (!v) return null
  if (/^\d+$/.test(v)) return Number(v) * 1000
  // HTTP-date formats all start with a day name; Date.parse alone would accept "-1".
  if (!/^[A-Za-z]{3}/.test(v)) return null
  const at = Date.parse(v)
  if (Number.isNaN(at)) return null
  return Math.max(0, at - now)
}

/**
 * How long the upstream says its quota is exhausted for, in ms, read from its RateLimit
 * fields; null when they are absent or say requests remain.
 */
export function exhaustedForMs (headers: Headers, now = Date.now()): number | null {
  const v = headers.ratelimit
  const rl = Array.isArray(v) ? v.join(', ') : v
  if (rl !== undefined) {
    // Structured form (draft 08+): a List of policies, "minute";r=0;t=30, "day";r=5;t=3600.
    // Each item is read on its own: the quota is exhausted for the longest t of an item with
    // r=0 (read as one string, the first r and the first t were taken, perhaps of two items,
    // and a spent daily quota listed after a minute's with requests left was never seen).
    if (/;\s*r=\d/.test(rl)) {
      let exhausted: number | null = null
      let said = false
      for (const item of rl.split(',')) {
        const r = /;\s*r=(\d+)/.exec(item)
        const t = /;\s*t=(\d+)/.exec(item)
        if (!r || !t) continue
        said = true
        if (r[1] === '0' && (exhausted === null || Number(t[1]) > exhausted)) exhausted = Number(t[1])
      }
      if (said) return exhausted === null ? null : exhausted * 1000
    }
    // Older form: limit=100, remaining=0, reset=30.
    const r = /(?:^|[;,\s])(?:r|remaining)=(\d+)/.exec(rl)
    const t = /(?:^|[;,\s])(?:t|reset)=(\d+)/.exec(rl)
    if (r && t) return r[1] === '0' ? Number(t[1]) * 1000 : null
  }
  const pairs: Array<[string, string]> = [['ratelimit-remaining', 'ratelimit-reset'], ['x-ratelimit-remaining', 'x-ratelimit-reset']]
  for (const [rk, tk] of pairs) {
    const rem = first(headers[rk])
    const reset = first(headers[tk])
    if (rem === undefined || reset === undefined) continue
    if (rem.trim() !== '0') return null
    const n = Number(reset.trim())
    if (!Number.isFinite(n) || n < 0) return null
    // Some upstreams send an epoch time in X-RateLimit-Reset rather than seconds from now.
    return n > 1e9 ? Math.max(0, n * 1000 - now) : n * 1000
  }
  return null
}

/** Seconds for Retry-After: rounded up, never 0 (a client told "0" retries at once). */
export function retryAfterSeconds (ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000))
}

/** The longest window RateLimit-Policy states (w, seconds) to say a rate exactly. */
const MAX_WINDOW = 1_000_000

/**
 * The smallest denominator d (at most MAX_WINDOW) for which rate × d is a whole number, or the
 * denominator of the closest fraction when none is (continued fractions: 0.333 gives 1000,
 * 1/3 (0.3333…) gives 3, 123.456 gives 125).
 */
function rateDenominator (rate: number): number {
  let h0 = 0; let h1 = 1; let k0 = 1; let k1 = 0
  let x = rate
  for (let i = 0; i < 64; i++) {
    const a = Math.floor(x)
    const h = a * h1 + h0
    const k = a * k1 + k0
    if (k > MAX_WINDOW) break
    h0 = h1; h1 = h; k0 = k1; k1 = k
    if (Math.abs(h / k - rate) <= rate * 1e-12) break
    const f = x - a
    if (f < 1e-12) break
    x = 1 / f
  }
  return k1 === 0 ? 1 : k1
}

/**
 * The RateLimit-Policy value of a token bucket: a quota of q requests per w seconds, q/w being
 * the configured rate exactly (draft-ietf-httpapi-ratelimit-headers: q and w are whole
 * numbers). w is the shortest such window that is at least the seconds the bucket takes to
 * refill (and at least 1), so q is never below the burst, and says the sustained rate whatever
 * the burst: 50/s with burst 2 is q=50;w=1 (not q=2;w=1, which would say 2 a second), 10/s with
 * burst 15 is q=20;w=2, 0.3/s is q=3;w=10, and 0.333/s is q=333;w=1000 (q=1;w=4 said 0.25/s).
 */
export function policyField (policy: string, ratePerSecond: number, burst: number): string {
  const d = rateDenominator(ratePerSecond)
  const refill = Math.max(1, Math.ceil(burst / ratePerSecond - 1e-9))
  const w = d * Math.ceil(refill / d)
  return `"${policy}";q=${Math.max(burst, Math.round(ratePerSecond * w))};w=${w}`
}

/** The headers of a rejection: Retry-After, RateLimit-Policy and RateLimit. */
export function rejectionHeaders (policy: string, policyValue: string, retryMs: number): Record<string, string> {
  const s = retryAfterSeconds(retryMs)
  return { 'retry-after': String(s), 'ratelimit-policy': policyValue, ratelimit: `"${policy}";r=0;t=${s}` }
}
