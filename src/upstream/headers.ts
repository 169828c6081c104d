// Header rules at the upstream boundary: hop-by-hop headers (RFC 9110 §7.6.1), and any
// header named in Connection, never cross the gateway in either direction.
import type { Headers } from '../types.js'
import { SluiceError } from '../errors.js'
import { isForwardingName, lowerHost } from '../forwarding.js'

/** Hop-by-hop headers, plus `expect` (Node answers 100-continue itself) and `host` (set per upstream). */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding',
  'upgrade', 'proxy-authenticate', 'proxy-authorization', 'http2-settings'
])

export const VIA = '1.1 sluice'

/**
 * Via's entry for a request received as HTTP/`version` (Node's httpVersion: `1.0`, `1.1`,
 * `2.0`): RFC 9110 §7.6.3 names the protocol the message came in with. A response always
 * comes from the upstream over HTTP/1.1 (undici), hence VIA.
 */
function viaFor (version: string | undefined): string {
  return version === '1.0' ? '1.0 sluice' : version === '2.0' || version === '2' ? '2 sluice' : VIA
}

/**
 * Method-override headers: Sluice routes, limits and caches by the request's own method, so a
 * header that makes the origin act on another one (a GET run as a DELETE, then cached as the
 * GET) never reaches it.
 */
const METHOD_OVERRIDE = new Set(['x-http-method-override', 'x-http-method', 'x-method-override'])

/**
 * Fields a client's Connection may not remove: Host (forwarded with preserveHost; without it
 * undici would put the upstream's own host there, another virtual host than the one routed) and
 * the forwarding, rewrite and host-override headers, which src/forwarding.ts alone decides
 * (isForwardingName: dropped or replaced from an untrusted client, kept or appended to from a
 * trusted proxy). A front proxy that passes its client's Connection on would otherwise let the
 * client erase the chain (`Connection: X-Forwarded-For`) and leave the origin the proxy's own,
 * trusted address as the client's, or erase the proxy's X-Original-URL.
 */
function connectionMayRemove (k: string): boolean {
  return k !== 'host' && !isForwardingName(k)
}

/** Names listed in a Connection header, lower case. */
const KEEP_ALIVE: readonly string[] = Object.freeze(['keep-alive'])
const CLOSE: readonly string[] = Object.freeze(['close'])

export function connectionTokens (value: string | string[] | undefined): readonly string[] {
  if (value === undefined) return []
  // Nearly every request says one of these: no split, trim or lower-casing for them.
  if (value === 'keep-alive' || value === 'Keep-Alive') return KEEP_ALIVE
  if (value === 'close' || value === 'Close') return CLOSE
  const s = Array.isArray(value) ? value.join(',') : value
  const out: string[] = []
  for (const t of s.split(',')) {
    const n = t.trim().toLowerCase()
    if (n) out.push(n)
  }
  return out
}

export function isHopByHop (name: string): boolean {
  return HOP_BY_HOP.has(name)
}

/** Remove hop-by-hop headers and those named in Connection, in place. */
export function stripHopByHop (h: Headers): Headers {
  const conn = h.connection
  if (conn !== undefined) for (const n of connectionTokens(conn)) delete h[n]
  for (const k in h) if (HOP_BY_HOP.has(k)) delete h[k]
  return h
}

function appendVia (existing: string | string[] | undefined, via: string = VIA): string {
  if (existing === undefined) return via
  return (Array.isArray(existing) ? existing.join(', ') : existing) + ', ' + via
}

/**
 * Headers sent upstream: a copy without hop-by-hop and method-override headers, with Host and Via set.
 * `hostHeader` null keeps the client's Host (preserveHost), lower-cased (lowerHost).
 * `keep` (lower case) is Sluice's own request-ID field: a client's Connection naming it does
 * not remove it, as it would any other field Connection names (RFC 9110 §7.6.1); nor does it
 * remove Host or the forwarding headers (connectionMayRemove). `httpVersion` is the client's
 * (Node's httpVersion), for Via; absent, 1.1.
 */
