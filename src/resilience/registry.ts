// Resilience state that outlives config reloads, keyed by upstream and route name: the
// upstream guards (budget, breaker, retry policy) and the per-client limiters. A reload calls
// reconcile(): what is new is created, what is unchanged is kept as is, what changed is
// updated in place (a breaker keeps its state, a bucket keeps its tokens), what was removed
// is dropped. Holders of a dropped guard (requests still in flight) can keep using it.
// Its inputs are the compiled config, schema defaults already applied at load; reconcile()
// only builds objects from it and cannot fail half-way (it runs after the snapshot swap).
import { Value } from '@sinclair/typebox/value'
import type { Logger } from 'pino'
import type { UpstreamConfig } from '../config/schema.js'
import type { Metrics } from '../observability/metrics.js'
import type { SluiceError } from '../errors.js'
import type { Headers } from '../types.js'
import { MemoryBucketStore } from './bucket-memory.js'
import { RedisBucketStore, type RedisClient } from './bucket-redis.js'
import { UpstreamBudget } from './budget.js'
import { Breaker } from './breaker.js'
import { ClientLimiter } from './client-limiter.js'
import {
  CircuitBreakerSchema, RetrySchema,
  type CircuitBreakerConfig, type ClientRateLimitConfig, type RetryConfig
} from './config.js'
import { UpstreamGuard } from './guard.js'
import { Limiter, type SharedStore, type SharedBucketStore } from './limiter.js'
import { RedisHealth, type RedisHealthStatus } from './redis-health.js'
import { RetryPolicy } from './retry.js'

export interface ResilienceDeps {
  metrics: Metrics
  log: Logger
  /** The shared Redis client (created and closed by the caller), or null for memory only. */
  redis: RedisClient | null
  /** Prefix of every key (config redis.keyPrefix); limiter keys get `rl:` after it. */
  redisPrefix: string
  /** A limiter command slower than this falls back to the local bucket (config redis.commandTimeoutMs). */
  commandTimeoutMs?: number
  /** While Redis is down, how often to ping it. */
  probeIntervalMs?: number
  /** Called for every failed Redis command; by default counts sluice_redis_errors_total{op}. */
  onRedisError?: (op: string, err: unknown) => void
  /**
   * Used only when `redis` is null: buckets shared some other way (a cluster worker passes the
   * primary's, src/cluster/ipc-buckets.ts). Its failures are not Redis errors and are not counted.
   */
  sharedBuckets?: SharedBucketStore | null
}

/** The parts of an upstream's config (as loaded: schema defaults applied) this registry reads. */
export type UpstreamResilienceInput = Readonly<Pick<UpstreamConfig, 'rateLimit' | 'circuitBreaker' | 'retry'> & { timeoutMs?: number }>

/** The parts of a compiled route (RouteEntry) this registry reads. */
export interface RouteResilienceInput {
  name: string
  rateLimit?: Readonly<ClientRateLimitConfig> | null
  /** The route's deadline and upstream: the breaker's half-open probes may run that long. */
  timeoutMs?: number
  upstream?: { name: string }
}

export interface ResilienceStatus {
  redis: ({ configured: true } & RedisHealthStatus) | { configured: false }
  /** Present when the buckets are shared without Redis (held by the cluster primary). */
  buckets?: { held: 'primary' } & RedisHealthStatus
  upstreams: Record<string, ReturnType<UpstreamGuard['status']>>
  clients: Record<string, ReturnType<ClientLimiter['status']>>
}

interface GuardRecord {
  guard: UpstreamGuard
  limiter: Limiter | null
  keys: { rateLimit: string; circuitBreaker: string; retry: string }
}

interface ClientEntry { limiter: ClientLimiter; bucket: Limiter; key: string }

// The pass-through guard's settings: the schema defaults, taken once, with the breaker off.
const PASS_THROUGH_BREAKER: CircuitBreakerConfig = Object.freeze({ ...(Value.Default(CircuitBreakerSchema, {}) as CircuitBreakerConfig), enabled: false })
const PASS_THROUGH_RETRY: RetryConfig = Object.freeze(Value.Default(RetrySchema, {}) as RetryConfig)

export class ResilienceRegistry {
  private readonly upstreams = new Map<string, GuardRecord>()
  private readonly clients = new Map<string, ClientEntry>()
  private readonly shared: SharedStore | null
  private readonly log: Logger
  private passThrough: UpstreamGuard | null = null

  constructor (private readonly deps: ResilienceDeps) {
    this.log = deps.log.child({ component: 'resilience' })
    const onError = deps.onRedisError ?? ((op: string) => deps.metrics.redisErrors.labels(op).inc())
    if (deps.redis) {
      const store = new RedisBucketStore(deps.redis, `${deps.redisPrefix}rl:`, deps.commandTimeoutMs ?? 250)
      this.shared = { store, health: new RedisHealth(this.log, () => store.ping(), onError, deps.probeIntervalMs ?? 1000) }
    } else if (deps.sharedBuckets) {
      const store = deps.sharedBuckets
      this.shared = { store, health: new RedisHealth(this.log.child({ buckets: store.kind }), () => store.ping(), () => {}, deps.probeIntervalMs ?? 1000, 'the cluster primary') }
    } else {
      this.shared = null
    }
  }

