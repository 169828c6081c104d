// The request pipeline: the one place that knows the order of the stages.
//
//   route → client limit → cache (L1 → L2 → coalesced upstream fetch) → upstream → compress → send
//   metrics and the access log: one observation per request (gateway.ts: observe / record)
//
// Each stage lives in its own file with its config type beside it; this file only wires them.
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { Snapshot, RouteEntry } from './config/snapshot.js'
import { RequestContext, ClientUpstreamRequest, cutShort } from './context.js'
import { resolveClientIp } from './forwarding.js'
import { assignRequestId } from './request-id.js'
import { SluiceError } from './errors.js'
import type { ProxyResponse, UpstreamRequest } from './types.js'
import type { UpstreamFetch } from './stages/upstream.js'
import type { CacheStage } from './httpcache/stage.js'
import type { CompressStage } from './compress/stage.js'
import type { ClientLimitProvider } from './stages/client-limit.js'
import { normalisePath, requestLimitError, headerLineCount } from './stages/path.js'
import type { Tracing } from './observability/tracing.js'
import { guardBodyRate } from './edge/body-rate.js'
import type { RequestBodyRateConfig } from './edge/config.js'
import { limitBody } from './stages/body-limit.js'
import { IDEMPOTENT } from './upstream/methods.js'
import { mapUpstreamError } from './upstream/errors.js'
import { writeStored, writeStreamed } from './send.js'
import type { Readable } from 'node:stream'
import { declaredBodyBytes, type Metrics, type RouteObserver } from './observability/metrics.js'

declare module 'fastify' {
  interface FastifyRequest { sluice: RequestContext | null }
}

export interface PipelineDeps {
  current: () => Snapshot
  upstream: UpstreamFetch
  cache: CacheStage
  compress: CompressStage
  clientLimits: () => ClientLimitProvider | null
  log: Logger
  /** Metrics and the access line for a finished request; `bytes` -1 when unknown. */
  observe?: (request: FastifyRequest, status: number, bytes: number) => void
  /** Body size histograms (sluice_http_request/response_size_bytes); the gateway's ProxyDeps carries it. */
  metrics?: Metrics
  /** OpenTelemetry tracing (off unless configured). */
  tracing?: Tracing
  /** True once the gateway drains: a response cut from then on is logged as SLUICE_ERR_SHUTTING_DOWN. */
  draining?: () => boolean
}

/** The route's observer for body sizes, or undefined (no metrics, no route, metrics.enabled off). */
function sizesOf (metrics: Metrics | undefined, request: FastifyRequest): RouteObserver | undefined {
  const ctx = request.sluice
  if (metrics === undefined || ctx === null || ctx.route === null || !ctx.snap.config.metrics.enabled) return undefined
  return metrics.forRoute(ctx.route.name)
}

const NO_ROUTE = 'SLUICE_ERR_NO_ROUTE'
const SHUTTING_DOWN = 'SLUICE_ERR_SHUTTING_DOWN'

/**
 * The client left while its answer was being fetched (a coalesced fill's leader, say): the
 * answer's stream is let go (a fill goes on for the cache) and the request ends as
 * SLUICE_ERR_CLIENT_CLOSED, which the error handler logs once (503 during a drain, else 499).
 */
function clientLeft (ureq: UpstreamRequest, res: ProxyResponse): void {
  if (ureq.clientGone?.() !== true) return
  if (res.body !== null && !Buffer.isBuffer(res.body)) (res.body as Readable).destroy()
  throw new SluiceError('SLUICE_ERR_CLIENT_CLOSED', 'the client left before the answer was ready')
}

/**
 * Bytes in hand (cache hits, 304s, HEAD): written straight to Node by writeStored, bypassing
 * Fastify's per-header reply work. Fastify's response listeners were attached before the
 * handler ran, so its own bookkeeping still completes.
 */
function sendBytes (reply: FastifyReply, res: ProxyResponse, observe?: PipelineDeps['observe'], sizes?: RouteObserver, requestBytes = -1): FastifyReply {
  reply.hijack()
  // e.g. Server-Timing, set on the reply earlier in this request
  const ctx = reply.request.sluice
  writeStored(reply.raw, res, reply.getHeaders(), ctx?.snap.requestId, ctx?.requestId)
  // Written in one go: observe now, with no listener per request.
  const bytes = res.body === null ? 0 : (res.body as Buffer).length
  observe?.(reply.request, res.status, bytes)
  sizes?.sizes(requestBytes, bytes)
  return reply
}

