// Every metric family Sluice exports, declared once, on its own prom-client Registry
// (never the global one). The names and labels in the README's metrics table are a fixed
// interface (dashboards and alerts depend on them); labels come only
// from config names and fixed enums. The request path binds label children once per
// (route, method, status class, cache result) and reuses them: no label lookup per request.
import { Registry, Counter, Histogram, Gauge, collectDefaultMetrics } from 'prom-client'
import type { CacheResult } from '../types.js'
import { droppedLogLines } from './logger.js'
import { FastCounter, FastGauge, FastHistogram, type FastCounterChild, type FastHistogramChild } from './fast-metrics.js'

/** OpenTelemetry HTTP duration boundaries (seconds), with three finer edges below 5 ms for cache hits. */
export const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]

/** Methods that get their own label value; anything else is `_OTHER` (as OpenTelemetry does). */
export const KNOWN_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'CONNECT'] as const
const METHOD_INDEX: Record<string, number> = Object.fromEntries(KNOWN_METHODS.map((m, i) => [m, i]))
const OTHER_METHOD = KNOWN_METHODS.length
const METHOD_LABELS = [...KNOWN_METHODS, '_OTHER']
export const CACHE_RESULTS: readonly CacheResult[] = ['none', 'hit', 'miss', 'stale', 'bypass', 'revalidated', 'coalesced']
const CACHE_INDEX: Record<string, number> = Object.fromEntries(CACHE_RESULTS.map((c, i) => [c, i]))
const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx']

export function statusClass (status: number): string {
  const i = Math.floor(status / 100) - 1
  return STATUS_CLASSES[i < 0 ? 0 : i > 4 ? 4 : i]
}

export function methodLabel (method: string): string {
  const i = METHOD_INDEX[method]
  return i === undefined ? '_OTHER' : KNOWN_METHODS[i]
}

type CounterChild = FastCounterChild
type HistogramChild = FastHistogramChild

