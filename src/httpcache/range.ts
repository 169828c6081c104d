// Byte ranges served from a stored complete response (RFC 9110 §14). Only one range per
// request: a multi-range request, or one Sluice cannot satisfy, goes to the origin as it is.
import type { Headers } from '../types.js'
import { first } from '../compress/headers.js'
import { parseHttpDate } from './directives.js'

export interface ByteRange { start: number; end: number }

/** The single byte range a Range header asks for within `size` bytes, or null (pass it on). */
export function singleRange (header: string, size: number): ByteRange | null {
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header)
  if (m === null || size === 0) return null // multiple ranges, other units, or malformed
  const [, a, b] = m
  if (a === '' && b === '') return null
  if (a === '') {
    // Suffix: the last N bytes.
    const n = Number(b)
    if (n === 0) return null
    return { start: Math.max(0, size - n), end: size - 1 }
  }
  const start = Number(a)
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1)
  if (!Number.isSafeInteger(start) || start >= size || end < start) return null
  return { start, end }
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