/**
 * Whether the compress stage sees this response: one from the upstream (a cache hit is sent as
 * stored and never compresses) on a compressing route, or an encoded one on a cache route
 * (a fill asked the origin for identity: a coding the client does not accept is decoded).
 */
function toCompressStage (route: RouteEntry, res: ProxyResponse): boolean {
  const r = res.cacheResult
  if (r !== 'none' && r !== 'miss' && r !== 'bypass') return false
  return route.compression.enabled || (route.cache.enabled && res.headers['content-encoding'] !== undefined)
}

/**
 * `metrics` and `requestBytes` (the request body's length, -1 when not known) feed the body size
 * histograms: a response's size is its Content-Length, or, when it streams without one, the
 * bytes of its body counted as they pass to the client.
 */
export function sendResponse (reply: FastifyReply, res: ProxyResponse, deps: PipelineDeps, requestBytes = -1): FastifyReply {
  const { observe, log } = deps
  const sizes = sizesOf(deps.metrics, reply.request)
  if (res.body === null || Buffer.isBuffer(res.body)) return sendBytes(reply, res, observe, sizes, requestBytes)
  // A stream, written to Node directly (as stored bytes are; Fastify's send would copy and
  // check every header again): observed when the response closes (finished, or cut off).
  reply.hijack()
  const out = reply.raw
  const request = reply.request
  const ctx = request.sluice
  const body = res.body as Readable
  // One 'close' listener for everything that waits for the response to end: the observation
  // and the body size histogram. Both get the body bytes that were sent (writeStreamed counts
  // them as they pass): the Content-Length when the body went out whole, fewer when it was cut
  // (an upstream that failed midway, a client that left), and 0 for HEAD, 204 and 304.
  /** The body failed before any byte went: an error was answered instead (src/send.ts). */
  let answered = false
  const onClose = observe === undefined && sizes === undefined
    ? undefined
    : (sent: number) => {
        // Cut before its end with no error of its own: the client left, or the drain ended.
        if (ctx !== null && ctx.errorCode === null && cutShort(out)) ctx.errorCode = deps.draining?.() === true ? SHUTTING_DOWN : 'SLUICE_ERR_CLIENT_CLOSED'
        if (observe !== undefined) observe(request, out.statusCode, sent)
        // Not for an error Sluice answered instead (README: errors are not in the size histograms).
        if (sizes !== undefined && !answered) sizes.sizes(requestBytes, sent)
      }
  writeStreamed(out, res, body, reply.getHeaders(), ctx?.snap.requestId, ctx?.requestId, (err, gone) => {
    // The client's connection is closed already (it left, or the drain's end cut it).
    const closed = out.destroyed || out.socket?.destroyed === true
    if (deps.draining?.() === true) {
      // At the end of a drain the pools close under the streams still open (an SSE stream, say):
      // that is the shutdown, not the upstream resetting. (It cuts the clients' connections
      // first, so such a body finds its response gone.)
      if (gone || closed) {
        if (ctx !== null && ctx.errorCode === null) ctx.errorCode = SHUTTING_DOWN
        return undefined
      }
      // Before any byte went, during the grace period: the upstream's own failure, answered as
      // at any other time, and the connection closes after it, as every answer in a drain does.
      out.shouldKeepAlive = false
    }
    // The client left mid-body: its connection closed and the upstream request was aborted for
    // it. Not a failure of the body (an SSE viewer closing a tab): a debug line, and the access
    // line says SLUICE_ERR_CLIENT_CLOSED.
    if (gone && (closed || (err as { code?: string }).code === 'UND_ERR_ABORTED')) {
      if (ctx !== null && ctx.errorCode === null) ctx.errorCode = 'SLUICE_ERR_CLIENT_CLOSED'
      log?.debug({ reqId: ctx?.requestId, route: ctx?.route?.name, err: err.message }, 'client closed the connection during the response body')
      return undefined
    }
    const mapped = mapUpstreamError(err, ctx?.route?.upstream.name ?? '', false)
    if (ctx !== null && ctx.errorCode === null) ctx.errorCode = mapped.code
    // Before any byte went, the client gets the error as a 502 instead (src/send.ts).
    if (!gone) {
      log?.warn({ reqId: ctx?.requestId, route: ctx?.route?.name, code: mapped.code, err: err.message }, 'response body failed before any byte was sent; answered with an error instead')
      answered = true
      return mapped
    }
    log?.warn({ reqId: ctx?.requestId, route: ctx?.route?.name, err: err.message }, 'response body failed after the headers were sent; the client connection is cut')
    return undefined
  }, onClose)
  return reply
}

