// Stage 4, upstream: budget → breaker → undici pool (deadline, retries) → breaker record.
// Takes an UpstreamRequest value (not the client's request), so the cache can send detached
// fills and refreshes through the same path. Resolves with the response headers and a
// streamed body; rejects with a SluiceError (502/503/504/429) when no response can be had.
import { setTimeout as sleep } from 'node:timers/promises'
import type { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import type { Logger } from 'pino'
import type { RouteEntry } from '../config/snapshot.js'
import type { Metrics } from '../observability/metrics.js'
import type { ProxyResponse, UpstreamRequest, Headers } from '../types.js'
import { SluiceError } from '../errors.js'
import type { PoolRegistry } from '../upstream/pools.js'
import type { GuardProvider, RetryContext } from '../upstream/guard.js'
import { upstreamRequestHeaders, clientResponseHeaders, discard, drainToNull } from '../upstream/headers.js'
import { mapUpstreamError } from '../upstream/errors.js'
import { applyForwarding } from '../forwarding.js'

export interface UpstreamStageDeps {
  pools: PoolRegistry
  guards: () => GuardProvider
  metrics: Metrics
  log: Logger
}

export type UpstreamFetch = (route: RouteEntry, req: UpstreamRequest) => Promise<ProxyResponse>

const DEADLINE = Object.assign(new Error('upstream deadline'), { code: 'SLUICE_DEADLINE' })

export function createUpstreamStage (deps: UpstreamStageDeps): UpstreamFetch {
  const { pools, metrics } = deps
  // Label children bound once per upstream (and status class): no label hashing per request.
  interface Bound { inFlight: ReturnType<Metrics['upstreamInFlight']['labels']>; duration: ReturnType<Metrics['upstreamDuration']['labels']>[] }
  const bound = new Map<string, Bound>()
  const CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx']
  const bind = (label: string): Bound => {
    let b = bound.get(label)
    if (!b) {
      b = { inFlight: metrics.upstreamInFlight.labels(label), duration: CLASSES.map((c) => metrics.upstreamDuration.labels(label, c)) }
      bound.set(label, b)
    }
    return b
  }
  const classIndex = (status: number) => { const i = Math.floor(status / 100) - 1; return i < 0 ? 0 : i > 4 ? 4 : i }

  return async function fetchUpstream (route, req) {
    const up = route.upstream
    const guard = deps.guards().upstream(up.name)
    const started = Date.now()
    const deadline = started + route.timeoutMs
    const headers = upstreamRequestHeaders(req.headers, up.config.preserveHost ? null : up.hostHeader)
    // X-Forwarded-* go on the upstream copy only (the client's headers stay as received).
    if (req.forwarded !== undefined) applyForwarding(headers, req.forwarded.peer, req.forwarded.trust, req.host || undefined)
    const path = up.basePath + req.path
    const replayable = req.body === null || Buffer.isBuffer(req.body)
    const pool = pools.get(up.name)
    const label = metrics.upstreamLabel(up.name)
    const m = bind(label)
    const g = m.inFlight
    const retryCtx = (extra: Partial<RetryContext>): RetryContext => ({
      method: req.method,
      bodyReplayable: replayable,
      routeAllowsNonIdempotent: route.retryNonIdempotent,
      remainingMs: deadline - Date.now(),
      ...extra
    })
    for (let attempt = 0; ; attempt++) {
      // Every attempt that reaches the upstream takes a budget token (the budget records its
      // own queue wait); a cache hit never gets here, so hits are free.
      const queued = up.config.rateLimit ? guard.acquire(req.signal) : guard.acquire()
      if (typeof queued !== 'number') {
        try {
          await queued
        } catch (err) {
          // Aborted while queued for the budget: the client left (499), not a gateway bug (500).
          if (req.signal?.aborted === true) throw mapUpstreamError(err, up.name, true)
          throw err
        }
      }
      const ticket = guard.allow()
      const remaining = deadline - Date.now()
      if (remaining <= 0) {
        const err = mapUpstreamError(DEADLINE, up.name, false)
        guard.record(ticket, { error: err })
        throw err
      }
      const t0 = performance.now()
      g.inc()
      let res: Dispatcher.ResponseData
      try {
        res = await pool.request({
          path,
          method: req.method as Dispatcher.HttpMethod,
          headers,
          body: req.body as Buffer | Readable | null,
          signal: req.abortEmitter ?? req.signal,
          // The route's timeout itself on a first attempt that has not waited (a constant lets
          // undici reuse its parser timer; a value that changes per request allocates a new one).
          headersTimeout: attempt === 0 && remaining > route.timeoutMs - 20 ? route.timeoutMs : remaining,
          bodyTimeout: up.config.bodyTimeoutMs
        })
      } catch (raw) {
        g.dec()
        const clientClosed = req.clientGone ? req.clientGone() : req.signal?.aborted === true
        const err = mapUpstreamError(raw, up.name, clientClosed)
        m.duration[clientClosed ? 3 : 4].observe((performance.now() - t0) / 1000)
        guard.record(ticket, { error: err }) // a client that went away counts as neutral
        if (clientClosed || err.code === 'SLUICE_ERR_BODY_TOO_LARGE') throw err
        // The retry policy decides (src/resilience/retry.ts): which errors, methods, bodies, budget.
        const delay = guard.retryDelayMs(attempt + 1, retryCtx({ error: err }))
        if (delay !== null) {
          deps.log.debug({ upstream: up.name, attempt: attempt + 1, code: err.code, delay }, 'retrying upstream request')
          await sleep(delay)
          continue
        }
        throw err
      }
      m.duration[classIndex(res.statusCode)].observe((performance.now() - t0) / 1000)
      if (res.statusCode < 100 || res.statusCode > 599) {
        discard(res.body)
        g.dec()
        const err = new SluiceError('SLUICE_ERR_UPSTREAM_PROTOCOL', `upstream "${up.name}": invalid status code ${res.statusCode}`)
        guard.record(ticket, { error: err })
        throw err
      }
      guard.record(ticket, { status: res.statusCode })
      guard.observeResponse(res.statusCode, res.headers as Headers)
      const delay = guard.retryDelayMs(attempt + 1, retryCtx({ status: res.statusCode, retryAfter: res.headers['retry-after'] }))
      if (delay !== null) {
        g.dec()
        discard(res.body) // free the connection; a response we will not send
        await sleep(delay)
        continue
      }
      // 'close' follows 'end' and 'error' alike (autoDestroy): one listener for the gauge.
      const body = res.body
      body.once('close', () => g.dec())
      return {
        status: res.statusCode,
        headers: clientResponseHeaders(res.headers as Headers),
        body: req.method === 'HEAD' ? drainToNull(body) : body,
        cacheResult: 'none'
      }
    }
  }
}

export { SluiceError }
