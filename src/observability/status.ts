// The status snapshot behind GET /admin/status, the /dashboard page and `sluice status`:
// routes, upstreams (pool, breaker, limiter), cache size and hit ratio, latency percentiles.
import type { Metrics } from './metrics.js'
import type { Snapshot } from '../config/snapshot.js'

export interface LatencySummary { count: number; p50: number | null; p95: number | null; p99: number | null }

/** Quantile from cumulative histogram buckets, by linear interpolation inside the bucket (as PromQL does). */
export function quantileFromBuckets (q: number, buckets: { le: number; count: number }[]): number | null {
  const total = buckets.at(-1)?.count ?? 0
  if (total === 0) return null
  const rank = q * total
  let prevLe = 0
  let prevCount = 0
  for (const b of buckets) {
    if (b.count >= rank) {
      if (!Number.isFinite(b.le)) return prevLe
      const inBucket = b.count - prevCount
      return inBucket === 0 ? b.le : prevLe + (b.le - prevLe) * ((rank - prevCount) / inBucket)
    }
    prevLe = b.le
    prevCount = b.count
  }
  return prevLe
}

export async function latencyByRoute (metrics: Metrics): Promise<Record<string, LatencySummary>> {
  const data = await metrics.httpDuration.get()
  const perRoute = new Map<string, Map<number, number>>()
  for (const v of data.values) {
    if (!String(v.metricName).endsWith('_bucket')) continue
    const route = String(v.labels.route)
    const rawLe = (v.labels as Record<string, string | number | undefined>).le
    const le = rawLe === '+Inf' ? Infinity : Number(rawLe)
    let m = perRoute.get(route)
    if (!m) { m = new Map(); perRoute.set(route, m) }
    m.set(le, (m.get(le) ?? 0) + v.value) // summed over cache results
  }
  const out: Record<string, LatencySummary> = {}
  for (const [route, m] of perRoute) {
    const buckets = [...m.entries()].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count }))
    out[route] = {
      count: buckets.at(-1)?.count ?? 0,
      p50: quantileFromBuckets(0.5, buckets),
      p95: quantileFromBuckets(0.95, buckets),
      p99: quantileFromBuckets(0.99, buckets)
    }
  }
  return out
}

export async function cacheRatios (metrics: Metrics): Promise<Record<string, { hits: number; lookups: number; ratio: number | null }>> {
  const data = await metrics.httpRequests.get()
  const out: Record<string, { hits: number; lookups: number; ratio: number | null }> = {}
  for (const v of data.values) {
    const cache = String(v.labels.cache)
    if (cache === 'none') continue
    const r = out[String(v.labels.route)] ??= { hits: 0, lookups: 0, ratio: null }
    r.lookups += v.value
    if (cache === 'hit' || cache === 'stale' || cache === 'revalidated' || cache === 'coalesced') r.hits += v.value
  }
  for (const r of Object.values(out)) r.ratio = r.lookups ? r.hits / r.lookups : null
  return out
}

export interface StatusDeps {
  current: () => Snapshot
  metrics: Metrics
  upstreams: () => Record<string, unknown>
  cacheStats: () => Record<string, unknown>
  readiness: () => { ready: boolean; degraded: string[] }
  startedAt: number
  version: string
}

export async function collectStatus (deps: StatusDeps) {
  const snap = deps.current()
  const [latency, cache] = await Promise.all([latencyByRoute(deps.metrics), cacheRatios(deps.metrics)])
  const ready = deps.readiness()
  return {
    version: deps.version,
    configVersion: snap.version,
    uptimeSeconds: Math.round((Date.now() - deps.startedAt) / 1000),
    status: !ready.ready ? 'not-ready' : ready.degraded.length ? 'degraded' : 'ready',
    degraded: ready.degraded,
    routes: snap.routes.map((r) => ({
      name: r.name,
      host: r.host,
      pathPrefix: r.pathPrefix,
      methods: r.methods ? [...r.methods] : null,
      upstream: r.upstream.name,
      cache: r.cache.enabled,
      compression: r.compression.enabled,
      clientLimit: r.rateLimit?.perClient ? `${r.rateLimit.perClient.requestsPerSecond}/s burst ${r.rateLimit.perClient.burst}` : null,
      latency: latency[r.name] ?? { count: 0, p50: null, p95: null, p99: null },
      cacheHitRatio: cache[r.name]?.ratio ?? null
    })),
    upstreams: deps.upstreams(),
    cache: deps.cacheStats(),
    memory: { rssBytes: process.memoryUsage().rss, heapUsedBytes: process.memoryUsage().heapUsed }
  }
}
