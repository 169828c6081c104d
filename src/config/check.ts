// Semantic checks that a schema cannot express: references between sections, URLs,
// duplicate names, ambiguous routes and unsafe combinations.
import { isIP } from 'node:net'
import type { Config } from './schema.js'

export interface CheckFinding {
  segments: (string | number)[]
  message: string
  /** A warning is logged; it does not stop the load. */
  warning?: boolean
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost'])

export function isLoopback (host: string): boolean {
  // 127.0.0.0/8 as an address only: a host name such as 127.example.com can resolve anywhere.
  return LOOPBACK.has(host) || (host.startsWith('127.') && isIP(host) === 4)
}

/** Validate a CIDR or a bare address (IPv4 or IPv6). */
export function isCidr (s: string): boolean {
  const [addr, bits, extra] = s.split('/')
  if (extra !== undefined) return false
  const v = isIP(addr)
  if (v === 0) return false
  if (bits === undefined) return true
  if (!/^\d+$/.test(bits)) return false
  return Number(bits) <= (v === 4 ? 32 : 128)
}

/** Same method coverage is ambiguous; a route listing methods beats one without, so that pair is not. */
function methodsOverlap (a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  if (!a && !b) return true
  if (!a || !b) return false
  return a.some((m) => b.includes(m))
}

export function checkConfig (config: Config, _raw: Record<string, unknown>): CheckFinding[] {
  const out: CheckFinding[] = []
  for (const [name, up] of Object.entries(config.upstreams)) {
    // Checks also run on a config the schema rejected (to report every issue at once): skip what is not an upstream.
    if (up === null || typeof up !== 'object' || typeof up.url !== 'string') continue
    let url: URL | undefined
    try { url = new URL(up.url) } catch { out.push({ segments: ['upstreams', name, 'url'], message: `not a valid URL: ${JSON.stringify(up.url.replace(/\/\/[^/]*@/, '//***@'))}` }) }
    if (url) {
      if (url.protocol !== 'http:' && url.protocol !== 'https:') out.push({ segments: ['upstreams', name, 'url'], message: `the scheme must be http or https, not ${url.protocol.replace(':', '')}` })
      else if (url.search || url.hash) out.push({ segments: ['upstreams', name, 'url'], message: 'the URL must not have a query or fragment' })
      else if (url.username || url.password) out.push({ segments: ['upstreams', name, 'url'], message: 'credentials in the URL are not supported; send them as a header from the origin side' })
      if (url.protocol === 'https:' && up.tls.rejectUnauthorized === false) {
        out.push({ segments: ['upstreams', name, 'tls', 'rejectUnauthorized'], message: 'TLS certificate verification is OFF for this upstream', warning: true })
      }
    }
  }
  if (Object.keys(config.upstreams).length === 0) out.push({ segments: ['upstreams'], message: 'at least one upstream is required' })

  const names = new Map<string, number>()
  config.routes.forEach((r, i) => {
    const prev = names.get(r.name)
    if (prev !== undefined) out.push({ segments: ['routes', i, 'name'], message: `duplicate route name "${r.name}" (also routes[${prev}])` })
    else names.set(r.name, i)
    if (!Object.hasOwn(config.upstreams, r.upstream)) {
      const known = Object.keys(config.upstreams).join(', ')
      out.push({ segments: ['routes', i, 'upstream'], message: `unknown upstream "${r.upstream}" (known: ${known || 'none'})` })
    }
    const host = r.match.host
    if (host !== '*' && !/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(host) && isIP(host) === 0) {
      out.push({ segments: ['routes', i, 'match', 'host'], message: `not a host name pattern (lower case, exact or *.suffix, or *): ${JSON.stringify(host)}` })
    }
    for (let j = 0; j < i; j++) {
      const o = config.routes[j]
      if (o.match.pathPrefix === r.match.pathPrefix && o.match.host === host && methodsOverlap(o.match.methods, r.match.methods)) {
        out.push({ segments: ['routes', i, 'match'], message: `matches the same requests as routes[${j}] ("${o.name}"): same host, path prefix and methods` })
      }
    }
  })

  config.listen.trustedProxies.forEach((p, i) => {
    if (!isCidr(p)) out.push({ segments: ['listen', 'trustedProxies', i], message: `not an IP address or CIDR: ${JSON.stringify(p)}` })
  })
  if (!isLoopback(config.admin.host) && config.admin.token === '') {
    out.push({ segments: ['admin', 'host'], message: `the admin port on a non-loopback address (${config.admin.host}) requires admin.token` })
  }
  if (config.admin.port !== 0 && config.admin.port === config.listen.port && config.admin.port !== 0) {
    out.push({ segments: ['admin', 'port'], message: 'the admin port must differ from listen.port' })
  }
  // Node refuses to start a server whose header deadline is longer than its request deadline.
  if (config.server.requestTimeoutMs > 0 && config.server.headersTimeoutMs > config.server.requestTimeoutMs) {
    out.push({ segments: ['server', 'headersTimeoutMs'], message: `must not be longer than server.requestTimeoutMs (${config.server.requestTimeoutMs})` })
  }
  if (config.redis.url) {
    let u: URL | undefined
    try { u = new URL(config.redis.url) } catch { out.push({ segments: ['redis', 'url'], message: 'not a valid URL (redis://host:port or rediss://...)' }) }
    if (u && u.protocol !== 'redis:' && u.protocol !== 'rediss:') out.push({ segments: ['redis', 'url'], message: `the scheme must be redis or rediss, not ${u.protocol.replace(':', '')}` })
  }
  return out
}
