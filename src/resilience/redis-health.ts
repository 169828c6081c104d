// Whether the shared (Redis) limiter store answers. One tracker per registry: when a take
// fails, every limiter switches to its local bucket at once, instead of each paying a command
// timeout on every request. While down, one probe per probeIntervalMs (an unref'd timer; for Redis a take on a probe bucket, see bucket-redis.ts)
// notices that Redis is back. Each transition is logged once; each failed command is counted.
import type { Logger } from 'pino'

export interface RedisHealthStatus {
  /** false while limiters use their local buckets because Redis failed. */
  ok: boolean
  since: number
  lastError: string | null
  failures: number
}

export class RedisHealth {
  private ok = true
  private since = Date.now()
  private lastError: string | null = null
  private failures = 0
  private probeTimer: NodeJS.Timeout | null = null
  private probing = false
  private closed = false

  constructor (
    private readonly log: Logger,
    private readonly ping: () => Promise<unknown>,
    private readonly onError: (op: string, err: unknown) => void,
    private readonly probeIntervalMs = 1000,
    /** What holds the shared buckets, for the log lines: Redis, or (workers without Redis) the cluster primary. */
    private readonly what = 'redis'
  ) {}

  get up (): boolean { return this.ok }

  status (): RedisHealthStatus {
    return { ok: this.ok, since: this.since, lastError: this.lastError, failures: this.failures }
  }

  /** A Redis command failed or timed out. */
  failed (op: string, err: unknown): void {
    this.failures++
    this.lastError = err instanceof Error ? err.message : String(err)
    try { this.onError(op, err) } catch { /* a metrics hook must not break the request */ }
    if (!this.ok || this.closed) return
    this.ok = false
    this.since = Date.now()
    this.log.warn({ err: this.lastError }, `${this.what} unavailable: rate limits use local buckets (rate / expectedReplicas) until it answers`)
    this.probeTimer = setInterval(() => this.probe(), this.probeIntervalMs)
    this.probeTimer.unref()
  }

  private probe (): void {
    if (this.probing || this.closed) return
    this.probing = true
    this.ping().then(() => {
      this.probing = false
      this.recovered()
    }, (err: unknown) => {
      this.probing = false
      this.failures++
      this.lastError = err instanceof Error ? err.message : String(err)
      try { this.onError('ratelimit_probe', err) } catch { /* see above */ }
    })
  }

  private recovered (): void {
    if (this.ok || this.closed) return
    this.ok = true
    this.since = Date.now()
    if (this.probeTimer) clearInterval(this.probeTimer)
    this.probeTimer = null
    this.log.info(`${this.what} answers again: rate limits are shared again`)
  }

  close (): void {
    this.closed = true
    if (this.probeTimer) clearInterval(this.probeTimer)
    this.probeTimer = null
  }
}