/** The Content-Type the request listener hid from Fastify (src/gateway.ts), back from the raw field lines (the first, as Node keeps). */
function restoreContentType (raw: FastifyRequest['raw']): void {
  const lines = raw.rawHeaders
  for (let i = 0; i < lines.length; i += 2) {
    if (lines[i].length === 12 && lines[i].toLowerCase() === 'content-type') { raw.headers['content-type'] = lines[i + 1]; return }
  }
  delete raw.headers['content-type']
}

export function createPipeline (deps: PipelineDeps) {
  const { upstream, cache, compress } = deps

  /** The same stages as below, timed for the Server-Timing header (routes[].serverTiming). */
  async function timed (reply: FastifyReply, ctx: RequestContext, route: RouteEntry, ureq: UpstreamRequest, method: string, t0: number): Promise<FastifyReply> {
    const raw = reply.request.raw
    let upstreamMs = 0
    const fetch = async (r: UpstreamRequest) => {
      const t = performance.now()
      try { return await upstream(route, r) } finally { upstreamMs += performance.now() - t }
    }
    const tc = performance.now()
    let res = route.cache.enabled ? await cache.handle(route, ureq, fetch) : await fetch(ureq)
    const cacheMs = performance.now() - tc - (route.cache.enabled ? upstreamMs : 0)
    ctx.cacheResult = res.cacheResult
    clientLeft(ureq, res)
    const tz = performance.now()
    if (toCompressStage(route, res)) res = compress.apply(route, raw.headers, method, res)
    const compressMs = performance.now() - tz
    const [routeMs, limitMs] = ctx.timing ?? [0, 0]
    const f = (n: number) => n.toFixed(3)
    // On the reply, never on res.headers: a cached entry's headers are shared.
    reply.header('server-timing', `route;dur=${f(routeMs)}, limit;dur=${f(limitMs)}, cache;dur=${f(cacheMs)}, upstream;dur=${f(upstreamMs)}, compress;dur=${f(compressMs)}, total;dur=${f(performance.now() - t0)}`)
    return sendResponse(reply, res, deps, bodyBytes(ureq))
  }

  return async function handle (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const t0 = performance.now()
    const snap = deps.current()
    const ctx = new RequestContext(snap, t0)
    request.sluice = ctx
    const raw = request.raw
    if (raw.headers['content-type'] === undefined && 'content-type' in raw.headers) restoreContentType(raw)
    // Assigned in the server's request handler (src/gateway.ts), before the fast path.
    // (A reload in between that renamed the header: assign it again under the new name.)
    ctx.requestId = (raw.headers[snap.requestId.name] as string | undefined) ?? assignRequestId(raw, snap.requestId)
    // The SERVER span first: a request refused below (404, 414, 429, 413) has one too.
    if (deps.tracing?.on === true) ctx.trace = deps.tracing.server(raw.headers, raw.method ?? 'GET', performance.timeOrigin + t0)
    let url = raw.url ?? '/'
    const over = requestLimitError(url, headerLineCount(raw.rawHeaders, raw.httpVersionMajor), snap.config.server)
    if (over !== null) throw over
    const q = url.indexOf('?')
    const rawPath = q === -1 ? url : url.slice(0, q)
    // Route on the normalised path and forward that same path.
    const path = normalisePath(rawPath, snap.config.server.allowEncodedSlashes, snap.config.server.mergeSlashes)
    if (path !== rawPath) url = q === -1 ? path : path + url.slice(q)
    const method = raw.method ?? 'GET'

    // 1. route
    const route = snap.router.match(raw.headers.host, method, path)
    if (route === null) throw new SluiceError(NO_ROUTE, `No route matches ${method} ${path}`)
    ctx.route = route
    const tRoute = performance.now()

    // 2. client limit: before any byte of the body is read (a limited client's upload stays unread)
    if (route.rateLimit !== null) {
      ctx.clientIp = resolveClientIp(raw.headers, raw.socket.remoteAddress, snap.trust)
      const limits = deps.clientLimits()
      if (limits !== null) {
        const rejected = await limits.check(route, ctx.clientIp, raw.headers)
        if (rejected !== null) throw rejected
      }
    }
    ctx.timing = route.serverTiming ? [tRoute - t0, performance.now() - tRoute] : null

    // request body: streamed, never buffered, bounded by the route's maxBodyBytes; only a small
    // body that a retry or a POST-query cache key needs is read first
    let body = requestBody(request, route, snap.config.server.requestBodyRate)
    let readLater: Readable | null = null
    const buffered = body !== null && !Buffer.isBuffer(body) ? wantsBuffer(route, method, raw.headers['content-length']) : null
    if (buffered === 'key') body = await readAll(body as Readable)
    else if (buffered === 'retry') {
      // An Expect: 100-continue client uploads only once the upstream stage admits the request
      // (a budget 429 or an open breaker's 503 then comes with no 100 and no upload).
      if ((reply.raw as { _expect_continue?: boolean })._expect_continue === true) readLater = body as Readable
      else body = await readAll(body as Readable)
    }

    const ureq = new ClientUpstreamRequest(raw, reply.raw, url, body, snap.trust, ctx.clientIp || null, route.headerEdits, snap.requestId.name)
    ctx.ureq = ureq
    if (readLater !== null) { const s = readLater; ureq.readBody = () => readAll(s) }
    ureq.trace = ctx.trace
    if (route.serverTiming) return timed(reply, ctx, route, ureq, method, t0)

    // 3. cache, around 4. upstream
    let res = route.cache.enabled ? await cache.handle(route, ureq, (r) => upstream(route, r)) : await upstream(route, ureq)
    ctx.cacheResult = res.cacheResult
    clientLeft(ureq, res)

    // 5. compress (responses from the cache are already encoded)
    if (toCompressStage(route, res)) res = compress.apply(route, raw.headers, method, res)

    // 6. send
    return sendResponse(reply, res, deps, bodyBytes(ureq))
  }
}