export function upstreamRequestHeaders (client: Headers, hostHeader: string | null, keep?: string, httpVersion?: string): Record<string, string | string[]> {
  const conn = client.connection
  const named = conn === undefined ? null : connectionTokens(conn)
  const out: Record<string, string | string[]> = {}
  for (const k in client) {
    const v = client[k]
    // HTTP/2 pseudo-headers (:method, :path, :authority, :scheme) never go upstream.
    if (v === undefined || HOP_BY_HOP.has(k) || k === 'expect' || METHOD_OVERRIDE.has(k) || k.charCodeAt(0) === 58) continue
    if (named !== null && named.includes(k) && k !== keep && connectionMayRemove(k)) continue
    out[k] = v
  }
  if (hostHeader !== null) out.host = hostHeader
  else {
    // preserveHost: the client's Host, in lower case as the cache keys it (lowerHost).
    const h = out.host
    if (typeof h === 'string') out.host = lowerHost(h)
  }
  out.via = appendVia(client.via, viaFor(httpVersion))
  return out
}

/**
 * An upstream Transfer-Encoding other than `chunked` alone (`gzip, chunked`, say): undici takes
 * the chunked framing off and leaves the other codings on the body, and Transfer-Encoding is
 * hop-by-hop, so the client would get bytes in a coding nothing names. Renaming it to
 * Content-Encoding is not the same response (it would change what ETag, Range and the cache
 * mean, and stack on a Content-Encoding already there), so it is refused as nginx (since 1.23,
 * "upstream sent unknown Transfer-Encoding") and Envoy do: 502 SLUICE_ERR_UPSTREAM_PROTOCOL.
 * The error, or null for no coding or `chunked` alone. The upstream stage checks every answer
 * with it before it records the attempt (a refused answer is the target's and the breaker's
 * failure), so clientResponseHeaders never sees such a coding.
 */
export function transferCodingError (v: string | string[] | undefined): SluiceError | null {
  if (v === 'chunked' || v === undefined) return null
  const t = connectionTokens(v)
  if (t.length === 1 && t[0] === 'chunked') return null
  return new SluiceError('SLUICE_ERR_UPSTREAM_PROTOCOL', `The upstream sent Transfer-Encoding "${Array.isArray(v) ? v.join(', ') : v}": only chunked is supported`)
}

/**
 * Response headers toward the client: a copy without hop-by-hop headers (copying keeps the
 * object in V8's fast mode, where `delete` would not), with Via appended. Transfer-Encoding
 * goes with the hop-by-hop fields: the upstream stage has refused any coding but chunked
 * (transferCodingError).
 */
export function clientResponseHeaders (upstream: Headers): Headers {
  const conn = upstream.connection
  const named = conn === undefined ? null : connectionTokens(conn)
  const out: Headers = {}
  for (const k in upstream) {
    if (HOP_BY_HOP.has(k) || (named !== null && named.includes(k))) continue
    out[k] = upstream[k]
  }
  out.via = appendVia(upstream.via)
  return out
}

/**
 * Throw away a response body we will not send. undici's body emits 'error' when destroyed;
 * without a listener that would be an uncaught exception, so one is added first.
 */
export function discard (body: { on (ev: 'error', fn: (err: Error) => void): unknown; destroy (): unknown } | null | undefined): void {
  if (!body) return
  body.on('error', noop)
  body.destroy()
}
function noop (): void {}

/**
 * A response that must carry no body (a HEAD's, a 204, a 304): read what there is to its end,
 * so the connection goes back to the pool (discard would close it), and send none. A body that
 * fails instead (undici fails a 304's when it has a Content-Length) is let go quietly.
 */
export function drainToNull (body: { resume (): unknown, on (ev: 'error', fn: (err: Error) => void): unknown } | null | undefined): null {
  if (body == null) return null
  body.on('error', noop)
  body.resume()
  return null
}