  /** Bring the registry in line with a new config (call before swapping the snapshot in). */
  reconcile (upstreams: Readonly<Record<string, UpstreamResilienceInput>>, routes: readonly RouteResilienceInput[]): void {
    const { metrics } = this.deps
    for (const [name, u] of Object.entries(upstreams)) {
      const rl = u.rateLimit ?? null
      const cb = u.circuitBreaker
      const rt = u.retry
      const keys = { rateLimit: JSON.stringify(rl), circuitBreaker: JSON.stringify(cb), retry: JSON.stringify(rt) }
      const cur = this.upstreams.get(name)
      if (cur === undefined) {
        const limiter = rl ? this.newLimiter(`up:${name}`, rl, false) : null
        const budget = new UpstreamBudget(name, metrics, limiter, rl)
        const breaker = new Breaker(name, cb, metrics, this.log)
        const retries = metrics.upstreamRetries.labels(metrics.upstreamLabel(name))
        const retry = new RetryPolicy(rt, () => retries.inc())
        this.upstreams.set(name, { guard: new UpstreamGuard(name, budget, breaker, retry), limiter, keys })
        continue
      }
      if (keys.rateLimit !== cur.keys.rateLimit) {
        if (rl && cur.limiter) cur.limiter.update(rl)
        else cur.limiter = rl ? this.newLimiter(`up:${name}`, rl, false) : null
        cur.guard.budget.configure(cur.limiter, rl)
      }
      if (keys.circuitBreaker !== cur.keys.circuitBreaker) cur.guard.breaker.reconfigure(cb)
      if (keys.retry !== cur.keys.retry) cur.guard.retry.configure(rt)
      cur.keys = keys
    }
    for (const [name, u] of Object.entries(upstreams)) {
      let longest = u.timeoutMs ?? 10_000
      for (const r of routes) if (r.upstream?.name === name && r.timeoutMs !== undefined && r.timeoutMs > longest) longest = r.timeoutMs
      this.upstreams.get(name)?.guard.breaker.setLongestAttemptMs(longest)
    }
    for (const [name, e] of this.upstreams) {
      if (!(name in upstreams)) {
        e.guard.breaker.close()
        this.upstreams.delete(name)
      }
    }

    const seen = new Set<string>()
    for (const r of routes) {
      if (!r.rateLimit?.perClient) continue
      seen.add(r.name)
      const pc = r.rateLimit.perClient
      const key = JSON.stringify(pc)
      const cur = this.clients.get(r.name)
      if (cur === undefined) {
        const bucket = this.newLimiter(`cl:${r.name}:`, pc)
        this.clients.set(r.name, { limiter: new ClientLimiter(r.name, metrics, bucket, pc), bucket, key })
      } else if (cur.key !== key) {
        cur.bucket.update(pc)
        cur.limiter.configure(cur.bucket, pc)
        cur.key = key
      }
    }
    for (const name of this.clients.keys()) if (!seen.has(name)) this.clients.delete(name)
  }

  private newLimiter (namespace: string, p: { requestsPerSecond: number; burst: number; expectedReplicas: number }, keyed = true): Limiter {
    return new Limiter(namespace, new MemoryBucketStore(), this.shared, p, keyed)
  }

  /**
   * The guard of an upstream. A name the last reconcile() did not list (a request still on
   * the snapshot before a reload removed it) gets a pass-through guard: no budget, no breaker,
   * no retries.
   */
  upstream (name: string): UpstreamGuard {
    const e = this.upstreams.get(name)
    if (e !== undefined) return e.guard
    if (this.passThrough === null) {
      const { metrics } = this.deps
      const off = new Breaker('_unlisted', PASS_THROUGH_BREAKER, metrics, this.log)
      this.passThrough = new UpstreamGuard('_unlisted', new UpstreamBudget('_unlisted', metrics, null, null), off, new RetryPolicy(PASS_THROUGH_RETRY))
    }
    return this.passThrough
  }

  /** The per-client limiter of a route, or null when the route has none. */
  clientLimiter (route: string): ClientLimiter | null {
    return this.clients.get(route)?.limiter ?? null
  }

  /**
   * The pipeline's client-limit seam (src/stages/client-limit.ts): null to go on, or the 429
   * to answer with; a promise only while the bucket lives in Redis.
   */
  check (route: { name: string }, clientIp: string, headers: Headers): SluiceError | null | Promise<SluiceError | null> {
    const l = this.clients.get(route.name)
    if (l === undefined) return null
    return l.limiter.check({ ip: clientIp, headers })
  }

  /** true when Redis is configured but limiters are on their local buckets (for /readyz). */
  get degraded (): boolean {
    return this.shared !== null && !this.shared.health.up
  }

  /** For GET /admin/upstreams and /readyz. */
  status (): ResilienceStatus {
    const upstreams: ResilienceStatus['upstreams'] = {}
    for (const [name, e] of this.upstreams) upstreams[name] = e.guard.status()
    const clients: ResilienceStatus['clients'] = {}
    for (const [name, e] of this.clients) clients[name] = e.limiter.status()
    return {
      redis: this.shared && this.shared.store.kind === 'redis' ? { configured: true, ...this.shared.health.status() } : { configured: false },
      ...(this.shared && this.shared.store.kind !== 'redis' ? { buckets: { held: this.shared.store.kind, ...this.shared.health.status() } } : {}),
      upstreams,
      clients
    }
  }

  /** Stop timers (breaker windows, the Redis probe). The Redis client is the caller's to close. */
  close (): void {
    for (const e of this.upstreams.values()) e.guard.breaker.close()
    this.passThrough?.breaker.close()
    this.upstreams.clear()
    this.clients.clear()
    this.shared?.health.close()
  }
}

export function createResilienceRegistry (deps: ResilienceDeps): ResilienceRegistry {
  return new ResilienceRegistry(deps)
}
