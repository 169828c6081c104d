// Byte ranges served from a stored response (RFC 9110 §14). Only one range per request: a
// multi-range request, or a range of another unit, goes to the origin as it is. A single range
// that starts at or past the end is answered 416; a `bytes` Range that is not valid syntax is
// ignored (RFC 9110 §14.2), as is a HEAD's.
import type { Headers } from '../types.js'
import { first } from '../compress/headers.js'
import { parseHttpDate } from './directives.js'

export interface ByteRange { start: number; end: number }

/** One range-spec: first-pos "-" [last-pos], or "-" suffix-length (OWS around the parts tolerated). */
const SPEC = /^\s*(\d*)\s*-\s*(\d*)\s*$/

/**
 * What a Range header asks of a representation of `size` bytes (RFC 9110 §14.1.1): the one
 * satisfiable range; 'unsatisfiable' (one range starting at or past the end, or a suffix of
 * 0 bytes); 'invalid' (the `bytes` unit with a range-set that is not valid syntax, or a last
 * position before the first: RFC 9110 §14.2 lets a server ignore it); or null (several ranges,
 * another unit, or an empty representation: pass it on).
 */
export function rangeAsk (header: string, size: number): ByteRange | 'unsatisfiable' | 'invalid' | null {
  const u = /^\s*([^=\s]+)\s*=(.*)$/.exec(header)
  if (u === null) return 'invalid'
  if (u[1].toLowerCase() !== 'bytes') return null // another unit: the origin may know it
  const specs: Array<[string, string]> = []
  for (const item of u[2].split(',')) {
    if (item.trim() === '') continue // empty list elements are allowed (RFC 9110 §5.6.1)
    const m = SPEC.exec(item)
    if (m === null || (m[1] === '' && m[2] === '')) return 'invalid'
    if (m[1] !== '' && m[2] !== '' && BigInt(m[2]) < BigInt(m[1])) return 'invalid'
    specs.push([m[1], m[2]])
  }
  if (specs.length === 0) return 'invalid'
  if (specs.length > 1 || size === 0) return null
  const [a, b] = specs[0]
  if (a === '') {
    // Suffix: the last N bytes.
    const n = Number(b)
    return n === 0 ? 'unsatisfiable' : { start: Math.max(0, size - n), end: size - 1 }
  }
  const start = Number(a)
  if (start >= size) return 'unsatisfiable'
  return { start, end: b === '' ? size - 1 : Math.min(Number(b), size - 1) }
}

/** A `bytes` Range that is not valid syntax (rangeAsk's 'invalid'): ignored, as if not sent. */
export function invalidRange (header: string): boolean {
  return rangeAsk(header, 1) === 'invalid'
}

/** The single satisfiable byte range a Range header asks for within `size` bytes, or null. */
export function singleRange (header: string, size: number): ByteRange | null {
  const r = rangeAsk(header, size)
  return r !== null && typeof r === 'object' ? r : null
}

/**
 * A stored response's Last-Modified in ms when it is a strong validator (RFC 9110 §8.8.2.2):
 * a valid HTTP-date at least one second before a valid Date; NaN otherwise.
 */
export function strongLastModified (h: Headers): number {
  const lm = first(h['last-modified'])
  const date = first(h.date)
  if (lm === undefined || date === undefined) return NaN
  const l = parseHttpDate(lm); const d = parseHttpDate(date)
  return !Number.isNaN(l) && !Number.isNaN(d) && d - l >= 1000 ? l : NaN
}

/**
 * Whether If-Range lets the range apply to a stored response with fields `stored` (RFC 9110
 * §13.1.5): a strong ETag equal to the stored one, or a valid HTTP-date (IMF-fixdate, or the
 * obsolete RFC 850 and asctime forms, strictly: parseHttpDate) equal to a strong stored
 * Last-Modified. Anything else, a date in another format included, is false: the whole
 * response is sent.
 */
export function ifRangeMatches (ifRange: string, stored: Headers): boolean {
  const v = ifRange.trim()
  const etag = first(stored.etag)
  if (v.startsWith('"') || v.startsWith('W/')) return etag !== undefined && !v.startsWith('W/') && !etag.startsWith('W/') && v === etag
  const since = parseHttpDate(v)
  return !Number.isNaN(since) && since === strongLastModified(stored)
}
