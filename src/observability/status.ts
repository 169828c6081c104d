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

// ---------------------------------------------------------------------------------------------
// Status history (issue 16): the status page's charts of the last minutes come from here, so a
// page opened late still shows them. A timer (unref'd, stopped by stop()) reads the prom-client
// families every intervalMs and keeps one sample per tick in a ring buffer (default 2 s x 300 =
// 10 minutes). Reading the families costs what a /metrics scrape costs, once per tick: the
// request path is not touched. GET /admin/status/history serves it (src/admin.ts).

/** One sample: what happened during the `seconds` before `t`. Rates are per second. */
export interface HistorySample {
  /** Unix time in ms, rounded to the interval (so several workers' samples line up). */
  t: number
  /** Length of the interval the sample covers, in seconds. */
  seconds: number
  /** Requests answered (sluice_http_requests_total) and their rate. */
  requests: number
  rps: number
  /** Latency percentiles of the requests answered in the interval (seconds; null when none). */
  p50: number | null
  p99: number | null
  /** Cache lookups (requests on a route with a cache), hits among them, and hits / lookups. */
  cacheLookups: number
  cacheHits: number
  hitRatio: number | null
  /** Upstream 5xx responses plus attempts that got no response (connection errors, timeouts). */
  upstreamErrors: number
  upstreamErrorsPerSecond: number
  /**
   * The interval's latency histogram, sent to the primary only (answer(since, true)): the
   * requests per bucket, one count per bound of HistoryAnswer.le and a last one above them.
   * The primary sums the workers' counts and takes p50 and p99 from the sum, as PromQL's
   * histogram_quantile over sum() does; a worker's own p50s and p99s cannot be combined.
   */
  latency?: number[]
}

export interface HistoryAnswer {
  intervalMs: number
  capacity: number
  samples: HistorySample[]
  /** `t` of the newest sample this process has, whether or not `since` left it out (none: absent). */
  latest?: number
  /** The latency buckets' upper bounds (seconds, +Inf left out) when the samples carry `latency`. */
  le?: number[]
}

const HIT_RESULTS = new Set(['hit', 'stale', 'revalidated', 'coalesced'])

interface Totals { requests: number; lookups: number; hits: number; errors: number; buckets: Map<number, number> }

type Family = { get (): unknown }
interface HistoryMetrics { httpRequests: Family; httpDuration: Family; upstreamDuration: Family }
type Values = { values: { metricName?: string; labels: Record<string, string | number | undefined>; value: number }[] }

async function readTotals (m: HistoryMetrics): Promise<Totals> {
  const [req, dur, up] = await Promise.all([m.httpRequests.get(), m.httpDuration.get(), m.upstreamDuration.get()]) as Values[]
  const t: Totals = { requests: 0, lookups: 0, hits: 0, errors: 0, buckets: new Map() }
  for (const v of req.values) {
    t.requests += v.value
    const cache = String(v.labels.cache)
    if (cache === 'none') continue
    t.lookups += v.value
    if (HIT_RESULTS.has(cache)) t.hits += v.value
  }
  for (const v of dur.values) {
    if (!String(v.metricName).endsWith('_bucket')) continue
    const le = v.labels.le === '+Inf' ? Infinity : Number(v.labels.le)
    t.buckets.set(le, (t.buckets.get(le) ?? 0) + v.value)
  }
  // Upstream errors: attempts answered 5xx, and attempts that got no answer (status_class
  // error). An attempt the client walked away from is in neither: it says nothing of the
  // upstream (sluice_upstream_target_requests_total counts it under error too, so it is not read).
  for (const v of up.values) if (String(v.metricName).endsWith('_count') && (v.labels.status_class === '5xx' || v.labels.status_class === 'error')) t.errors += v.value
  return t
}

/** The sample between two readings of the totals. */
export function sampleBetween (prev: Totals, cur: Totals, t: number, seconds: number): HistorySample {
  const d = (a: number, b: number) => Math.max(0, a - b) // a counter never goes down; a reset reads as 0
  const requests = d(cur.requests, prev.requests)
  const lookups = d(cur.lookups, prev.lookups)
  const hits = d(cur.hits, prev.hits)
  const errors = d(cur.errors, prev.errors)
  const buckets = [...cur.buckets.entries()].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count: d(count, prev.buckets.get(le) ?? 0) }))
  // Per-bucket counts (the buckets above are cumulative), for the primary's merge.
  const latency = buckets.map((b, i) => Math.max(0, b.count - (i > 0 ? buckets[i - 1].count : 0)))
  const s = seconds > 0 ? seconds : 1
  const r3 = (x: number) => Math.round(x * 1000) / 1000
  return {
    t,
    seconds: r3(seconds),
    requests,
    rps: r3(requests / s),
    p50: quantileFromBuckets(0.5, buckets),
    p99: quantileFromBuckets(0.99, buckets),
    cacheLookups: lookups,
    cacheHits: hits,
    hitRatio: lookups ? hits / lookups : null,
    upstreamErrors: errors,
    upstreamErrorsPerSecond: r3(errors / s),
    latency
  }
}

