// Turns a validated Config into the frozen Snapshot that requests read: per-route settings
// with the `defaults:` block and schema defaults merged in, upstream references resolved,
// routes sorted for matching. Requests never parse or merge config.
import { createHash } from 'node:crypto'
import { Value } from '@sinclair/typebox/value'
import type { Config, UpstreamConfig } from './schema.js'
import { CacheRouteSchema, type CacheRouteConfig } from '../httpcache/config.js'
import { CompressionRouteSchema, type CompressionRouteConfig } from '../compress/config.js'
import { buildRouter } from '../stages/route.js'
import { compileTrust } from '../forwarding.js'
import { compileRequestId } from '../request-id.js'
import type { RouteEntry, Snapshot, UpstreamEntry, UpstreamTlsOptions, TargetEntry, PathRewrite, HeaderEdits } from './snapshot.js'
import { targetId, type RewriteConfig, type RouteHeadersConfig } from '../upstream/config.js'
import type { TlsMaterial } from '../edge/tls.js'

export type { RouteEntry, Snapshot, UpstreamEntry, UpstreamTlsOptions, TargetEntry } from './snapshot.js'

type Obj = Record<string, unknown>
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v)

/** Deep merge of plain objects; arrays and scalars from `over` replace. */
export function deepMerge (base: unknown, over: unknown): unknown {
  if (over === undefined) return structuredClone(base)
  if (!isObj(base) || !isObj(over)) return structuredClone(over)
  const out: Obj = structuredClone(base)
  for (const [k, v] of Object.entries(over)) out[k] = deepMerge(out[k], v)
  return out
}

export function deepFreeze<T> (o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o)
    for (const v of Object.values(o as Obj)) deepFreeze(v)
  }
  return o
}

function refuse (): never { throw new TypeError('Cannot change a frozen config snapshot') }

/** Object.freeze does not stop Set#add: its mutators are replaced by ones that throw (has() is untouched). */
function freezeSet<T> (set: Set<T>): ReadonlySet<T> {
  Object.defineProperties(set, { add: { value: refuse }, delete: { value: refuse }, clear: { value: refuse } })
  return Object.freeze(set)
}

/** The trusted-proxy list, likewise: check() is untouched. */
function freezeBlockList<T extends object | null> (bl: T): T {
  if (bl === null) return bl
  Object.defineProperties(bl, { addAddress: { value: refuse }, addRange: { value: refuse }, addSubnet: { value: refuse } })
  return Object.freeze(bl)
}

function targetEntry (raw: string, weight: number): TargetEntry {
  const u = new URL(raw)
  return {
    id: targetId(u),
    origin: u.origin,
    basePath: u.pathname === '/' ? '' : u.pathname.replace(/\/$/, ''),
    hostHeader: u.host,
    weight
  }
}

function upstreamEntry (name: string, cfg: UpstreamConfig, ca: Buffer | undefined): UpstreamEntry {
  const tls: UpstreamTlsOptions = { rejectUnauthorized: cfg.tls.rejectUnauthorized }
  if (cfg.tls.servername) tls.servername = cfg.tls.servername
  if (ca !== undefined) tls.ca = ca
  const targets = cfg.targets
    ? cfg.targets.map((t) => typeof t === 'string' ? targetEntry(t, 1) : targetEntry(t.url, t.weight ?? 1))
    : [targetEntry(cfg.url as string, 1)]
  const hk = cfg.hashKey ?? 'ip'
  return {
    name,
    targets: Object.freeze(targets.map((t) => Object.freeze(t))),
    balance: cfg.balance ?? 'round-robin',
    hashKey: Object.freeze(hk.startsWith('header:') ? { kind: 'header', name: hk.slice(7).toLowerCase() } : { kind: 'ip' }),
    healthCheck: cfg.healthCheck ?? null,
    outlier: cfg.outlierDetection,
    config: cfg,
    tls: Object.freeze(tls)
  }
}

function compileRewrite (r: RewriteConfig | undefined): PathRewrite | null {
  if (!r || (!r.stripPrefix && !r.addPrefix)) return null
  const strip = r.stripPrefix === undefined || r.stripPrefix === '/' ? '' : r.stripPrefix.replace(/\/$/, '')
  const add = r.addPrefix === undefined || r.addPrefix === '/' ? '' : r.addPrefix.replace(/\/$/, '')
  return strip === '' && add === '' ? null : { strip, add }
}

