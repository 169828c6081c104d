// The live side of upstreams: one undici keep-alive pool per target, each upstream's balancer,
// its active health checks, and the per-target metrics. Kept across reloads: a target whose
// origin and pool settings are unchanged keeps its pool, its health and its ejection; a
// changed or removed one gets a new pool, and the old pool closes once its in-flight
// requests (open SSE streams included) are done. A reload first prepares the new pools
// (nothing live changes, and a failure destroys them), then commits them after the swap.
import { createHash } from 'node:crypto'
import { Pool } from 'undici'
import { SluiceError } from '../errors.js'
import type { Logger } from 'pino'
import type { TargetEntry, UpstreamEntry } from '../config/snapshot.js'
import type { Metrics } from '../observability/metrics.js'
import type { FastCounterChild } from '../observability/fast-metrics.js'
import { Balancer, TargetState, type AttemptOutcome } from './balancer.js'
import { HealthChecker, type HealthChange } from './health.js'

/** Outcome classes of sluice_upstream_target_requests_total: 1xx..5xx, then error. */
const CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx', 'error'] as const
export const ERROR_CLASS = 5

/** A target with its pool and metric children. */
export class Target extends TargetState {
  readonly counters: FastCounterChild[]
  constructor (entry: TargetEntry, readonly key: string, readonly pool: Pool, readonly upstreamLabel: string, metrics: Metrics) {
    super(entry)
    this.counters = CLASSES.map((c) => metrics.targetRequests.labels(upstreamLabel, entry.id, c))
  }
}

function poolKey (u: UpstreamEntry, t: TargetEntry): string {
  const c = u.config
  const ca = u.tls.ca ? createHash('sha256').update(u.tls.ca).digest('hex') : null
  return JSON.stringify([t.origin, c.connections, c.connectTimeoutMs, c.keepAliveTimeoutMs, c.bodyTimeoutMs, c.timeoutMs, u.tls.rejectUnauthorized, u.tls.servername ?? null, ca])
}

function createPool (u: UpstreamEntry, t: TargetEntry): Pool {
  const c = u.config
  return new Pool(t.origin, {
    connections: c.connections,
    pipelining: 1,
    keepAliveTimeout: c.keepAliveTimeoutMs,
    headersTimeout: c.timeoutMs,
    bodyTimeout: c.bodyTimeoutMs,
    // The upstream's TLS options as compiled (CA bytes read at load), shared with WebSocket tunnels.
    connect: { timeout: c.connectTimeoutMs, ...u.tls }
  })
}

/** One upstream as requests see it: its balancer over live targets. */
export class UpstreamSet extends Balancer {
  declare readonly targets: Target[]
}

/** New pools built for a config, not yet in use: commit() installs them (after the swap), abort() destroys them. */
export interface PoolPlan {
  /** Install the new sets and retire the replaced and removed pools. Does not throw. */
  commit (): void
  /** Destroy the new pools; the live ones were never touched. */
  abort (): void
}

export interface TargetStatus {
  target: string
  url: string
  weight: number
  healthy: boolean
  ejected: boolean
  ejectedForMs: number
  inFlight: number
  consecutiveErrors: number
  ejections: number
  lastCheck: { at: string, ok: boolean, detail: string } | null
  pool: { connected: number, free: number, pending: number, queued: number, running: number, size: number }
}

export class TargetRegistry {
  private sets = new Map<string, UpstreamSet>()
  private readonly health: HealthChecker

  constructor (private readonly log: Logger, private readonly metrics: Metrics) {
    this.health = new HealthChecker(log, (set, t, change) => this.onHealthChange(set as UpstreamSet, t as Target, change))
  }

  /**
   * Build the sets of a config, reusing each unchanged target (its pool and state) and making
   * pools for new or changed ones, without installing anything. Throws (after destroying what
   * it built) when a pool cannot be created; the live sets are untouched.
   */
  prepare (upstreams: Readonly<Record<string, UpstreamEntry>>): PoolPlan {
    const built: Target[] = []
    const next = new Map<string, UpstreamSet>()
    try {
      for (const [name, u] of Object.entries(upstreams)) {
        const cur = this.sets.get(name)
        const label = this.metrics.upstreamLabel(name)
        const targets = u.targets.map((te) => {
          const key = poolKey(u, te)
          const old = cur?.targets.find((t) => t.key === key && t.id === te.id)
          if (old) return old
          const t = new Target(te, key, createPool(u, te), label, this.metrics)
          built.push(t)
          return t
        })
        next.set(name, new UpstreamSet(u, targets))
      }
    } catch (err) {
      for (const t of built) t.pool.destroy().catch(() => {})
      throw err
    }
    let settled = false
    return {
      commit: () => {
        if (settled) return
        settled = true
        const kept = new Set<Target>()
        for (const s of next.values()) for (const t of s.targets) kept.add(t)
        // Retire first, then set the gauges: a replaced target (new pool settings) has the same
        // upstream and target labels as its successor, and retire() removes that gauge child.
        for (const [name, s] of this.sets) {
          for (const t of s.targets) {
            if (kept.has(t)) continue
            this.retire(name, t)
          }
        }
        for (const s of next.values()) {
          for (const t of s.targets) {
            // A reused target takes the new weight (weights are not part of the pool's key).
            t.entry = s.upstream.targets.find((e) => e.id === t.id) ?? t.entry
            t.weight = t.entry.weight
            this.metrics.targetHealthy.labels(t.upstreamLabel, t.id).set(t.available(Date.now()) ? 1 : 0)
          }
        }
        this.sets = next
        this.health.reconcile([...next.values()])
      },
      abort: () => {
        if (settled) return
        settled = true
        for (const t of built) t.pool.destroy().catch(() => {})
      }
    }
  }