export class StatusHistory {
  readonly intervalMs: number
  readonly capacity: number
  private readonly ring: HistorySample[] = []
  private head = 0 // next write position once the ring is full
  private prev: { totals: Totals; at: number } | null = null
  /** The latency buckets' finite upper bounds, as of the last sample. */
  private le: number[] = []
  private timer: NodeJS.Timeout | undefined
  private running = false
  private busy = false

  constructor (private readonly metrics: HistoryMetrics, opts: { intervalMs?: number; capacity?: number } = {}) {
    this.intervalMs = Math.max(100, opts.intervalMs ?? 2000)
    this.capacity = Math.max(1, opts.capacity ?? 300)
  }

  /** Take the baseline now and sample on every interval boundary of the wall clock. */
  start (): this {
    if (this.running) return this
    this.running = true
    void this.tick(true)
    this.schedule()
    return this
  }

  // One timeout per tick, aimed at the next boundary each time (an interval timer would drift).
  private schedule (): void {
    if (!this.running) return
    let wait = this.intervalMs - (Date.now() % this.intervalMs)
    if (wait < this.intervalMs / 2) wait += this.intervalMs // woke just before a boundary: the next one
    this.timer = setTimeout(() => { void this.tick().finally(() => this.schedule()) }, wait)
    this.timer.unref()
  }

  stop (): void {
    this.running = false
    clearTimeout(this.timer)
    this.timer = undefined
  }

  /** Read the families and append a sample (the first call only takes the baseline). */
  async tick (baselineOnly = false): Promise<void> {
    if (this.busy) return
    this.busy = true
    try {
      const now = Date.now()
      const totals = await readTotals(this.metrics)
      const prev = this.prev
      this.prev = { totals, at: now }
      if (baselineOnly || !prev) return
      const t = Math.round(now / this.intervalMs) * this.intervalMs
      this.le = [...totals.buckets.keys()].filter(Number.isFinite).sort((a, b) => a - b)
      this.push(sampleBetween(prev.totals, totals, t, (now - prev.at) / 1000))
    } catch {
      // A family that cannot be read this time: the next tick tries again.
    } finally {
      this.busy = false
    }
  }

  private push (s: HistorySample): void {
    if (this.ring.length < this.capacity) { this.ring.push(s); return }
    this.ring[this.head] = s
    this.head = (this.head + 1) % this.capacity
  }

  /** The samples, oldest first; only those after `since` (ms) when given. Without their `latency` counts unless `withLatency`. */
  samples (since = -Infinity, withLatency = false): HistorySample[] {
    const all = this.ring.length < this.capacity ? this.ring.slice() : [...this.ring.slice(this.head), ...this.ring.slice(0, this.head)]
    const kept = Number.isFinite(since) ? all.filter((s) => s.t > since) : all
    return withLatency ? kept : kept.map(withoutLatency)
  }

  /** What GET /admin/status/history answers; a worker asked by the primary adds the latency counts (`withLatency`). */
  answer (since?: number, withLatency = false): HistoryAnswer {
    const latest = this.ring.length === 0 ? undefined : this.ring[this.ring.length < this.capacity ? this.ring.length - 1 : (this.head + this.capacity - 1) % this.capacity].t
    const samples = this.samples(since, withLatency)
    return { intervalMs: this.intervalMs, capacity: this.capacity, samples, ...(latest !== undefined ? { latest } : {}), ...(withLatency ? { le: this.le } : {}) }
  }
}

function withoutLatency (s: HistorySample): HistorySample {
  if (s.latency === undefined) return s
  const { latency, ...rest } = s
  void latency
  return rest
}

const histories = new WeakMap<object, StatusHistory>()

/** The running history of one Metrics instance, started on first use (one per process's registry). */
export function historyFor (metrics: HistoryMetrics, opts?: { intervalMs?: number; capacity?: number }): StatusHistory {
  let h = histories.get(metrics)
  if (!h) { h = new StatusHistory(metrics, opts).start(); histories.set(metrics, h) }
  return h
}

/** The history of a Metrics instance if one runs (a worker answers the primary with it). */
export function historyOf (metrics: object): StatusHistory | undefined {
  return histories.get(metrics)
}