function compileHeaderEdits (h: RouteHeadersConfig | undefined): HeaderEdits | null {
  if (!h) return null
  const set = (m: Record<string, string> | undefined) => Object.entries(m ?? {}).map(([k, v]) => Object.freeze([k.toLowerCase(), v] as const))
  const rm = (l: string[] | undefined) => (l ?? []).map((k) => k.toLowerCase())
  const e = { requestSet: set(h.request?.set), requestRemove: rm(h.request?.remove), responseSet: set(h.response?.set), responseRemove: rm(h.response?.remove) }
  return e.requestSet.length + e.requestRemove.length + e.responseSet.length + e.responseRemove.length === 0 ? null : e
}

/**
 * `raw` is the user's config before defaults (so the `defaults:` block can be merged
 * under each route before schema defaults fill the rest); `config` is the validated one.
 * `ca` holds the contents of each upstream's tls.caFile, read at load (LoadedConfig.ca):
 * compile reads no file. Without it (a diff of a config from elsewhere) no extra CA is set.
 */
export function compile (config: Config, raw: Obj, file: string, ca: Readonly<Record<string, Buffer>> = {}, listenTls: TlsMaterial | null = null): Snapshot {
  const upstreams: Record<string, UpstreamEntry> = {}
  const hash = createHash('sha256').update(JSON.stringify(config))
  for (const [name, cfg] of Object.entries(config.upstreams)) {
    const bytes = Object.hasOwn(ca, name) ? ca[name] : undefined
    upstreams[name] = upstreamEntry(name, cfg, bytes)
    // A CA file rewritten in place is a change too (same path, new certificates).
    if (bytes !== undefined) hash.update(`\0ca:${name}\0`).update(bytes)
  }
  // A certificate or key rewritten in place (a rotated secret) is a change too.
  if (listenTls !== null) hash.update('\0listen-tls\0').update(listenTls.cert).update(listenTls.key).update(listenTls.ca ?? '')
  const rawDefaults = isObj(raw.defaults) ? raw.defaults : {}
  const rawRoutes = Array.isArray(raw.routes) ? raw.routes as Obj[] : []
  const routes: RouteEntry[] = config.routes.map((r, index) => {
    const rr = rawRoutes[index] ?? {}
    const cache = Value.Default(CacheRouteSchema, deepMerge(rawDefaults.cache ?? {}, rr.cache ?? {})) as CacheRouteConfig
    const compression = Value.Default(CompressionRouteSchema, deepMerge(rawDefaults.compression ?? {}, rr.compression ?? {})) as CompressionRouteConfig
    const rateLimit = (rr.rateLimit ?? rawDefaults.rateLimit) ? (r.rateLimit ?? config.defaults?.rateLimit ?? null) : null
    const upstream = upstreams[r.upstream]
    return {
      name: r.name,
      index,
      host: r.match.host,
      pathPrefix: r.match.pathPrefix,
      methods: r.match.methods ? freezeSet(new Set(r.match.methods)) : null,
      upstream,
      timeoutMs: r.timeoutMs ?? config.defaults?.timeoutMs ?? upstream.config.timeoutMs,
      websocket: r.websocket,
      maxBodyBytes: r.maxBodyBytes ?? config.defaults?.maxBodyBytes ?? 0,
      cache,
      compression,
      rateLimit: rateLimit && rateLimit.perClient ? rateLimit : null,
      retryNonIdempotent: r.retry?.nonIdempotent ?? false,
      serverTiming: r.serverTiming ?? config.defaults?.serverTiming ?? false,
      rewrite: compileRewrite(r.rewrite),
      headerEdits: compileHeaderEdits(r.headers)
    }
  })
  const version = hash.digest('hex').slice(0, 12)
  const snap: Snapshot = {
    version,
    loadedAt: Date.now(),
    file,
    config,
    routes,
    upstreams,
    router: Object.freeze(buildRouter(routes)),
    trust: freezeBlockList(compileTrust(config.listen.trustedProxies)),
    requestId: compileRequestId(config.requestId),
    listenTls
  }
  // The router holds compiled closures; freeze the data, not the functions' internals.
  deepFreeze(config)
  for (const r of routes) { deepFreeze(r.cache); deepFreeze(r.compression); deepFreeze(r.rateLimit); deepFreeze(r.rewrite); deepFreeze(r.headerEdits); Object.freeze(r) }
  for (const u of Object.values(upstreams)) Object.freeze(u)
  Object.freeze(routes)
  Object.freeze(upstreams)
  if (listenTls !== null) Object.freeze(listenTls)
  return Object.freeze(snap)
}