/** The request body's length for the size histogram: a buffered body's, else the declared one (-1: chunked, not known). */
function bodyBytes (ureq: UpstreamRequest): number {
  const b = ureq.body
  if (b === null) return 0
  if (Buffer.isBuffer(b)) return b.length
  // A streamed body: its Content-Length, else not known (chunked, or an HTTP/2 body without
  // Content-Length, which has no Transfer-Encoding to say so).
  const n = declaredBodyBytes(ureq.headers as { 'content-length'?: string; 'transfer-encoding'?: string })
  return n === 0 && ureq.headers['content-length'] === undefined ? -1 : n
}

/**
 * Whether the body is read whole before it is forwarded: 'key' when the cache key needs it,
 * 'retry' when a retry or a failover may need to send it again (retry.maxBufferBytes), null
 * when it streams.
 */
function wantsBuffer (route: RouteEntry, method: string, cl: string | undefined): 'key' | 'retry' | null {
  // A cacheable POST query is keyed by its body: read it (bounded by queryPost.maxBodyBytes,
  // against the declared length, which Node holds the body to). One over retry.maxBufferBytes is
  // not retried all the same (the upstream stage checks a buffered body's length).
  const qp = route.cache.queryPost
  if (method === 'POST' && route.cache.enabled && qp.enabled && cl !== undefined && Number(cl) <= qp.maxBodyBytes) return 'key'
  const r = route.upstream.config.retry
  if (cl === undefined) return null
  // With several targets, a body is kept for failover too (a refused connection sent nothing,
  // so even a POST may go to another target).
  const multi = route.upstream.targets.length > 1
  if (r.attempts === 0 && !multi) return null
  if (!multi && !IDEMPOTENT.has(method) && !route.retryNonIdempotent) return null
  return Number(cl) <= r.maxBufferBytes ? 'retry' : null
}

async function readAll (stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

function requestBody (request: FastifyRequest, route: RouteEntry, rate: RequestBodyRateConfig): UpstreamRequest['body'] {
  const raw = request.raw
  const cl = raw.headers['content-length']
  // HTTP/2 has no Transfer-Encoding: a body without Content-Length is simply a stream that has not ended.
  const chunked = raw.headers['transfer-encoding'] !== undefined || (raw.httpVersionMajor === 2 && cl === undefined && !(raw as unknown as { readableEnded: boolean }).readableEnded && raw.method !== 'GET' && raw.method !== 'HEAD')
  if (!chunked && (cl === undefined || cl === '0')) return null
  // Refused before anything reads the body (so an Expect: 100-continue client gets no 100).
  if (route.maxBodyBytes > 0 && cl !== undefined && Number(cl) > route.maxBodyBytes) {
    throw new SluiceError('SLUICE_ERR_BODY_TOO_LARGE', `The request body (${cl} bytes) is larger than this route allows (${route.maxBodyBytes})`)
  }
  // A body that trickles in gets 408 and aborts the upstream request (src/edge/body-rate.ts).
  const body = guardBodyRate(raw, rate)
  // A chunked body has no declared length: count it as it streams.
  if (route.maxBodyBytes > 0 && cl === undefined) return limitBody(body, route.maxBodyBytes)
  return body
}