/** Forget (and stop) the history of a Metrics instance: on close. */
export function stopHistory (metrics: object): void {
  histories.get(metrics)?.stop()
  histories.delete(metrics)
}

/**
 * Several workers' histories as one: samples with the same `t` are merged. Counts and rates
 * are summed; the hit ratio is recomputed from the summed hits and lookups; p50 and p99 come
 * from the workers' latency histograms summed bucket by bucket (exact, as PromQL's
 * histogram_quantile over a sum). A sample without its counts (a worker of an older build
 * during a rolling restart) falls back to an estimate: p50 the request-weighted mean of the
 * workers' p50s, p99 the highest p99.
 *
 * Only instants every worker has sampled are answered: workers take their samples a few ms
 * apart, and a point answered before the last of them had its own would stay short for good
 * (the page asks only for later points). A worker with no samples yet holds nothing back.
 */
export function mergeHistories (answers: HistoryAnswer[]): HistoryAnswer {
  // A worker's newest sample is `latest`, not its last one answered: asked for the samples
  // after `since` (the page's polls), one that has not sampled the next instant yet answers
  // none, and counted as "no samples yet" it let the others' point out short, for good.
  let complete = Infinity
  for (const a of answers) {
    const s = a?.samples
    const latest = typeof a?.latest === 'number' ? a.latest : s !== undefined && s.length > 0 ? s[s.length - 1].t : undefined
    if (latest !== undefined) complete = Math.min(complete, latest)
  }
  // The counts can be summed only where every worker's buckets have the same bounds. A worker
  // that has answered no request yet has no buckets at all (the histogram's children are made
  // by the first observation): no bounds, and samples with no counts, which add nothing.
  const le = answers.find((a) => a?.le !== undefined && a.le.length > 0)?.le
  const sameLe = le !== undefined && answers.every((a) => a?.le !== undefined && (a.le.length === 0 || (a.le.length === le.length && a.le.every((x, i) => x === le[i]))))
  const byT = new Map<number, HistorySample[]>()
  for (const a of answers) for (const s of a?.samples ?? []) {
    if (s.t > complete) continue
    const list = byT.get(s.t)
    if (list) list.push(s); else byT.set(s.t, [s])
  }
  /** p50 and p99 of the summed histograms, or null when a sample lacks its counts. */
  const exact = (list: HistorySample[]): { p50: number | null; p99: number | null } | null => {
    if (!sameLe || !list.every((s) => Array.isArray(s.latency) && (s.latency.length === le.length + 1 || s.latency.length === 0))) return null
    const sum = new Array<number>(le.length + 1).fill(0)
    for (const s of list) s.latency!.forEach((n, i) => { sum[i] += n })
    let cum = 0
    const buckets = sum.map((n, i) => ({ le: i < le.length ? le[i] : Infinity, count: (cum += n) }))
    return { p50: quantileFromBuckets(0.5, buckets), p99: quantileFromBuckets(0.99, buckets) }
  }
  const samples = [...byT.entries()].sort((a, b) => a[0] - b[0]).map(([t, list]) => {
    const sum = (k: 'requests' | 'rps' | 'cacheLookups' | 'cacheHits' | 'upstreamErrors' | 'upstreamErrorsPerSecond') => list.reduce((a, s) => a + (s[k] ?? 0), 0)
    const withLatency = list.filter((s) => s.p50 !== null && s.requests > 0)
    const weight = withLatency.reduce((a, s) => a + s.requests, 0)
    const lookups = sum('cacheLookups')
    const hits = sum('cacheHits')
    const r3 = (x: number) => Math.round(x * 1000) / 1000
    const q = exact(list) ?? {
      p50: weight ? withLatency.reduce((a, s) => a + (s.p50 as number) * s.requests, 0) / weight : null,
      p99: withLatency.length ? Math.max(...withLatency.map((s) => s.p99 ?? 0)) : null
    }
    return {
      t,
      seconds: Math.max(...list.map((s) => s.seconds)),
      requests: sum('requests'),
      rps: r3(sum('rps')),
      p50: q.p50,
      p99: q.p99,
      cacheLookups: lookups,
      cacheHits: hits,
      hitRatio: lookups ? hits / lookups : null,
      upstreamErrors: sum('upstreamErrors'),
      upstreamErrorsPerSecond: r3(sum('upstreamErrorsPerSecond'))
    }
  })
  const first = answers.find((a) => a)
  return { intervalMs: first?.intervalMs ?? 2000, capacity: first?.capacity ?? 300, samples }
}