  /** prepare() and commit() at once (start-up: there is no snapshot to swap yet). */
  reconcile (upstreams: Readonly<Record<string, UpstreamEntry>>): void {
    this.prepare(upstreams).commit()
  }

  /**
   * The upstream's current set. Throws SLUICE_ERR_SHUTTING_DOWN once the registry is closed (the
   * end of a drain: a fill's waiters, an upgrade whose limit check outlasted it), and
   * SLUICE_ERR_NO_HEALTHY_TARGET when a reload removed the upstream after the request was routed.
   */
  get (name: string): UpstreamSet {
    const s = this.sets.get(name)
    if (s !== undefined) return s
    if (this.closed) throw new SluiceError('SLUICE_ERR_SHUTTING_DOWN')
    throw new SluiceError('SLUICE_ERR_NO_HEALTHY_TARGET', `upstream "${name}" was removed by a reload`)
  }

  /** The upstream's current set, or undefined when a reload removed it (a request in flight keeps the one it had). */
  find (name: string): UpstreamSet | undefined {
    return this.sets.get(name)
  }

  /** Count an attempt's outcome (metrics, passive ejection). `status` 0 means no response. */
  outcome (set: UpstreamSet, t: Target, status: number, outcome: AttemptOutcome): void {
    if (status === 0) t.counters[ERROR_CLASS].inc()
    else {
      const i = Math.floor(status / 100) - 1
      t.counters[i < 0 ? 0 : i > 4 ? 4 : i].inc()
    }
    if (!set.record(t, outcome)) return
    // A target a reload retired (its pool replaced, a request finishing on the old one): its
    // ejection changes nothing live, and its successor has the same metric labels.
    if (this.sets.get(set.upstream.name)?.targets.includes(t) !== true) return
    const ms = set.upstream.outlier.ejectMs
    this.log.warn({ upstream: set.upstream.name, target: t.id, ejectMs: ms, ejections: t.ejections }, 'upstream target ejected after consecutive failures')
    this.metrics.targetHealthy.labels(t.upstreamLabel, t.id).set(0)
    const until = t.ejectedUntil
    setTimeout(() => {
      if (t.ejectedUntil !== until || this.sets.get(set.upstream.name)?.targets.includes(t) !== true) return
      this.log.info({ upstream: set.upstream.name, target: t.id }, 'upstream target back in rotation after ejection')
      this.metrics.targetHealthy.labels(t.upstreamLabel, t.id).set(t.available(Date.now()) ? 1 : 0)
    }, ms + 1).unref()
  }

  private onHealthChange (set: UpstreamSet, t: Target, change: HealthChange): void {
    const detail = t.lastCheck?.detail
    // Passing active checks also end a passive ejection (as Envoy does by default): the target
    // was seen to recover, so it need not sit out the rest of ejectMs. 'uneject' is that case
    // for a target the checks never took out (the usual one for a passive ejection).
    if (change !== 'unhealthy') { t.ejectedUntil = 0; t.consecutiveErrors = 0 }
    if (change === 'healthy') this.log.info({ upstream: set.upstream.name, target: t.id, detail }, 'upstream target healthy: back in rotation')
    else if (change === 'uneject') this.log.info({ upstream: set.upstream.name, target: t.id, detail }, 'upstream target passed a health check: ejection ended early')
    else this.log.warn({ upstream: set.upstream.name, target: t.id, detail }, 'upstream target unhealthy: out of rotation')
    this.metrics.targetHealthy.labels(t.upstreamLabel, t.id).set(t.available(Date.now()) ? 1 : 0)
  }

  stats (): Record<string, { targets: TargetStatus[], pool: TargetStatus['pool'] }> {
    const out: Record<string, { targets: TargetStatus[], pool: TargetStatus['pool'] }> = {}
    const now = Date.now()
    for (const [name, s] of this.sets) {
      const sum = { connected: 0, free: 0, pending: 0, queued: 0, running: 0, size: 0 }
      const targets = s.targets.map((t): TargetStatus => {
        const p = t.pool.stats
        const pool = { connected: p.connected, free: p.free, pending: p.pending, queued: p.queued, running: p.running, size: p.size }
        for (const k of Object.keys(sum) as (keyof typeof sum)[]) sum[k] += pool[k]
        return {
          target: t.id,
          url: t.entry.origin + t.entry.basePath,
          weight: t.weight,
          healthy: t.healthy,
          ejected: t.ejectedUntil > now,
          ejectedForMs: Math.max(0, t.ejectedUntil - now),
          inFlight: t.inFlight,
          consecutiveErrors: t.consecutiveErrors,
          ejections: t.ejections,
          lastCheck: t.lastCheck ? { at: new Date(t.lastCheck.at).toISOString(), ok: t.lastCheck.ok, detail: t.lastCheck.detail } : null,
          pool
        }
      })
      out[name] = { targets, pool: sum }
    }
    return out
  }

  private retire (name: string, t: Target): void {
    this.metrics.targetHealthy.remove(t.upstreamLabel, t.id)
    t.pool.close().then(
      () => this.log.debug({ upstream: name, target: t.id }, 'old upstream pool closed'),
      (err) => this.log.warn({ upstream: name, target: t.id, err: err.message }, 'old upstream pool did not close cleanly')
    )
  }

  /** Set once close() has run: the gateway is past its drain, and no request can go upstream. */
  closed = false

  async close (): Promise<void> {
    this.closed = true
    this.health.close()
    const all = [...this.sets.values()].flatMap((s) => s.targets)
    this.sets.clear()
    await Promise.all(all.map((t) => t.pool.destroy().catch(() => {})))
  }
}
