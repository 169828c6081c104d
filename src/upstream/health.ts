// Active health checks: every healthCheck.intervalMs, a GET of healthCheck.path to each target
// of an upstream that configures them, over a connection of its own (a saturated request pool
// never fails a check). A status in expectStatus within timeoutMs passes; anything else fails.
// unhealthyThreshold failures in a row take a target out of rotation, healthyThreshold passes
// bring it back. A passing check that began after a passive ejection ends that ejection (as
// Envoy's successful_active_health_check_uneject_host does by default), whether or not the
// checks ever marked the target unhealthy. Each process runs its own checks (one per interval per target; with workers,
// each worker checks, so the upstream sees one check per interval per worker process).
import { Client } from 'undici'
import type { Logger } from 'pino'
import type { Balancer as UpstreamSet, TargetState as Target } from './balancer.js'

/** What a check changed: the target's health, or (still healthy) the end of its passive ejection. */
export type HealthChange = 'healthy' | 'unhealthy' | 'uneject'

interface Probe {
  set: UpstreamSet
  target: Target
  client: Client
  /** The probe's settings when it was built; a reload that changes them makes a new probe. */
  key: string
  timer: NodeJS.Timeout | null
  stopped: boolean
}

export class HealthChecker {
  private probes = new Map<Target, Probe>()

  constructor (private readonly log: Logger, private readonly onChange: (set: UpstreamSet, t: Target, change: HealthChange) => void) {}

  /** Check the targets of these sets (the live ones after a reload); stop checking the rest. */
  reconcile (sets: UpstreamSet[]): void {
    const next = new Map<Target, Probe>()
    for (const set of sets) {
      const hc = set.upstream.healthCheck
      for (const t of set.targets) {
        if (hc === null) {
          // Checks turned off: a target they had taken out comes back.
          if (!t.healthy) { t.healthy = true; t.checkFails = 0; this.onChange(set, t, 'healthy') }
          continue
        }
        const key = JSON.stringify(hc)
        const cur = this.probes.get(t)
        if (cur && cur.key === key) { cur.set = set; next.set(t, cur); continue }
        const u = set.upstream
        const client = new Client(t.entry.origin, {
          pipelining: 1,
          keepAliveTimeout: Math.max(1000, hc.intervalMs * 2),
          headersTimeout: hc.timeoutMs,
          bodyTimeout: hc.timeoutMs,
          connect: { timeout: Math.min(hc.timeoutMs, u.config.connectTimeoutMs), ...u.tls }
        })
        const p: Probe = { set, target: t, client, key, timer: null, stopped: false }
        next.set(t, p)
        // Spread the first checks over a tenth of the interval so targets are not probed in lockstep.
        this.schedule(p, Math.floor(Math.random() * Math.min(250, hc.intervalMs / 10)))
      }
    }
    for (const [t, p] of this.probes) if (next.get(t) !== p) this.stop(p)
    this.probes = next
  }

  private schedule (p: Probe, delay: number): void {
    if (p.stopped) return
    p.timer = setTimeout(() => { this.run(p).catch(() => {}) }, delay)
    p.timer.unref()
  }

  private async run (p: Probe): Promise<void> {
    const hc = p.set.upstream.healthCheck
    if (p.stopped || hc === null) return
    const t = p.target
    const started = Date.now()
    let ok = false
    let detail: string
    const ac = new AbortController()
    const timer = setTimeout(() => ac.abort(), hc.timeoutMs)
    try {
      const res = await p.client.request({
        path: hc.path,
        method: 'GET',
        headers: { host: t.entry.hostHeader, 'user-agent': 'sluice-health-check', accept: '*/*' },
        signal: ac.signal
      })
      await res.body.dump({ limit: 65536 }).catch(() => {})
      ok = hc.expectStatus.includes(res.statusCode)
      detail = `status ${res.statusCode}`
    } catch (err) {
      const e = err as { code?: string, message?: string, name?: string }
      detail = ac.signal.aborted ? `no answer in ${hc.timeoutMs} ms` : (e.code ?? e.name ?? 'error') + (e.message ? `: ${e.message}` : '')
    } finally {
      clearTimeout(timer)
    }
    if (p.stopped) return
    t.lastCheck = { at: started, ok, detail }
    if (ok) {
      t.checkFails = 0
      t.checkPasses++
      if (!t.healthy) {
        if (t.checkPasses >= hc.healthyThreshold) { t.healthy = true; this.onChange(p.set, t, 'healthy') }
      } else if (t.ejectedUntil > Date.now() && started >= t.ejectedAt) {
        // Healthy all along but passively ejected: a check sent after the ejection passed.
        this.onChange(p.set, t, 'uneject')
      }
    } else {
      t.checkPasses = 0
      t.checkFails++
      this.log.debug({ upstream: p.set.upstream.name, target: t.id, detail, fails: t.checkFails }, 'health check failed')
      if (t.healthy && t.checkFails >= hc.unhealthyThreshold) { t.healthy = false; this.onChange(p.set, t, 'unhealthy') }
    }
    this.schedule(p, Math.max(0, hc.intervalMs - (Date.now() - started)))
  }

  private stop (p: Probe): void {
    p.stopped = true
    if (p.timer) clearTimeout(p.timer)
    p.client.destroy().catch(() => {})
  }

  close (): void {
    for (const p of this.probes.values()) this.stop(p)
    this.probes.clear()
  }
}
