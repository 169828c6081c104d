// Stage 1, route: match host + method + path prefix to a compiled RouteEntry.
// Precedence (README "Route matching"): the longest path prefix wins; for the same prefix an
// exact host beats a `*.suffix` host, which beats `*`; then a route listing methods beats one
// without; then the order in the file. Two routes that would match the same requests are
// rejected when the config loads (src/config/check.ts).
import type { RouteEntry, Router } from '../config/snapshot.js'

export type { Router } from '../config/snapshot.js'

function hostRank (h: string): number {
  return h === '*' ? 0 : h.startsWith('*.') ? 1 : 2
}

/**
 * Strip the port and one trailing dot (`example.com.` is the same fully qualified name as
 * `example.com`, and must not miss its exact-host route), and lower-case, allocating only
 * when needed.
 */
export function normaliseHost (host: string): string {
  let end = host.length
  if (host.charCodeAt(0) === 91 /* [ */) {
    const close = host.indexOf(']')
    end = close === -1 ? host.length : close + 1
  } else {
    const colon = host.indexOf(':')
    if (colon !== -1) end = colon
    if (end > 1 && host.charCodeAt(end - 1) === 46 /* . */) end--
  }
  const h = end === host.length ? host : host.slice(0, end)
  return /[A-Z]/.test(h) ? h.toLowerCase() : h
}

/**
 * The path with each segment's `;` parameters removed (`/private;a/x` is `/private/x`, and so
 * is `/;a/private/x`), for matching only: Tomcat, Jetty and Spring drop them before they
 * route, so a request that kept them would otherwise skip a `/private/` route and still reach
 * `/private/x` at such an origin. The path forwarded keeps them.
 */
export function withoutPathParams (path: string): string {
  let out = ''
  let from = 0
  for (let semi = path.indexOf(';'); semi !== -1; semi = path.indexOf(';', from)) {
    out += path.slice(from, semi)
    const slash = path.indexOf('/', semi)
    if (slash === -1) return out
    // A segment that is only parameters (`/;x/private/`) goes, slash and all: a servlet origin
    // reads `/;x/private/y` as `/private/y`, and `//private/y` would miss the `/private/` route.
    from = path.charCodeAt(semi - 1) === 47 /* / */ ? slash + 1 : slash
  }
  return out + path.slice(from)
}

export function buildRouter (routes: readonly RouteEntry[]): Router {
  const sorted = [...routes].sort((a, b) =>
    (b.pathPrefix.length - a.pathPrefix.length) ||
    (hostRank(b.host) - hostRank(a.host)) ||
    ((b.methods ? 1 : 0) - (a.methods ? 1 : 0)) ||
    (a.index - b.index))
  const anyHost = sorted.every((r) => r.host === '*')
  return {
    match (rawHost, method, rawPath) {
      const host = anyHost || rawHost === undefined ? '' : normaliseHost(rawHost)
      const path = rawPath.indexOf(';') === -1 ? rawPath : withoutPathParams(rawPath)
      for (let i = 0; i < sorted.length; i++) {
        const r = sorted[i]
        if (!path.startsWith(r.pathPrefix)) continue
        if (r.methods !== null && !r.methods.has(method) && !(method === 'HEAD' && r.methods.has('GET'))) continue
        if (!anyHost && r.host !== '*') {
          if (r.host.charCodeAt(0) === 42 /* * */) {
            if (!(host.endsWith(r.host.slice(1)) && host.length > r.host.length - 1)) continue
          } else if (host !== r.host) continue
        }
        return r
      }
      return null
    }
  }
}
