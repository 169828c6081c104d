// Header rules shared by compression on the fly (stage.ts) and stored variants (variants.ts),
// so that a response looks the same whether its bytes were encoded now or when stored.
import type { Headers } from '../types.js'

export function first (v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v
}

/** Add Accept-Encoding to Vary once, keeping what is there (a `*` already covers it). */
export function mergeVary (h: Headers): void {
  const vary = h.vary
  if (vary === undefined || vary === '') { h.vary = 'Accept-Encoding'; return }
  const s = Array.isArray(vary) ? vary.join(', ') : vary
  for (const v of s.split(',')) {
    const t = v.trim().toLowerCase()
    if (t === 'accept-encoding' || t === '*') return
  }
  h.vary = s + ', Accept-Encoding'
}

/**
 * Weaken a strong ETag on encoded bytes. A weak validator still answers If-None-Match at the
 * origin (weak comparison), while If-Range and If-Match (strong comparison) can no longer
 * splice ranges of compressed and identity bytes. A per-encoding strong ETag ("x-br") would
 * be unknown to the origin, so every revalidation would miss.
 */
export function weakenEtag (h: Headers): void {
  const etag = first(h.etag)
  if (etag !== undefined && !etag.startsWith('W/')) h.etag = 'W/' + etag
}

// Fields that describe the identity bytes, wrong once the bytes are encoded. Accept-Ranges is
// dropped (as nginx does) so a client does not resume a compressed download with identity ranges.
const IDENTITY_ONLY = ['content-length', 'accept-ranges', 'content-md5', 'content-digest', 'repr-digest', 'digest']

/**
 * Headers of an encoded response built from the identity response's headers (a copy).
 * `length` is the encoded length when known (stored variants); absent, Content-Length goes.
 */
export function encodedHeaders (identity: Headers, coding: string, length?: number): Headers {
  const h: Headers = { ...identity }
  for (const k of IDENTITY_ONLY) delete h[k]
  if (length !== undefined) h['content-length'] = String(length)
  h['content-encoding'] = coding
  mergeVary(h)
  weakenEtag(h)
  return h
}

/**
 * Headers of an identity response built from an encoded response's headers (a copy): the
 * inverse of encodedHeaders. The encoded bytes' length, ranges and digests go; a strong ETag
 * becomes weak (it named the encoded bytes).
 */
export function decodedHeaders (encoded: Headers): Headers {
  const h: Headers = { ...encoded }
  delete h['content-encoding']
  for (const k of IDENTITY_ONLY) delete h[k]
  mergeVary(h)
  weakenEtag(h)
  return h
}

/**
 * True when Content-Encoding is present but names no coding: `identity` (in any case; RFC 9110
 * §8.4 reserves it for Accept-Encoding, but an origin may send it) or an empty value. Such a
 * body is uncoded: the field is dropped (withoutContentEncoding) and the body treated as any.
 */
export function namesNoCoding (h: Headers): boolean {
  const ce = first(h['content-encoding'])
  if (ce === undefined) return false
  const c = ce.trim()
  return c === '' || c.toLowerCase() === 'identity'
}

/** A copy of `h` without Content-Encoding. */
export function withoutContentEncoding (h: Headers): Headers {
  const out: Headers = { ...h }
  delete out['content-encoding']
  return out
}

/** True when a Cache-Control value (response or request) has no-transform. */
export function hasNoTransform (h: Headers): boolean {
  const cc = h['cache-control']
  if (cc === undefined) return false
  const s = Array.isArray(cc) ? cc.join(',') : cc
  return s.length >= 12 && /(^|,)\s*no-transform\s*(,|$)/i.test(s)
}
