// Path normalisation, done once before routing: the path that is routed is the path that is
// forwarded, so `/public/%2e%2e/admin` can never reach a route it should not.
// - percent-encoded unreserved characters are decoded (so %2e is a dot) and hex is upper-cased
// - repeated slashes are merged (`//private//x` is `/private/x`, as nginx's merge_slashes and
//   Envoy's merge_slashes), so `//private/` cannot skip a `/private/` route; the merged path
//   is the one forwarded. `server.mergeSlashes: false` keeps them, for routing and forwarding
//   alike (the two never differ).
// - `;` path parameters are forwarded as they are (nginx and Envoy keep them too), but routes
//   are matched without them (stages/route.ts), so `/private;a/x`, which an origin that drops
//   parameters (Tomcat, Jetty, Spring) serves as `/private/x`, takes the `/private/` route;
//   dot segments with parameters are refused (below)
// - dot segments are removed (RFC 3986 §5.2.4)
// - NUL (%00), invalid percent-encoding and, unless allowed, encoded slashes (%2F) and
//   backslashes (%5C) are rejected with 400 SLUICE_ERR_BAD_PATH, and so are dot segments with
//   path parameters (`/..;/`, `/.;x/`), which servlet containers resolve as dots
import { SluiceError } from '../errors.js'

const HEX = /^[0-9A-Fa-f]{2}$/
/** A `.` or `..` segment followed by `;` parameters. */
const DOT_PARAMS = /\/\.{1,2};/
const MULTI_SLASH = /\/{2,}/g

function isUnreserved (c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) ||
    c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e
}

/**
 * The request limits every request and WebSocket upgrade has, checked before the path is
 * normalised: a request target longer than maxUrlBytes (414), more header lines than
 * maxHeadersCount (431; Node keeps one line past it so that the excess is refused, not
 * silently dropped). null when within both.
 */
export function requestLimitError (url: string, headerLines: number, server: { maxUrlBytes: number, maxHeadersCount: number }): SluiceError | null {
  if (url.length > server.maxUrlBytes) return new SluiceError('SLUICE_ERR_URI_TOO_LONG')
  if (headerLines > server.maxHeadersCount) return new SluiceError('SLUICE_ERR_HEADERS_TOO_LARGE', `More than ${server.maxHeadersCount} header lines`)
  return null
}

/**
 * A request's header lines as HTTP/1.1 counts them (rawHeaders pairs). HTTP/2's pseudo-headers
 * are its request line, not header lines, except :authority, which stands for Host when the
 * request has no host field. A WebSocket over h2 (src/upstream/websocket.ts) is counted the
 * same way.
 */
export function headerLineCount (rawHeaders: string[], httpVersionMajor: number): number {
  const pairs = rawHeaders.length / 2
  if (httpVersionMajor !== 2) return pairs
  let pseudo = 0
  let authority = false
  let host = false
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]
    if (name.charCodeAt(0) === 58 /* : */) { pseudo++; if (name === ':authority') authority = true } else if (name === 'host') host = true // h2 field names are lower case
  }
  return pairs - pseudo + (authority && !host ? 1 : 0)
}

function bad (why: string): SluiceError {
  return new SluiceError('SLUICE_ERR_BAD_PATH', `The request path is not valid: ${why}`)
}

/** Remove `.` and `..` segments; `..` never climbs above the root. */
export function removeDotSegments (path: string): string {
  const segs = path.split('/')
  const out: string[] = []
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i]
    if (s === '.') { if (i === segs.length - 1) out.push(''); continue }
    if (s === '..') { out.pop(); if (i === segs.length - 1) out.push(''); continue }
    out.push(s)
  }
  return '/' + out.join('/')
}

/**
 * Normalise the path part of a request target. Returns the input unchanged (no allocation)
 * when it has nothing to normalise, which is the common case.
 */
export function normalisePath (path: string, allowEncodedSlashes = false, mergeSlashes = true): string {
  if (path.charCodeAt(0) !== 47 /* / */) {
    if (path === '*') return path
    throw bad('it must start with /')
  }
  const hasPct = path.indexOf('%') !== -1
  const hasDot = path.indexOf('/.') !== -1
  const hasDouble = mergeSlashes && path.indexOf('//') !== -1
  if (!hasPct && !hasDot && !hasDouble && path.indexOf('\\') === -1) return path
  if (path.indexOf('\\') !== -1) throw bad('a backslash is not allowed')
  let p = path
  if (hasPct) {
    let out = ''
    let last = 0
    for (let i = p.indexOf('%'); i !== -1; i = p.indexOf('%', i + 1)) {
      const hex = p.slice(i + 1, i + 3)
      if (!HEX.test(hex)) throw bad('invalid percent-encoding')
      const c = parseInt(hex, 16)
      if (c === 0) throw bad('an encoded NUL is not allowed')
      if ((c === 0x2f || c === 0x5c) && !allowEncodedSlashes) throw bad('an encoded slash or backslash is not allowed')
      out += p.slice(last, i) + (isUnreserved(c) ? String.fromCharCode(c) : '%' + hex.toUpperCase())
      last = i + 3
      i += 2
    }
    p = out + p.slice(last)
  }
  // Merged before dot segments are resolved (`/a//../b` is `/b`), as nginx does.
  if (mergeSlashes && p.indexOf('//') !== -1) p = p.replace(MULTI_SLASH, '/')
  if (p.indexOf('/.') !== -1) {
    // `/..;x/` is `..` to Tomcat, Jetty and Spring, which drop path parameters before resolving
    // dots, and a plain segment to everyone else: an ambiguity that bypasses prefix routes.
    if (DOT_PARAMS.test(p)) throw bad('a dot segment with parameters (such as /..;/) is not allowed')
    p = removeDotSegments(p)
  }
  return p
}