/** Redis command latency boundaries (seconds): 50 µs to 1 s (commandTimeoutMs is usually far below 1 s). */
export const REDIS_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]
/** Body size boundaries (bytes): 0 (no body), then powers of four from 64 B to 64 MiB. */
export const SIZE_BUCKETS = [0, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
/** Redis commands that get their own `command` label value; any other is `_other`. */
export const REDIS_COMMANDS = ['get', 'set', 'del', 'eval', 'evalsha', 'publish', 'scan', 'hsetnx', 'sadd', 'smembers', 'scard', 'spop', 'pexpire', 'ping', 'memory', 'exists', 'pttl', 'getrange'] as const
/** Why the L1 cache dropped an entry by itself (sluice_cache_evictions_total{reason}). */
export const EVICTION_REASONS = ['size', 'expired'] as const
export type EvictionReason = typeof EVICTION_REASONS[number]

/**
 * The request body's length from its headers: Content-Length, 0 when there is neither a
 * Content-Length nor a Transfer-Encoding (no body), -1 when unknown (a chunked body).
 */
export function declaredBodyBytes (headers: { 'content-length'?: string; 'transfer-encoding'?: string }): number {
  const cl = headers['content-length']
  if (cl !== undefined) { const n = Number(cl); return Number.isFinite(n) && n >= 0 ? n : -1 }
  return headers['transfer-encoding'] === undefined ? 0 : -1
}

/**
 * sluice_cache_events_total: route, result and layer. `layer` is l1 or l2 on hits and empty on
 * every other result; an empty label is left out of the exposition (Prometheus reads an empty
 * label as absent), so the series of the other results keep their two labels. A call with
 * route and result only (CacheCore.event) means layer "".
 */
export class CacheEventCounter extends FastCounter {
  override labels (route: string, result: string, layer = ''): FastCounterChild {
    return super.labels(route, result, layer)
  }

  protected override make (labels: Record<string, string>): FastCounterChild {
    if (labels.layer === '') delete labels.layer
    return super.make(labels)
  }
}

/** Pre-bound children of the per-request families for one route name. */
export class RouteObserver {
  private readonly counters: (CounterChild | undefined)[] = []
  private readonly durations: (HistogramChild | undefined)[] = []
  private readonly requestSize: HistogramChild
  private readonly responseSize: HistogramChild
  constructor (private readonly metrics: Metrics, readonly route: string) {
    this.requestSize = metrics.httpRequestSize.labels(route)
    this.responseSize = metrics.httpResponseSize.labels(route)
  }

  /** Body bytes of one request and its response; a negative count (not known) is not observed. */
  sizes (requestBytes: number, responseBytes: number): void {
    if (requestBytes >= 0) this.requestSize.observe(requestBytes)
    if (responseBytes >= 0) this.responseSize.observe(responseBytes)
  }

  observe (method: string, status: number, cache: CacheResult, seconds: number): void {
    let m = METHOD_INDEX[method]
    if (m === undefined) m = OTHER_METHOD
    let s = Math.floor(status / 100) - 1
    if (s < 0) s = 0; else if (s > 4) s = 4
    const c = CACHE_INDEX[cache] ?? 0
    const idx = (m * 5 + s) * CACHE_RESULTS.length + c
    let counter = this.counters[idx]
    if (counter === undefined) {
      counter = this.metrics.httpRequests.labels(this.route, METHOD_LABELS[m], STATUS_CLASSES[s], CACHE_RESULTS[c])
      this.counters[idx] = counter
    }
    counter.inc()
    let hist = this.durations[c]
    if (hist === undefined) {
      hist = this.metrics.httpDuration.labels(this.route, CACHE_RESULTS[c])
      this.durations[c] = hist
    }
    hist.observe(seconds)
  }
}

export interface MetricsOptions {
  /** Collect Node process metrics (default true). */
  processMetrics?: boolean
  version?: string
  /** Distinct values one label may take before the excess folds into `_other` (default 500). */
  maxLabelValues?: number
}

/**
 * Caps the distinct values of one label. Config names are bounded per load, but names that
 * change across many reloads would otherwise add series forever; the excess folds into
 * `_other`, and sluice_metrics_label_overflow_total counts what was folded.
 */
export class LabelGuard {
  private readonly seen = new Set<string>()
  constructor (private readonly label: string, private readonly max: number, private readonly overflow: Counter) {}
  value (v: string): string {
    if (this.seen.has(v)) return v
    if (this.seen.size < this.max) { this.seen.add(v); return v }
    this.overflow.labels(this.label).inc()
    return '_other'
  }
}

export function createMetrics (opts: MetricsOptions = {}) {
  const registry = new Registry()
  if (opts.processMetrics !== false) collectDefaultMetrics({ register: registry })
  const registers = [registry]
  const m = {
    registry,
    // The families touched on every request use the lean implementation (fast-metrics.ts).
    httpRequests: new FastCounter('sluice_http_requests_total', 'Requests answered, by route, method, status class and cache result', ['route', 'method', 'status_class', 'cache'], registry),
    httpDuration: new FastHistogram('sluice_http_request_duration_seconds', 'Time from request to the last byte sent, by route and cache result', ['route', 'cache'], DURATION_BUCKETS, registry),
    // Bounded: three values (http/1.0, http/1.1, h2).
    protocolRequests: new FastCounter('sluice_http_requests_by_protocol_total', 'Requests answered, by the client\'s protocol: http/1.0, http/1.1 or h2', ['protocol'], registry),
    upstreamDuration: new FastHistogram('sluice_upstream_request_duration_seconds', 'Time from sending to the upstream until its response headers (status_class 1xx..5xx) or until the attempt failed with no response or one Sluice refused (error), by upstream', ['upstream', 'status_class'], DURATION_BUCKETS, registry),
    upstreamInFlight: new FastGauge('sluice_upstream_in_flight_requests', 'Requests in flight toward each upstream', ['upstream'], registry),
    upstreamQueueWait: new Histogram({ name: 'sluice_upstream_queue_wait_seconds', help: 'Time a request waited for the upstream budget', labelNames: ['upstream'], buckets: DURATION_BUCKETS, registers }),
    // Targets of multi-target upstreams (labels bounded: host:port, at most 64 per upstream).
    targetHealthy: new Gauge({ name: 'sluice_upstream_target_healthy', help: 'Whether each upstream target is in rotation: 1 healthy, 0 failed its health checks or ejected', labelNames: ['upstream', 'target'], registers }),
    targetRequests: new FastCounter('sluice_upstream_target_requests_total', 'Attempts sent to each upstream target, by outcome class (1xx..5xx, or error when no response came)', ['upstream', 'target', 'class'], registry),
    upstreamRetries: new Counter({ name: 'sluice_upstream_retries_total', help: 'Retries sent to each upstream', labelNames: ['upstream'], registers }),
    cacheEvents: new CacheEventCounter('sluice_cache_events_total', 'Cache decisions by route and result; hits also by layer (l1 in-process, l2 Redis)', ['route', 'result', 'layer'], registry),
    cacheLeases: new Counter({ name: 'sluice_cache_leases_total', help: 'Fill leases asked of Redis (miss coalescing across replicas), by result', labelNames: ['result'], registers }),
    cacheBytes: new Gauge({ name: 'sluice_cache_bytes', help: 'Bytes held by each cache tier', labelNames: ['tier'], registers }),
    cacheEntries: new Gauge({ name: 'sluice_cache_entries', help: 'Entries held by each cache tier', labelNames: ['tier'], registers }),
    compressionBytes: new Counter({ name: 'sluice_compression_bytes_total', help: 'Bytes into and out of the compressors, by encoding', labelNames: ['encoding', 'direction'], registers }),
    rateLimited: new Counter({ name: 'sluice_rate_limited_total', help: 'Requests rejected (or, in shadow mode, that would have been) by a limit', labelNames: ['scope', 'name'], registers }),
    circuitState: new Gauge({ name: 'sluice_circuit_state', help: 'Breaker state per upstream: 0 closed, 1 half-open, 2 open', labelNames: ['upstream'], registers }),
    circuitTransitions: new Counter({ name: 'sluice_circuit_transitions_total', help: 'Breaker state changes per upstream and new state', labelNames: ['upstream', 'to'], registers }),
    redisErrors: new Counter({ name: 'sluice_redis_errors_total', help: 'Redis commands that failed or timed out, by operation', labelNames: ['op'], registers }),
    configReloads: new Counter({ name: 'sluice_config_reloads_total', help: 'Config reloads by result', labelNames: ['result'], registers }),
    configLastReloadSuccess: new Gauge({ name: 'sluice_config_last_reload_success_timestamp_seconds', help: 'Unix time of the last config load that succeeded', registers }),
    buildInfo: new Gauge({ name: 'sluice_build_info', help: 'Build information; the value is always 1', labelNames: ['version', 'node'], registers }),
    // Read at scrape time from the log sink (src/observability/logger.ts).
    logLinesDropped: new Counter({ name: 'sluice_log_lines_dropped_total', help: 'Log lines (access lines included) dropped because stdout was not being read fast enough or was closed', registers, collect () { this.reset(); this.inc(droppedLogLines()) } }),
    labelOverflow: new Counter({ name: 'sluice_metrics_label_overflow_total', help: 'Label values folded into _other by the cardinality guard, by label', labelNames: ['label'], registers }),
    // Issue 16: cache layers and evictions, Redis command latency, body sizes.
    cacheEvictions: new FastCounter('sluice_cache_evictions_total', 'Entries the L1 cache dropped on its own, by tier and reason: size (evicted to make room) or expired (found expired on lookup or at the eviction clock); purges are not counted', ['tier', 'reason'], registry),
    cacheMaxBytes: new Gauge({ name: 'sluice_cache_max_bytes', help: 'Configured byte bound of each cache tier (cache.memory.maxBytes for memory)', labelNames: ['tier'], registers }),
    redisCommandDuration: new FastHistogram('sluice_redis_command_duration_seconds', 'Time from sending a Redis command until its reply or failure, by command (a fixed set, anything else _other)', ['command'], REDIS_BUCKETS, registry),
    httpRequestSize: new FastHistogram('sluice_http_request_size_bytes', 'Request body bytes by route (Content-Length, or the length of a body the gateway buffered)', ['route'], SIZE_BUCKETS, registry),
    // WebSocket tunnels (HTTP/1.1 Upgrade and RFC 8441 over h2): not requests, so not in the
    // sluice_http_* families (a tunnel's minutes would swamp the latency histograms).
    websocketTunnels: new Counter({ name: 'sluice_websocket_tunnels_total', help: 'WebSocket upgrade requests by route (none: no route matched), client protocol (http/1.1, h2) and result: opened (a tunnel), refused (by the upstream: its answer relayed) or failed (Sluice answered an error)', labelNames: ['route', 'protocol', 'result'], registers }),
    websocketOpen: new Gauge({ name: 'sluice_websocket_tunnels_open', help: 'WebSocket tunnels open now, by client protocol', labelNames: ['protocol'], registers }),
    httpResponseSize: new FastHistogram('sluice_http_response_size_bytes', 'Response body bytes sent by route (Content-Length, or the bytes of a streamed body as they pass)', ['route'], SIZE_BUCKETS, registry),
    forRoute (name: string): RouteObserver {
      let o = observers.get(name)
      if (o === undefined) {
        const label = routeGuard.value(name)
        o = observers.get(label) ?? new RouteObserver(m, label)
        observers.set(name, o)
      }
      return o
    },
    /** The label value to use for a route name (cardinality-guarded). */
    routeLabel (name: string): string { return routeGuard.value(name) },
    /** The label value to use for an upstream name (cardinality-guarded). */
    upstreamLabel (name: string): string { return upstreamGuard.value(name) }
  }
  const max = opts.maxLabelValues ?? 500
  const routeGuard = new LabelGuard('route', max, m.labelOverflow)
  const upstreamGuard = new LabelGuard('upstream', max, m.labelOverflow)
  const observers = new Map<string, RouteObserver>()
  m.buildInfo.labels(opts.version ?? '0.0.0', process.version).set(1)
  for (const reason of EVICTION_REASONS) m.cacheEvictions.labels('memory', reason)
  for (const p of ['http/1.1', 'h2']) m.websocketOpen.labels(p).set(0)
  m.configReloads.labels('success').inc(0)
  m.configReloads.labels('failure').inc(0)
  return m
}

export type Metrics = ReturnType<typeof createMetrics>
