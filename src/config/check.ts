// Semantic checks that a schema cannot express: references between sections, URLs,
// duplicate names, ambiguous routes and unsafe combinations.
import { isIP } from 'node:net'
import { NAME, type Config } from './schema.js'
import { TOKEN, targetId } from '../upstream/config.js'

const TOKEN_RE = new RegExp(TOKEN)
const NAME_RE = new RegExp(NAME)

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

/** A target URL: http(s), no query, fragment or credentials. Returns it when usable. */
function checkTargetUrl (raw: string, segments: (string | number)[], out: CheckFinding[]): URL | undefined {
  let url: URL
  try { url = new URL(raw) } catch {
    out.push({ segments, message: `not a valid URL: ${JSON.stringify(raw.replace(/\/\/[^/]*@/, '//***@'))}` })
    return undefined
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') out.push({ segments, message: `the scheme must be http or https, not ${url.protocol.replace(':', '')}` })
  else if (url.search || url.hash) out.push({ segments, message: 'the URL must not have a query or fragment' })
  else if (url.username || url.password) out.push({ segments, message: 'credentials in the URL are not supported; send them as a header from the origin side' })
  else return url
  return undefined
}

/** Headers a route's edits may not touch: hop-by-hop, framing, Host, and those Sluice sets itself. */
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authenticate', 'proxy-authorization']
const REQUEST_RESERVED = new Set([...HOP_BY_HOP, 'host', 'content-length', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'forwarded', 'via', 'traceparent', 'tracestate'])
const RESPONSE_RESERVED = new Set([...HOP_BY_HOP, 'content-length', 'content-encoding', 'content-range', 'via', 'age', 'cache-status', 'date'])

function checkRouteEdits (r: Config['routes'][number], i: number, config: Config, out: CheckFinding[]): void {
  const rid = config.requestId?.header?.toLowerCase()
  for (const side of ['request', 'response'] as const) {
    const edits = r.headers?.[side]
    if (!edits || typeof edits !== 'object') continue
    const reserved = side === 'request' ? REQUEST_RESERVED : RESPONSE_RESERVED
    const refuse = (name: string, segs: (string | number)[]) => {
      const n = name.toLowerCase()
      if (reserved.has(n) || n === rid) out.push({ segments: segs, message: `${name} cannot be edited here: Sluice manages it${n === 'host' ? ' (use the upstream\'s preserveHost)' : ''}` })
    }
    for (const [name, value] of Object.entries(edits.set ?? {})) {
      if (!TOKEN_RE.test(name)) out.push({ segments: ['routes', i, 'headers', side, 'set', name], message: `not a header name (RFC 9110 token): ${JSON.stringify(name)}` })
      refuse(name, ['routes', i, 'headers', side, 'set', name])
      // Tab, visible ASCII and Latin-1 only: what HTTP/1.1 and Node's own checks accept. The
      // response head is written without Node's per-response checks (src/send.ts), so a value
      // is checked here, once, and a bad one is a config error with its line.
      if (typeof value === 'string' && /[^\t\x20-\x7e\x80-\xff]/.test(value)) out.push({ segments: ['routes', i, 'headers', side, 'set', name], message: 'a header value may hold only tab, visible ASCII and Latin-1 characters (not CR, LF, NUL or other control characters)' })
    }
    ;(edits.remove ?? []).forEach((name, j) => { if (typeof name === 'string') refuse(name, ['routes', i, 'headers', side, 'remove', j]) })
  }
  const rw = r.rewrite
  if (rw?.stripPrefix !== undefined && rw.stripPrefix.length > 1 && rw.stripPrefix.endsWith('/')) {
    out.push({ segments: ['routes', i, 'rewrite', 'stripPrefix'], message: 'write the prefix without a trailing slash (/svc strips /svc and /svc/...)' })
  }
  if (rw?.stripPrefix !== undefined && r.match?.pathPrefix && !(r.match.pathPrefix + '/').startsWith(rw.stripPrefix + (rw.stripPrefix === '/' ? '' : '/')) && !r.match.pathPrefix.startsWith(rw.stripPrefix + '/')) {
    out.push({ segments: ['routes', i, 'rewrite', 'stripPrefix'], message: `does not match the route's pathPrefix ${JSON.stringify(r.match.pathPrefix)}: some requests would keep their path`, warning: true })
  }
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
    if (up === null || typeof up !== 'object') continue
    const at = ['upstreams', name]
    // The schema's name pattern does not reach a key named __proto__ (the YAML parser makes it
    // an own key); compiled, it would replace the upstream map's prototype.
    if (!NAME_RE.test(name)) { out.push({ segments: at, message: `not a valid upstream name (${NAME})` }); continue }
    const hasUrl = typeof up.url === 'string'
    const hasTargets = Array.isArray(up.targets)
    if (hasUrl === hasTargets) {
      out.push({ segments: at, message: hasUrl ? 'set url or targets, not both' : 'needs url (one target) or targets (several)' })
      continue
    }
    const seen = new Map<string, number>()
    const urls: [string, (string | number)[]][] = hasUrl
      ? [[up.url as string, [...at, 'url']]]
      : (up.targets ?? []).map((t, i) => [typeof t === 'string' ? t : t?.url, typeof t === 'string' ? [...at, 'targets', i] : [...at, 'targets', i, 'url']] as [string, (string | number)[]])
    let https = false
    urls.forEach(([raw, segs], i) => {
      if (typeof raw !== 'string') return
      const url = checkTargetUrl(raw, segs, out)
      if (!url) return
      if (url.protocol === 'https:') https = true
      // A target is known by its id (host:port), so two may not share one, whatever their paths.
      const key = targetId(url)
      const prev = seen.get(key)
      if (prev !== undefined) out.push({ segments: segs, message: `duplicate target ${key} (also targets[${prev}]): targets are told apart by host and port` })
      else seen.set(key, i)
    })
    if (https && up.tls?.rejectUnauthorized === false) {
      out.push({ segments: [...at, 'tls', 'rejectUnauthorized'], message: 'TLS certificate verification is OFF for this upstream', warning: true })
    }
    if (up.balance !== 'hash' && typeof up.hashKey === 'string' && up.hashKey !== 'ip' && hasTargets) {
      out.push({ segments: [...at, 'hashKey'], message: `hashKey is used only with balance: hash (balance is ${up.balance})`, warning: true })
    }
    if (up.healthCheck && up.healthCheck.timeoutMs >= up.healthCheck.intervalMs) {
      out.push({ segments: [...at, 'healthCheck', 'timeoutMs'], message: `must be shorter than healthCheck.intervalMs (${up.healthCheck.intervalMs})` })
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
    checkRouteEdits(r, i, config, out)
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

  if (config.listen.http2 === true && !config.listen.tls) {
    out.push({ segments: ['listen', 'http2'], message: 'HTTP/2 needs listen.tls (browsers speak h2 only over TLS; cleartext h2c is not offered)' })
  }
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
