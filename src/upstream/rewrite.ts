// A route's path rewrite and header edits toward the upstream (routes[].rewrite, .headers).
// Both run in the upstream stage only: the cache key, the route match and the access log keep
// the client-facing URL.
import type { PathRewrite, HeaderEdits } from '../config/snapshot.js'
import type { Headers } from '../types.js'

/**
 * Strip `rw.strip` by whole segments (/svc strips /svc, /svc/x and /svc?q, never /svcx), then
 * put `rw.add` in front. `path` is the path and query as forwarded.
 */
export function rewritePath (path: string, rw: PathRewrite): string {
  let p = path
  const n = rw.strip.length
  if (n !== 0 && p.startsWith(rw.strip)) {
    const c = p.charCodeAt(n)
    if (Number.isNaN(c) || c === 47 /* / */ || c === 63 /* ? */) {
      p = p.slice(n)
      if (p.length === 0 || p.charCodeAt(0) === 63) p = '/' + p
    }
  }
  return rw.add.length === 0 ? p : rw.add + p
}

/** Request edits on the headers going upstream (a fresh copy the stage owns). */
export function editRequestHeaders (h: Record<string, string | string[]>, e: HeaderEdits): void {
  for (const k of e.requestRemove) delete h[k]
  for (const [k, v] of e.requestSet) h[k] = v
}

/** Response edits on the upstream's response headers (a copy the stage owns). */
export function editResponseHeaders (h: Headers, e: HeaderEdits): void {
  for (const k of e.responseRemove) delete h[k]
  for (const [k, v] of e.responseSet) h[k] = v
}
