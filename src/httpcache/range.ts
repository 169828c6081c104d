// Byte ranges served from a stored complete response (RFC 9110 §14). Only one range per
// request: a multi-range request, or one Sluice cannot satisfy, goes to the origin as it is.

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
 * Whether If-Range lets the range apply (RFC 9110 §13.1.5): a strong ETag equal to the stored
 * one, or an HTTP-date equal to a stored Last-Modified. Otherwise the whole response is sent.
 */
export function ifRangeMatches (ifRange: string, etag: string | undefined, lastModified: string | undefined): boolean {
  const v = ifRange.trim()
  if (v.startsWith('"') || v.startsWith('W/')) return etag !== undefined && !v.startsWith('W/') && !etag.startsWith('W/') && v === etag
  if (lastModified === undefined) return false
  const since = Date.parse(v)
  return !Number.isNaN(since) && since === Date.parse(lastModified)
}
