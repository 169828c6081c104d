// Stage 4, upstream: budget → breaker → target (balancer) → its undici pool (deadline,
// failover, retries) → breaker record. The route's rewrite and header edits apply here.
// Takes an UpstreamRequest value (not the client's request), so the cache can send detached
// fills and refreshes through the same path. Resolves with the response headers and a
// streamed body; rejects with a SluiceError (502/503/504/429) when no response can be had.
import { setTimeout as sleep } from 'node:timers/promises'
import { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import type { Logger } from 'pino'
import type { RouteEntry } from '../config/snapshot.js'
import type { Metrics } from '../observability/metrics.js'
import type { ProxyResponse, UpstreamRequest, Headers } from '../types.js'
import { SluiceError, isSluiceError } from '../errors.js'
import type { TargetRegistry, Target } from '../upstream/targets.js'
import { rewritePath, editRequestHeaders, editResponseHeaders } from '../upstream/rewrite.js'
import { IDEMPOTENT } from '../upstream/methods.js'
import type { GuardProvider, RetryContext } from '../upstream/guard.js'
import { upstreamRequestHeaders, clientResponseHeaders, transferCodingError, discard, drainToNull } from '../upstream/headers.js'
import { mapUpstreamError, isRetryableError } from '../upstream/errors.js'
import { hashKeyOf } from '../upstream/balancer.js'
import { applyForwarding } from '../forwarding.js'
import { Tracing } from '../observability/tracing.js'
import { upstreamRequestId } from '../request-id.js'

export interface UpstreamStageDeps {
  targets: TargetRegistry
  guards: () => GuardProvider
  metrics: Metrics
  log: Logger
  tracing?: Tracing
}

export type UpstreamFetch = (route: RouteEntry, req: UpstreamRequest) => Promise<ProxyResponse>

const DEADLINE = Object.assign(new Error('upstream deadline'), { code: 'SLUICE_DEADLINE' })

/**
 * The deadline of an attempt that waits in its pool's queue (every connection busy): undici's
 * headersTimeout starts only once the request is written, so a queued request could otherwise
 * wait for as long as the requests ahead of it take. An AbortController that the client's
 * leaving (`client`: the response's 'abort' emitter, or a signal) and the timer both abort.
 * undici drops an aborted request that is still queued without sending it, but settles its
 * promise only when its turn comes, so race() answers at the deadline itself (and lets the
 * late result go). done() once the answer's head is in (or the attempt failed) drops both.
 */
class QueueDeadline {
  private readonly ctl = new AbortController()
  private readonly timer: NodeJS.Timeout
  private readonly onClient = (): void => { this.ctl.abort() }
  expired = false
  constructor (private readonly client: { on? (ev: 'abort', fn: () => void): unknown, off? (ev: 'abort', fn: () => void): unknown, addEventListener? (ev: 'abort', fn: () => void): unknown, removeEventListener? (ev: 'abort', fn: () => void): unknown, aborted?: boolean } | undefined, ms: number) {
    if (client?.aborted === true) this.ctl.abort()
    else if (client?.addEventListener !== undefined) client.addEventListener('abort', this.onClient)
    else client?.on?.('abort', this.onClient)
    this.timer = setTimeout(() => {
      this.expired = true
      this.ctl.abort()
    }, Math.max(1, ms))
  }

  get signal (): AbortSignal { return this.ctl.signal }

  /** `sending`, or a rejection at the deadline (or when the client leaves) if that comes first. */
  race (sending: Promise<Dispatcher.ResponseData>): Promise<Dispatcher.ResponseData> {
    const gone = new Promise<never>((_resolve, reject) => {
      this.ctl.signal.addEventListener('abort', () => reject(this.expired ? DEADLINE : new Error('client closed')), { once: true })
    })
    return Promise.race([sending, gone]).catch((err: unknown) => {
      // Lost the race: whatever undici makes of it later is let go (a queued request is never sent).
      if (this.ctl.signal.aborted) sending.then((r) => discard(r.body), () => {})
      throw err
    })
  }

  done (): void {
    clearTimeout(this.timer)
    const c = this.client
    if (c?.removeEventListener !== undefined) c.removeEventListener('abort', this.onClient)
    else c?.off?.('abort', this.onClient)
  }
}

/**
 * The signal a retry waits for its budget token under: aborted when the client leaves
 * (`client`) or when `ms` (the time left before the request's deadline) pass.
 */
function retryWaitSignal (client: AbortSignal | undefined, ms: number): { signal: AbortSignal, expired: () => boolean, done: () => void } {
  const ctl = new AbortController()
  let expired = false
  const timer = setTimeout(() => { expired = true; ctl.abort(DEADLINE) }, Math.max(1, ms))
  const onClient = (): void => { ctl.abort(client?.reason) }
  if (client?.aborted === true) onClient()
  else client?.addEventListener('abort', onClient, { once: true })
  return {
    signal: ctl.signal,
    expired: () => expired,
    done: () => { clearTimeout(timer); client?.removeEventListener('abort', onClient) }
  }
}

/** The largest body of an answer a status retry sets aside (an error page, a JSON error). */
const LAST_ANSWER_MAX_BYTES = 64 * 1024

/** An upstream answer a status retry set aside, its body read whole. */
interface LastAnswer { status: number, headers: Headers, body: Buffer }

/** The set-aside answer as the stage's response: the client's fields, its length, a stream body as every upstream answer has. */
function answerWith (l: LastAnswer, method: string, edits: RouteEntry['headerEdits']): ProxyResponse {
  const outHeaders = clientResponseHeaders(l.headers)
  if (edits !== null) editResponseHeaders(outHeaders, edits)
  if (method === 'HEAD') return { status: l.status, headers: outHeaders, body: null, cacheResult: 'none' }
  // Its body is whole now: its length is known (it may have come chunked).
  outHeaders['content-length'] = String(l.body.length)
  return { status: l.status, headers: outHeaders, body: Readable.from([l.body]), cacheResult: 'none' }
}

/** A body read whole when it is at most `max` bytes; null (and the rest let go) when larger, or when it fails. */
async function keepSmall (body: Readable, max: number): Promise<Buffer | null> {
  const chunks: Buffer[] = []
  let n = 0
  try {
    for await (const c of body) {
      n += (c as Buffer).length
      if (n > max) { discard(body); return null }
      chunks.push(c as Buffer)
    }
  } catch {
    return null
  }
  return Buffer.concat(chunks, n)
}

export function createUpstreamStage (deps: UpstreamStageDeps): UpstreamFetch {
  const { targets, metrics } = deps
  // Label children bound once per upstream (and status class): no label hashing per request.
  interface Bound { inFlight: ReturnType<Metrics['upstreamInFlight']['labels']>; duration: ReturnType<Metrics['upstreamDuration']['labels']>[] }
  const bound = new Map<string, Bound>()
  // `error`: the attempt got no response at all (refused, reset, timed out): not a 5xx the
  // upstream sent, and its duration is the time to the failure.
  const CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx', 'error']
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
    // Looked up again before an attempt that follows a wait or a failed attempt: a reload during
    // a retry's backoff (or a budget queue wait) replaces the pools, and the old ones close.
    let set = targets.get(up.name)
    let waited = false
    let deadline = Date.now() + route.timeoutMs
    const edits = route.headerEdits
    const path = route.rewrite === null ? req.path : rewritePath(req.path, route.rewrite)
    const hashKey = up.balance === 'hash' ? hashKeyOf(up.hashKey, req.headers, req.clientIp) : null
    // A body can be sent again when there is none, or it is (to be) buffered within
    // retry.maxBufferBytes. A larger one may be in hand as a Buffer all the same: a POST query's
    // body read whole for its cache key (cache.queryPost.maxBodyBytes may be larger). It is
    // neither retried nor failed over, as a larger body that streams is not.
    const replayable = req.body === null || req.readBody !== undefined || (Buffer.isBuffer(req.body) && req.body.length <= up.config.retry.maxBufferBytes)
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
    // Targets that failed this request: a failover or retry goes to another one while one is in
    // rotation. `triedNow`: those that failed this attempt, the ones its failovers may not go
    // back to (a retry may: a target that failed the first attempt can be up again).
    let tried: Target[] | null = null
    let triedNow: Target[] | null = null
    /**
     * The upstream's set now (a reload may have replaced its pools; one that removed the
     * upstream leaves the request on the set it had). The targets already tried are mapped
     * onto the new set by id, so a retry still avoids the one that failed.
     */
    const current = (had: typeof set): typeof set => {
      const now = targets.find(up.name)
      if (now === undefined || now === had) return had
      const onNow = (list: Target[]): Target[] => list.map((t) => now.targets.find((n) => n.id === t.id)).filter((t): t is Target => t !== undefined)
      if (tried !== null) tried = onNow(tried)
      if (triedNow !== null) triedNow = onNow(triedNow)
      return now
    }
    let failovers = 0
    /**
     * The upstream's answer a status retry set aside (its body read whole, when small): a retry
     * that then cannot be sent (the budget or the breaker refuses it, the deadline passes, no
     * target is in rotation) answers with it instead of an error of Sluice's own, as Envoy
     * does when a retry overflows.
     */
    let last: LastAnswer | null = null
    /** A retry's backoff, cut short when the client leaves (then nothing more is sent upstream). */
    const backoff = async (delay: number): Promise<void> => {
      try {
        await sleep(delay, req.signal)
      } catch (err) {
        throw mapUpstreamError(err, up.name, true)
      }
    }
    for (let attempt = 0; ; attempt++) {
      // A client that left during the backoff gets no further attempt: a retried POST would be a
      // write nobody receives. (undici cannot see it: the response's 'abort' event has fired.)
      if (attempt > 0 && req.clientGone?.() === true) throw mapUpstreamError(new Error('client closed'), up.name, true)
      if (attempt > 0) {
        set = current(set)
        // Each attempt may fail over across the targets again.
        failovers = 0
        triedNow = null
      }
      // Admission: targets in rotation, a budget token, a breaker ticket. A retry refused here
      // answers with the upstream's last answer when one was set aside.
      let ticket: ReturnType<typeof guard.allow>
      try {
        // Nothing in rotation: fail before taking a budget token or a breaker ticket.
        if (!set.anyAvailable(Date.now(), null)) {
          throw new SluiceError('SLUICE_ERR_NO_HEALTHY_TARGET', `upstream "${up.name}": no target is in rotation (${set.targets.length} failed health checks or are ejected)`)
        }
        // Every attempt that reaches the upstream takes a budget token (the budget records its
        // own queue wait); a cache hit never gets here, so hits are free.
        // A retry waits for a token only until the request's deadline (maxQueueMs may be longer):
        // then it is a retry that cannot be sent, answered with the last answer (or 504).
        const bounded = attempt > 0 && up.config.rateLimit ? retryWaitSignal(req.signal, deadline - Date.now()) : null
        let queued: number | Promise<number>
        try {
          queued = up.config.rateLimit ? guard.acquire(bounded !== null ? bounded.signal : req.signal) : guard.acquire()
        } catch (err) {
          bounded?.done()
          throw err
        }
        if (typeof queued === 'number') bounded?.done() // a token at once: no wait to bound
        if (typeof queued !== 'number') {
          try {
            await queued
            waited = true
          } catch (err) {
            // Aborted while queued for the budget: the client left (499), not a gateway bug (500).
            if (req.signal?.aborted === true) throw mapUpstreamError(err, up.name, true)
            if (bounded?.expired() === true) throw mapUpstreamError(DEADLINE, up.name, false)
            throw err
          } finally {
            bounded?.done()
          }
          // The budget's queue (at most its maxQueueMs) is not the upstream's time: a first
          // attempt's deadline starts when it may be sent. A retry's wait stays inside the
          // request's deadline.
          if (attempt === 0) deadline = Date.now() + route.timeoutMs
        }
        // One breaker ticket per attempt: failovers to other targets inside it are not counted
        // as the upstream's failures unless the last target fails too.
        ticket = guard.allow()
      } catch (err) {
        if (last !== null && !(isSluiceError(err) && err.code === 'SLUICE_ERR_CLIENT_CLOSED')) return answerWith(last, req.method, edits)
        throw err
      }
      /** Whether this ticket's attempt sent anything (a failover inside it included). */
      let sent = false
      if (req.readBody !== undefined) {
        // Admitted: now the body kept for retries is read (an Expect: 100-continue client gets
        // its 100 here). Its upload time is not the upstream's: the deadline starts after it.
        const read = req.readBody
        req.readBody = undefined
        try {
          req.body = await read()
        } catch (err) {
          guard.record(ticket, { error: mapUpstreamError(err, up.name, true) }) // the client's doing: neutral
          throw err
        }
        deadline = Date.now() + route.timeoutMs
        // A reload during the upload may have replaced the pools: look the set up again.
        waited = true
      }
      for (;;) {
        const now = Date.now()
        const remaining = deadline - now
        if (remaining <= 0) {
          const err = mapUpstreamError(DEADLINE, up.name, false)
          // A deadline that passed before this ticket sent anything is no failure of the upstream's.
          guard.record(ticket, { error: err, unsent: !sent })
          if (!sent && last !== null) return answerWith(last, req.method, edits)
          throw err
        }
        if (waited || failovers > 0 || attempt > 0) set = current(set)
        // Not yet tried by this request, else not by this attempt, else any in rotation.
        const t = (set.pick(now, hashKey, tried) ?? (triedNow === null ? null : set.pick(now, hashKey, triedNow)) ?? set.pick(now, hashKey, null)) as Target | null
        if (t === null) {
          const err = new SluiceError('SLUICE_ERR_NO_HEALTHY_TARGET', `upstream "${up.name}": no target is in rotation`)
          guard.record(ticket, { error: err })
          if (last !== null) return answerWith(last, req.method, edits)
          throw err
        }
        const te = t.entry
        const headers = upstreamRequestHeaders(req.headers, up.config.preserveHost ? null : te.hostHeader, req.requestIdHeader, req.httpVersion)
        if (edits !== null) editRequestHeaders(headers, edits)
        // X-Forwarded-* go on the upstream copy only (the client's headers stay as received).
        if (req.forwarded !== undefined) applyForwarding(headers, req.forwarded.peer, req.forwarded.trust, req.host || undefined, req.protocol)
        req.attempts = (req.attempts ?? 0) + 1
        // Tracing on: a CLIENT span for this attempt, sent upstream as the traceparent's parent.
        const span = req.trace != null && deps.tracing !== undefined ? deps.tracing.attempt(req.trace, up.name, t.id, req.attempts, headers) : null
        const t0 = performance.now()
        // Every connection of the target's pool busy: this attempt waits in undici's queue, where
        // headersTimeout does not run yet. The deadline is kept by a timer of its own then (only
        // then: a request that gets a connection at once pays for none of it).
        const queued = t.inFlight >= up.config.connections
        // A retry or a failover may have to open a connection, and a connect is bounded by
        // connectTimeoutMs alone (headersTimeout too starts only once the request is written):
        // one to a target that drops SYNs would outlive the request's deadline by up to
        // connectTimeoutMs. Its deadline is kept by the same timer then (a retry is rare: a first
        // attempt pays for none of it).
        const connectBound = !queued && (attempt > 0 || failovers > 0) && remaining < up.config.connectTimeoutMs
        const queue = queued || connectBound ? new QueueDeadline(req.abortEmitter ?? req.signal, remaining) : null
        g.inc()
        t.inFlight++
        // A retry is counted once it goes out (its failovers under the same ticket are not retries).
        if (attempt > 0 && !sent) guard.retrySent()
        sent = true
        let res: Dispatcher.ResponseData
        try {
          const sending = t.pool.request({
            path: te.basePath + path,
            method: req.method as Dispatcher.HttpMethod,
            headers,
            body: req.body as Buffer | Readable | null,
            signal: queue !== null ? queue.signal : req.abortEmitter ?? req.signal,
            // The route's timeout itself on a first attempt that has not waited (a constant lets
            // undici reuse its parser timer; a value that changes per request allocates a new one).
            onInfo: req.onInfo,
            headersTimeout: attempt === 0 && failovers === 0 && remaining > route.timeoutMs - 20 ? route.timeoutMs : remaining,
            bodyTimeout: up.config.bodyTimeoutMs
          })
          res = queue === null ? await sending : await queue.race(sending)
        } catch (raw) {
          queue?.done()
          g.dec()
          t.inFlight--
          const clientClosed = req.clientGone ? req.clientGone() : req.signal?.aborted === true
          // The deadline passed while the attempt waited for a connection: 504, as a deadline is.
          // Withdrawn from the pool's queue, it was (almost always) never sent: neither the target
          // nor the breaker hears of it, as for a deadline that passed before a send. (One that
          // had just been written when the timer fired is rare, and its siblings that did get a
          // connection still report a slow upstream.)
          const expired = queue?.expired === true && !clientClosed
          const withdrawn = expired && queued
          // A retry's deadline that passed while it connected (or waited for headers): a timeout
          // of the target's, as undici's headersTimeout would have been.
          const err = expired ? mapUpstreamError(DEADLINE, up.name, false) : mapUpstreamError(raw, up.name, clientClosed)
          err.target = t.id // named in the 'upstream error' log line
          if (span !== null) Tracing.endAttempt(span, 0, err.code)
          // An attempt the client walked away from says nothing about the upstream: not observed.
          if (!clientClosed) m.duration[5].observe((performance.now() - t0) / 1000)
          // The client's fault (gone, body too large, body too slow): not the target's, never retried.
          const clientFault = clientClosed || err.code === 'SLUICE_ERR_BODY_TOO_LARGE' || err.code === 'SLUICE_ERR_REQUEST_TIMEOUT'
          targets.outcome(set, t, 0, clientFault || withdrawn ? 'neutral' : 'failure')
          if (clientFault) {
            guard.record(ticket, { error: err }) // a client that went away counts as neutral
            throw err
          }
          if (withdrawn) {
            guard.record(ticket, { error: err, unsent: true })
            throw err
          }
          ;(tried ??= []).push(t)
          ;(triedNow ??= []).push(t)
          // Failover: an attempt that failed before any response byte goes to another target at
          // once (no backoff: that target has seen nothing), under the same breaker ticket.
          if (failovers < set.targets.length - 1 && canFailOver(err, req.method, replayable, route.retryNonIdempotent) && set.anyAvailable(Date.now(), triedNow)) {
            failovers++
            deps.log.debug({ reqId: upstreamRequestId(req), upstream: up.name, target: t.id, code: err.code, failover: failovers }, 'upstream target failed; trying another')
            continue
          }
          guard.record(ticket, { error: err })
          // The retry policy decides (src/resilience/retry.ts): which errors, methods, bodies, budget.
          const delay = guard.retryDelayMs(attempt + 1, retryCtx({ error: err }))
          if (delay !== null) {
            deps.log.debug({ reqId: upstreamRequestId(req), upstream: up.name, target: t.id, attempt: attempt + 1, code: err.code, delay }, 'retrying upstream request')
            await backoff(delay)
            break
          }
          throw err
        }
        queue?.done()
        const status = res.statusCode
        // An answer Sluice refuses (a status outside 100..599, a transfer coding other than
        // chunked): 502, and an attempt with no usable answer for the metrics (status_class
        // error), the target (a failure toward ejection) and the breaker (a failure), checked
        // before any of them hears of it. (Refused after they had, a target answering
        // `gzip, chunked` counted as a success and never opened its breaker.)
        const badStatus = status < 100 || status > 599
        const refused = badStatus
          ? new SluiceError('SLUICE_ERR_UPSTREAM_PROTOCOL', `upstream "${up.name}": invalid status code ${status}`)
          : transferCodingError(res.headers['transfer-encoding'])
        if (refused !== null) {
          discard(res.body)
          g.dec()
          t.inFlight--
          refused.target = t.id // named in the 'upstream error' log line
          if (span !== null) Tracing.endAttempt(span, badStatus ? 0 : status, refused.code)
          m.duration[5].observe((performance.now() - t0) / 1000)
          targets.outcome(set, t, 0, 'failure')
          guard.record(ticket, { error: refused })
          throw refused
        }
        if (span !== null) Tracing.endAttempt(span, status)
        m.duration[classIndex(status)].observe((performance.now() - t0) / 1000)
        targets.outcome(set, t, status, status >= 500 ? 'failure' : 'ok')
        guard.record(ticket, { status })
        guard.observeResponse(status, res.headers as Headers)
        const delay = guard.retryDelayMs(attempt + 1, retryCtx({ status, retryAfter: res.headers['retry-after'] }))
        if (delay !== null) {
          // The same line as a retry after an error, with the status instead of the error code.
          deps.log.debug({ reqId: upstreamRequestId(req), upstream: up.name, target: t.id, attempt: attempt + 1, status, delay }, 'retrying upstream request')
          g.dec()
          t.inFlight--
          if (status >= 500) (tried ??= []).push(t)
          // Set aside (read whole while the backoff runs, when small) in case the retry cannot
          // be sent. A larger body, or one not whole when the backoff ends (an upstream that
          // stalls mid-body must not hold the retry back), is let go, freeing the connection.
          let kept: Buffer | null | undefined
          void keepSmall(res.body, LAST_ANSWER_MAX_BYTES).then((b) => { kept = b })
          await backoff(delay)
          if (kept === undefined) discard(res.body)
          last = kept === undefined || kept === null ? null : { status, headers: res.headers as Headers, body: kept }
          break
        }
        // 'close' follows 'end' and 'error' alike (autoDestroy): one listener for the gauge and
        // the target's count, so least-request sees a long stream as in flight until it ends.
        const body = res.body
        body.once('close', () => { g.dec(); t.inFlight-- })
        const outHeaders = clientResponseHeaders(res.headers as Headers)
        if (edits !== null) editResponseHeaders(outHeaders, edits)
        // Never on a 204 (RFC 9110 §8.6): a client that took it for framing would read the next response's head as this one's body.
        if (status === 204) delete outHeaders['content-length']
        return {
          status,
          headers: outHeaders,
          // A 204 or 304 has no content whatever its Content-Length says (RFC 9110 §8.6: a 304
          // may carry the length of the 200 it stands for). undici reads such a length as a
          // body cut short and fails the body: streamed on, that cut the client's connection.
          body: req.method === 'HEAD' || status === 204 || status === 304 ? drainToNull(body) : body,
          cacheResult: 'none'
        }
      }
    }
  }
}

/**
 * May an attempt that failed with `err` go to another target? Only a failure before any
 * response byte (isRetryableError: connect refused, reset, DNS, connect timeout), only with
 * a body that can be sent again, and for a non-idempotent method only when the route allows
 * it or the connection was refused (the request never left).
 */
function canFailOver (err: SluiceError, method: string, replayable: boolean, routeAllowsNonIdempotent: boolean): boolean {
  if (!replayable || !isRetryableError(err)) return false
  return IDEMPOTENT.has(method) || routeAllowsNonIdempotent || err.code === 'SLUICE_ERR_UPSTREAM_CONNECT'
}

export { SluiceError }
