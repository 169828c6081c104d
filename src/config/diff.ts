// What a reload changes, in words: routes and upstreams added, removed or changed.
import type { Snapshot, UpstreamEntry } from './compile.js'

function byName<T extends { name: string }> (xs: readonly T[]): Map<string, T> {
  return new Map(xs.map((x) => [x.name, x]))
}

function routeShape (r: Snapshot['routes'][number]): string {
  return JSON.stringify({ host: r.host, pathPrefix: r.pathPrefix, methods: r.methods ? [...r.methods] : null, upstream: r.upstream.name, timeoutMs: r.timeoutMs, websocket: r.websocket, maxBodyBytes: r.maxBodyBytes, serverTiming: r.serverTiming, retryNonIdempotent: r.retryNonIdempotent, cache: r.cache, compression: r.compression, rateLimit: r.rateLimit, rewrite: r.rewrite, headerEdits: r.headerEdits })
}

/** Which targets a changed upstream gained, lost or re-weighted: ` (+ target a:80, - target b:80)`. */
function targetChanges (o: UpstreamEntry, u: UpstreamEntry): string {
  const was = new Map(o.targets.map((t) => [t.id, t.weight]))
  const now = new Map(u.targets.map((t) => [t.id, t.weight]))
  const parts: string[] = []
  for (const [id, w] of now) {
    const old = was.get(id)
    if (old === undefined) parts.push(`+ target ${id}`)
    else if (old !== w) parts.push(`~ target ${id} weight ${old} → ${w}`)
  }
  for (const id of was.keys()) if (!now.has(id)) parts.push(`- target ${id}`)
  return parts.length === 0 ? '' : ` (${parts.join(', ')})`
}

export function diffSnapshots (prev: Snapshot, next: Snapshot): string[] {
  const out: string[] = []
  const a = byName(prev.routes); const b = byName(next.routes)
  for (const [n, r] of b) {
    const o = a.get(n)
    if (!o) out.push(`+ route ${n}`)
    else if (routeShape(o) !== routeShape(r)) out.push(`~ route ${n}`)
  }
  for (const n of a.keys()) if (!b.has(n)) out.push(`- route ${n}`)
  for (const [n, u] of Object.entries(next.upstreams)) {
    const o = prev.upstreams[n]
    if (!o) out.push(`+ upstream ${n}`)
    else if (JSON.stringify(o.config) !== JSON.stringify(u.config)) out.push(`~ upstream ${n}${targetChanges(o, u)}`)
    // The same tls.caFile path with new contents (both sides read from disk).
    else if (o.tls.ca && u.tls.ca && !o.tls.ca.equals(u.tls.ca)) out.push(`~ upstream ${n} (tls.caFile contents)`)
  }
  for (const n of Object.keys(prev.upstreams)) if (!(n in next.upstreams)) out.push(`- upstream ${n}`)
  const top = ['listen', 'admin', 'redis', 'log', 'server', 'cache', 'shutdownGraceMs'] as const
  for (const k of top) {
    if (JSON.stringify(prev.config[k]) !== JSON.stringify(next.config[k])) out.push(`~ ${k}`)
  }
  return out
}

/**
 * Whether `listen` changed in a way a reload cannot apply: anything but listen.tls's files
 * (a new pair, or a new client CA file, serves new connections at the reload) and
 * tls.minVersion (set on the listener's secure context at the reload).
 */
export function listenNeedsRestart (prev: Snapshot['config'], next: Snapshot['config']): boolean {
  const shape = (c: Snapshot['config']) => JSON.stringify({ ...c.listen, tls: c.listen.tls ? { client: c.listen.tls.caFile !== undefined, handshakeTimeoutMs: c.listen.tls.handshakeTimeoutMs } : null })
  return shape(prev) !== shape(next)
}

/** The warning (log line and POST /admin/reload answer) for a `listen` change that waits for the restart. */
export const LISTEN_RESTART_WARNING = 'a change to "listen" (other than the certificate files and tls.minVersion) takes effect at the next restart'

/**
 * The changed keys that are read once at start, so a reload cannot apply them: each gets a
 * warning. Everything else in the file applies at the reload. (`listen` is checked by the
 * gateway itself: its certificate files do reload.)
 */
export function restartKeys (prev: Snapshot['config'], next: Snapshot['config']): string[] {
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)
  const out: string[] = []
  for (const k of ['admin', 'redis', 'server', 'workers'] as const) if (!same(prev[k], next[k])) out.push(k)
  for (const k of ['memory', 'targetedField', 'coalesceAcrossReplicas', 'hitForMissMaxKeys'] as const) if (!same(prev.cache[k], next.cache[k])) out.push(`cache.${k}`)
  if (prev.metrics.maxLabelValues !== next.metrics.maxLabelValues) out.push('metrics.maxLabelValues')
  return out
}
