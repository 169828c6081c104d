// Who the client is and what the upstream is told about it: the trusted-proxy list
// (listen.trustedProxies), the client address behind trusted proxies, and the X-Forwarded-*
// headers. A leaf: config/compile.ts, the pipeline, the upstream stage and WebSocket
// tunnels all use these functions.
import { BlockList, isIPv6 } from 'node:net'
import type { Headers } from './types.js'

/**
 * A valid Host value: an RFC 3986 host (reg-name or IP literal) with an optional port, less
 * the comma. RFC 3986 allows `,` in a reg-name, but no DNS name has one, and a Host such as
 * `evil.test,x.example.com` would match a `*.example.com` route and reach the origin as a
 * list in X-Forwarded-Host: refused with 400 like any other bad Host.
 */
export const HOST_VALUE = /^(?:(?:[A-Za-z0-9\-._~!$&'()*+;=]|%[0-9A-Fa-f]{2})*|\[[0-9A-Fa-f:.]+\])(?::\d*)?$/

/** Number of Host header lines (names compared without regard to case). */
export function hostLines (raw: string[]): number {
  let n = 0
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]
    if (k.length === 4 && k.toLowerCase() === 'host') n++
  }
  return n
}

/** Strip the IPv4-mapped IPv6 prefix Node reports on dual-stack sockets. */
export function normaliseIp (ip: string | undefined): string {
  if (!ip) return ''
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip
}

export function compileTrust (list: readonly string[]): BlockList | null {
  if (list.length === 0) return null
  const bl = new BlockList()
  for (const entry of list) {
    const [addr, bits] = entry.split('/')
    const type = isIPv6(addr) ? 'ipv6' : 'ipv4'
    if (bits === undefined) bl.addAddress(addr, type)
    else bl.addSubnet(addr, Number(bits), type)
  }
  return bl
}

function isTrusted (trust: BlockList | null, ip: string): boolean {
  if (trust === null || ip === '') return false
  return trust.check(ip, isIPv6(ip) ? 'ipv6' : 'ipv4')
}

/** The client's scheme, as X-Forwarded-Proto says it: https on a TLS socket (listen.tls). */
export function schemeOf (socket: object): 'http' | 'https' {
  return (socket as { encrypted?: boolean }).encrypted === true ? 'https' : 'http'
}

/**
 * An X-Forwarded-For entry as an address: some proxies append the client's port
 * (`203.0.113.7:51234`, `[2001:db8::1]:51234`), which would otherwise make every connection of
 * one client a client of its own (its own rate-limit bucket, its own hash target).
 */
export function forwardedIp (entry: string): string {
  const s = entry.trim()
  if (s.startsWith('[')) {
    const end = s.indexOf(']')
    return end === -1 ? s : normaliseIp(s.slice(1, end))
  }
  const colon = s.indexOf(':')
  // One colon after a dotted address is a port; an IPv6 address has at least two.
  if (colon !== -1 && s.indexOf(':', colon + 1) === -1 && s.lastIndexOf('.', colon) !== -1) return s.slice(0, colon)
  return normaliseIp(s)
}

/** The client address: the peer, or the right-most untrusted address of a trusted proxy chain. */
export function resolveClientIp (headers: Headers, peerRaw: string | undefined, trust: BlockList | null): string {
  const peer = normaliseIp(peerRaw)
  if (!isTrusted(trust, peer)) return peer
  const prior = headers['x-forwarded-for']
  if (prior === undefined) return peer
  const chain = (Array.isArray(prior) ? prior.join(',') : prior).split(',')
  let client = peer
  for (let i = chain.length - 1; i >= 0; i--) {
    const ip = forwardedIp(chain[i])
    if (ip === '') continue
    client = ip
    if (!isTrusted(trust, ip)) break
  }
  return client
}

/**
 * Forwarding, URL-rewrite and host-override headers never taken from an untrusted client (with
 * every x-forwarded-*). X-Host and X-HTTP-Host-Override are read as the request's host by some
 * frameworks and proxies, as X-Forwarded-Host is: from a client they would change the absolute
 * URLs an origin builds while the cache keys the entry by Host alone.
 */
const UNTRUSTED_DROP = new Set(['forwarded', 'x-real-ip', 'x-original-url', 'x-rewrite-url', 'x-original-host', 'x-host', 'x-http-host-override'])

/**
 * A forwarding header's name (lower case): those applyForwarding alone decides, dropped from an
 * untrusted client and kept from a trusted proxy. src/upstream/headers.ts reads it too: a
 * client's Connection may not remove them (connectionMayRemove).
 */
export function isForwardingName (k: string): boolean {
  return UNTRUSTED_DROP.has(k) || k.startsWith('x-forwarded-')
}

const UPPER = /[A-Z]/

/**
 * A host as the origin is told it, in lower case (hosts are case-insensitive, RFC 3986 §3.2.2;
 * nginx's `$host` is lower-cased too). The cache keys by the lower-cased Host, so an origin
 * that answered `Example.COM` otherwise than `example.com` (a case-sensitive canonical-host
 * redirect) would store that answer for every client of the host. The string itself when it
 * has no upper-case letter, which is nearly always: one regex test, no allocation.
 */
export function lowerHost (host: string): string {
  return UPPER.test(host) ? host.toLowerCase() : host
}

/**
 * A forwarding header's name spelt with underscores (`x_forwarded_for`, `x-forwarded_host`):
 * CGI, WSGI, Rack and PHP-FPM map `-` and `_` alike to HTTP_X_FORWARDED_FOR, so such a field
 * reaches the origin as the header Sluice sets and may win over it. No proxy writes them: they
 * are dropped from every client, trusted or not (nginx drops any name with `_` by default).
 */
function isUnderscoreForwarding (k: string): boolean {
  return k.indexOf('_') !== -1 && isForwardingName(k.replace(/_/g, '-'))
}

/**
 * Resolve the client address and set the forwarding headers, in place on `headers`.
 * `clientHost` is the Host the client sent (undefined or empty: none, and no X-Forwarded-Host);
 * X-Forwarded-Host gets it in lower case. A trusted proxy's own X-Forwarded-Host is kept as sent.
 * From an untrusted peer, X-Forwarded-* and Forwarded are replaced, not appended to; from a
 * trusted proxy the chain is kept and the client is the right-most untrusted address in it.
 * Their spellings with underscores are dropped from both (isUnderscoreForwarding).
 */
export function applyForwarding (headers: Headers, peerRaw: string | undefined, trust: BlockList | null, clientHost?: string, proto: 'http' | 'https' = 'http'): string {
  const peer = normaliseIp(peerRaw)
  // X-Forwarded-Host is the client's Host (lower case: lowerHost) or nothing: `headers` is the
  // upstream copy, whose Host is by now the upstream's own (unless preserveHost), so it is never
  // the fallback.
  const host = clientHost === '' ? undefined : clientHost
  if (!isTrusted(trust, peer)) {
    // Any other forwarding or rewrite header from an untrusted client could change what the
    // origin answers (absolute URLs, the routed path) without being in the cache key: dropped.
    for (const k in headers) if (isForwardingName(k) || isUnderscoreForwarding(k)) delete headers[k]
    headers['x-forwarded-for'] = peer
    headers['x-forwarded-proto'] = proto
    if (host !== undefined) headers['x-forwarded-host'] = lowerHost(host)
    else delete headers['x-forwarded-host']
    delete headers.forwarded
    return peer
  }
  for (const k in headers) if (isUnderscoreForwarding(k)) delete headers[k]
  const prior = headers['x-forwarded-for']
  const chain = prior === undefined ? [] : (Array.isArray(prior) ? prior.join(',') : prior).split(',').map((s) => s.trim()).filter(Boolean)
  let client = peer
  for (let i = chain.length - 1; i >= 0; i--) {
    const ip = normaliseIp(chain[i])
    client = ip
    if (!isTrusted(trust, ip)) break
  }
  chain.push(peer)
  headers['x-forwarded-for'] = chain.join(', ')
  if (headers['x-forwarded-proto'] === undefined) headers['x-forwarded-proto'] = proto
  if (headers['x-forwarded-host'] === undefined && host !== undefined) headers['x-forwarded-host'] = lowerHost(host)
  return client
}
