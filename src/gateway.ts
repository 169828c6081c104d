// buildProxy: the client-facing Fastify instance. One catch-all route runs the pipeline;
// our own router (per snapshot) picks the route, because Fastify cannot add routes after
// start and reloads must swap routes atomically. The request body is never parsed: it
// streams to the upstream. Every request is observed once (metrics and the access line) by
// observeRequest: right after the bytes are written, or when the response closes.
import { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import Fastify, { type FastifyInstance, type FastifyError, type FastifyRequest, type FastifyReply } from 'fastify'
import type { Metrics } from './observability/metrics.js'
import type { Snapshot } from './config/snapshot.js'
import { createPipeline, type PipelineDeps } from './pipeline.js'
import { RequestContext } from './context.js'
import { SluiceError, errorBody, isSluiceError, rawError, writeError, type ErrorCode } from './errors.js'
import { handleUpgrade, handleH2Connect, type TunnelDeps } from './upstream/websocket.js'
import { resolveClientIp, HOST_VALUE, hostLines } from './forwarding.js'
import { assignRequestId } from './request-id.js'
import { AccessLog } from './observability/access-line.js'
import { createFastPath, type FastPath, type RequestView } from './fast-path.js'
import { Tracing } from './observability/tracing.js'
import { createEdgeServer, type EdgeServer } from './edge/server.js'
import type { TargetRegistry } from './upstream/targets.js'
import type { CacheResult } from './types.js'

export interface ProxyDeps extends PipelineDeps {
  metrics: Metrics
  /** Upstream targets: WebSocket tunnels pick theirs through the same balancer as requests. */
  targets: TargetRegistry
}

function clientErrorCode (code: string | undefined): ErrorCode {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW': return 'SLUICE_ERR_HEADERS_TOO_LARGE'
    case 'ERR_HTTP_REQUEST_TIMEOUT': return 'SLUICE_ERR_REQUEST_TIMEOUT'
    default: return 'SLUICE_ERR_BAD_REQUEST'
  }
}

function badHost (hosts: number): SluiceError {
  return new SluiceError('SLUICE_ERR_BAD_REQUEST', hosts === 0 ? 'An HTTP/1.1 request needs a Host header' : hosts === -1 ? 'The Host header is not a host name' : hosts === -2 ? 'The Host header and :authority differ' : 'More than one Host header')
}

/**
 * HTTP/2 carries the host in :authority; the router, the cache key and X-Forwarded-Host read Host.
 * False when both are present and name different hosts (compared without case): RFC 9113
 * §8.3.1 makes that request malformed, and it is refused rather than routed by either.
 */
function authorityAsHost (h: IncomingMessage['headers']): boolean {
  const a = h[':authority']
  if (h.host !== undefined) return typeof a !== 'string' || a.toLowerCase() === String(h.host).toLowerCase()
  if (typeof a === 'string') h.host = a
  return true
}

/** Send `100 Continue` when the request body is first read (every way of reading a stream goes through read()). */
function continueOnRead (req: IncomingMessage, res: ServerResponse): void {
  const own = req as IncomingMessage & { read: IncomingMessage['read'] }
  own.read = function (this: IncomingMessage, n?: number) {
    delete (own as { read?: unknown }).read // back to Readable.prototype.read
    if (!res.headersSent && !res.writableEnded && !res.destroyed) res.writeContinue()
    return this.read(n)
  }
}

const edges = new WeakMap<object, EdgeServer>()
/** An HTTP/2 request's peer address, taken while its stream still reaches the session's socket. */
const h2Peers = new WeakMap<object, string | undefined>()

/** HTTP/1.1 connections answered with a refusal that closes them (an h2 session socket is never marked). */
const closed = new WeakSet<object>()
function closing (req: IncomingMessage): void {
  if (req.httpVersionMajor === 1) closed.add(req.socket)
}

/**
 * Codings other than chunked before a final chunked (`gzip, chunked`; repeated lines arrive
 * joined with ", "): RFC 9112 §6.1, 501. A Transfer-Encoding whose final coding is not
 * chunked is refused with 400 by Node's parser (§6.3), as before.
 */
function unsupportedCodings (te: string): boolean {
  if (te.length === 7) return false
  const t = te.toLowerCase().split(',')
  return t.length > 1 && t[t.length - 1].trim() === 'chunked'
}

/** Node's http server keeps the response being written on the socket; the ones queued behind it follow in order. */
type InFlightSocket = Socket & { _httpMessage?: ServerResponse | null }

/** Sockets whose 400 waits for the responses ahead of it (a failed parser reports every later chunk again). */
const refusing = new WeakSet<Socket>()

/**
 * Answer a malformed pipelined request after every response ahead of it: when the one being
 * written finishes, Node hands the socket to the next queued one (its own 'finish' listener
 * runs first); once none is left, the 400 goes out and the connection closes. Nothing more is
 * read from the socket. A response that ends the connection itself (Connection: close) leaves
 * the socket unwritable, and no 400 follows it.
 */
function refuseAfterInFlight (socket: Socket, code: ErrorCode): void {
  if (refusing.has(socket)) return
  refusing.add(socket)
  socket.pause()
  const next = (): void => {
    if (socket.destroyed || !socket.writable) return
    const m = (socket as InFlightSocket)._httpMessage
    // A response whose request has not been read whole belongs to the malformed request itself
    // (its body is what failed to parse, and will never end): it is aborted, and the 400 goes
    // out now. A complete one is an earlier request's answer: the 400 waits for it.
    if (m != null && m.req?.complete === true) { m.once('finish', next); return }
    socket.end(rawError(new SluiceError(code)))
    // Closed once the 400 is out: the malformed request's own exchange (if any) sees its client
    // gone and aborts its upstream request.
    if (m != null) socket.once('finish', () => socket.destroy())
  }
  next()
}

/** The edge server (TLS swaps, HTTP/2 drain, closing every connection) behind a proxy instance. */
export function edgeOf (app: FastifyInstance): EdgeServer {
  const e = edges.get(app.server)
  if (e === undefined) throw new Error('not a Sluice proxy instance')
  return e
}

/**
 * The body bytes of an error answer Fastify sent for Sluice: the JSON body's length once it
 * went out whole, 0 for HEAD; -1 (not known) when the response was cut short.
 */
function errorBytes (req: IncomingMessage, res: ServerResponse, body: string | null): number {
  if (body === null || !res.writableFinished) return -1
  return req.method === 'HEAD' ? 0 : Buffer.byteLength(body)
}

export function buildProxy (deps: ProxyDeps): FastifyInstance {
  const { log, metrics } = deps
  // Access lines carry no headers, so nothing in them needs redaction: they are formatted
  // directly onto the logger's stream (src/observability/access-line.ts).
  const accessLog = new AccessLog(log)
  /**
   * WebSocket tunnels (src/upstream/websocket.ts): the open-tunnel gauge, one count per upgrade
   * request, and one access line when it is over (status 101, or 200 on h2, for a tunnel; its
   * bytes are the upstream's after the handshake and `ms` its whole life).
   */
  const tunnels: TunnelDeps = {
    current: deps.current,
    targets: deps.targets,
    clientLimits: deps.clientLimits,
    tracing: deps.tracing,
    draining: false,
    log,
    events: {
      opened: (proto) => { metrics.websocketOpen.labels(proto).inc() },
      done: (o) => {
        if (o.result === 'opened') metrics.websocketOpen.labels(o.proto).dec()
        metrics.websocketTunnels.labels(o.route === undefined ? 'none' : metrics.routeLabel(o.route), o.proto, o.result).inc()
        if (!deps.current().config.log.accessLog) return
        accessLog.write({ reqId: o.reqId, route: o.route ?? 'none', upstream: o.upstream, method: o.method, url: o.url, status: o.status, bytes: o.bytes, ms: o.ms, cache: 'none', ip: o.ip, err: o.err, proto: o.proto === 'h2' ? 'h2' : undefined })
      }
    }
  }
  const protoCounters = ['http/1.0', 'http/1.1', 'h2'].map((p) => metrics.protocolRequests.labels(p))
  const firstSnap = deps.current()
  const first = firstSnap.config
  const srvCfg = first.server
  let clientErrorsLogged = 0
  let clientErrorWindow = 0

  let fast: FastPath | null = null
  const options = {
    // No Fastify logger and no onResponse hook: Fastify then sets up no per-request response
    // listeners; Sluice observes each request itself (observeRequest), once.
    logger: false,
    serverFactory: (handler: (req: IncomingMessage, res: ServerResponse) => void) => {
      // Cleartext HTTP/1.1, HTTPS, or HTTPS with h2 by ALPN (src/edge/server.ts); one listener for all.
      const edge = createEdgeServer({
        http1: {
          maxHeaderSize: srvCfg.maxHeaderBytes,
          headersTimeout: srvCfg.headersTimeoutMs,
          requestTimeout: srvCfg.requestTimeoutMs,
          keepAliveTimeout: srvCfg.keepAliveTimeoutMs,
          // Node checks the header and request deadlines on this interval (30 s by default, which
          // would let a slowloris client hold a connection up to 30 s past headersTimeoutMs).
          connectionsCheckingInterval: Math.min(1000, srvCfg.headersTimeoutMs),
          maxRequestsPerSocket: srvCfg.maxRequestsPerSocket,
          // Node drops header lines past maxHeadersCount silently; keep one more so the pipeline can see and refuse them.
          maxHeadersCount: srvCfg.maxHeadersCount + 1
        },
        tls: first.listen.tls && firstSnap.listenTls ? { material: firstSnap.listenTls, cfg: first.listen.tls } : null,
        http2: first.listen.tls && first.listen.http2 ? srvCfg.http2 : null,
        log,
        requestIdOf: (h) => { const v = h[deps.current().requestId.name]; return typeof v === 'string' ? v : undefined }
      }, (req, res) => {
        // A request pipelined behind an answer that closes the connection is never run: its
        // answer could not be sent (the socket closes once the refusal is out).
        if (closed.has(req.socket)) return
        // The access line is written when the response closes, when an HTTP/2 stream no longer
        // reaches its session's socket: keep the peer's address now.
        if (req.httpVersionMajor === 2) h2Peers.set(req, req.socket.remoteAddress)
        const sameHost = req.httpVersionMajor !== 2 || authorityAsHost(req.headers)
        // Every request gets its ID first, so every answer below carries it (src/request-id.ts).
        const snap = deps.current()
        const rule = snap.requestId
        const id = assignRequestId(req, rule)
        if (!sameHost) return refuse(req, res, snap, badHost(-2), id)
        // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, or with more than one.
        const hosts = req.httpVersionMajor === 2 ? (req.headers.host === undefined ? 0 : 1) : hostLines(req.rawHeaders)
        if (hosts > 1 || (hosts === 0 && req.httpVersionMinor === 1 && req.httpVersionMajor === 1)) { closing(req); return refuse(req, res, snap, badHost(hosts), id) }
        // ...and for a Host that is not host[:port] (it is forwarded as X-Forwarded-Host and keys the cache).
        if (hosts === 1 && !HOST_VALUE.test(req.headers.host as string)) { closing(req); return refuse(req, res, snap, badHost(-1), id) }
        // RFC 9112 §6.1: a transfer coding the server does not understand gets 501. Node decodes
        // only chunked and would pass `gzip, chunked` on with the gzip coding silently dropped.
        const te = req.headers['transfer-encoding']
        if (te !== undefined && unsupportedCodings(te)) { closing(req); return refuse(req, res, snap, new SluiceError('SLUICE_ERR_NOT_IMPLEMENTED'), id) }
        // A fresh L1 hit is answered here, before Fastify (src/fast-path.ts).
        if (fast !== null && fast.h1(req, res, snap, id)) return
        // Draining: a new request on an open connection gets 503 SLUICE_ERR_SHUTTING_DOWN and
        // the connection closes. Answered here rather than by Fastify's return503OnClosing
        // (off), which wrote its own body and was neither counted nor logged.
        if (tunnels.draining) { closing(req); return refuse(req, res, snap, new SluiceError('SLUICE_ERR_SHUTTING_DOWN'), id) }
        // Fastify refuses a Content-Type it cannot parse (`json`, `a/b c`) before any handler
        // runs; a proxy forwards the field as sent and lets the origin judge it. Fastify is shown
        // none (the body stays unread all the same) and the pipeline puts it back
        // (restoreContentType). QUERY keeps Fastify's check: RFC 10008 requires the field.
        if (req.headers['content-type'] !== undefined && req.method !== 'QUERY') req.headers['content-type'] = undefined
        handler(req, res)
      })
      // HTTP/2: a fresh hit is answered on the raw stream, before Node builds compatibility
      // objects for it; everything else (a bad Host included) goes on to the listener above.
      edge.onStream((stream, headers, rawHeaders) => {
        // WebSocket over HTTP/2 (RFC 8441): an extended CONNECT becomes a tunnel, never a request.
        // A Host that differs from :authority goes on to the listener above, which refuses it.
        if (headers[':method'] === 'CONNECT' && headers[':protocol'] !== undefined) {
          if (!authorityAsHost(headers)) return false
          handleH2Connect(tunnels, stream, headers, rawHeaders)
          return true
        }
        if (fast === null) return false
        if (!authorityAsHost(headers)) return false
        if (headers.host === undefined || !HOST_VALUE.test(headers.host)) return false
        const view: RequestView = { method: headers[':method'], url: headers[':path'], headers, rawHeaders, httpVersionMajor: 2, httpVersionMinor: 0, get socket () { return stream.session?.socket } }
        return fast.h2(view, stream, deps.current())
      })
      edges.set(edge.server, edge)
      // Node answers an Expect other than 100-continue with an empty 417; answer with our JSON.
      edge.server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
        const snap = deps.current()
        refuse(req, res, snap, new SluiceError('SLUICE_ERR_EXPECTATION_FAILED'), assignRequestId(req, snap.requestId), false)
      })
      // Expect: 100-continue: Node would send 100 at once, before the route, the client limit
      // or the body size is decided, and the client would upload a body only to get 404, 429
      // or 413. The 100 goes out when the body is first read instead (the upstream stage, or a
      // body buffered for a retry), as nginx does; a refusal before that gets its answer with
      // no 100, and Node closes the connection after it (the client may send the body anyway).
      const server = edge.server
      server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
        continueOnRead(req, res)
        server.emit('request', req, res)
      })
      return edge.server
    },
    // Sluice answers new requests while draining itself (the request listener above).
    return503OnClosing: false,
    exposeHeadRoutes: false,
    // A malformed request never reaches a route: answer with our code and JSON, and log it (bounded).
    clientErrorHandler: (err: NodeJS.ErrnoException, socket: Socket) => {
      const code = clientErrorCode(err.code)
      const now = Date.now()
      if (now - clientErrorWindow > 1000) { clientErrorWindow = now; clientErrorsLogged = 0 }
      if (clientErrorsLogged++ < 20) log.info({ code, cause: err.code, ip: socket.remoteAddress }, 'rejected malformed request')
      if (!socket.writable || (err.code === 'ECONNRESET')) { socket.destroy(); return }
      const inFlight = (socket as InFlightSocket)._httpMessage
      // The error is about a later, pipelined request when the one being answered was read to
      // its end: its answer (and any queued behind it) must go first (RFC 9112 §9.3.2), or the
      // client takes the 400 for the answer to an earlier request. nginx reads a pipelined
      // request only once the previous answer is sent, so it answers every earlier request and
      // then 400 + close; Node parses ahead, so the 400 is held until those answers are out.
      if (inFlight != null && inFlight.req?.complete === true) { countMalformed(code); refuseAfterInFlight(socket, code); return }
      // Never write a status line into a response that is already being sent (a request timeout
      // can fire while a streamed answer is under way): close the connection instead.
      if (inFlight?.headersSent === true) { socket.destroy(); return }
      countMalformed(code)
      socket.end(rawError(new SluiceError(code)))
    },
    frameworkErrors: (err: Error, request: FastifyRequest, reply: FastifyReply) => {
      const e = new SluiceError('SLUICE_ERR_BAD_PATH', err.message)
      // Timed from the request's arrival, its code in the access line, and a span.
      const ctx = earlyContext(request, e.code)
      let body: string | null = null
      reply.raw.once('close', () => observe(request, reply.raw.statusCode, errorBytes(request.raw, reply.raw, body)))
      // The ID the request handler assigned goes back, as on every answer.
      const snap = ctx.snap
      const id = ctx.requestId || undefined
      if (id !== undefined) reply.header(snap.requestId.header, id)
      body = id === undefined ? errorBody(e) : errorBody(e, { requestId: id })
      reply.code(e.status).type('application/json').send(body)
    }
  }
  // The serverFactory overloads confuse Fastify's generics; the instance is a plain HTTP/1 one.
  const app = Fastify(options as unknown as Parameters<typeof Fastify>[0]) as unknown as FastifyInstance

  app.decorateRequest('sluice', null)
  app.removeAllContentTypeParsers()
  // Leave every body unread: the pipeline streams it to the upstream.
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined))

  /**
   * An answer the request listener gives before Fastify (a bad Host, a transfer coding Node
   * cannot decode, an Expect other than 100-continue, a new request while draining): written, then counted and logged as
   * every answer is (route `none`). The connection closes after it unless `close` is false.
   */
  const refuse = (req: IncomingMessage, res: ServerResponse, snap: Snapshot, err: SluiceError, id: string, close = true): void => {
    // Timed from the request's arrival: the listener runs from it to here in one synchronous
    // call. The clock is read here rather than at the top of the listener, so a request that is
    // not refused (a hit, a pass-through) pays nothing for it.
    const t0 = performance.now()
    const bytes = writeError(res, err, close, snap.requestId, id)
    record(snap, req, 'none', undefined, err.status, bytes, t0, 'none', '', err.code, id)
    const span = deps.tracing?.on === true ? deps.tracing.server(req.headers, req.method ?? 'GET', performance.timeOrigin + t0) : null
    if (span !== null) Tracing.finish(span, { route: 'none', status: err.status, cache: 'none', retries: 0, method: req.method ?? 'GET', url: req.url, error: err.code })
  }

  /**
   * A request Node could not parse (answered by clientErrorHandler, with no request object):
   * counted in sluice_http_requests_total (route `none`, method `_OTHER`) so a flood of them
   * shows on the error panels. It gets no access line: its log line is the bounded
   * 'rejected malformed request' one (at most 20 a second). Counted when an answer is written
   * (a connection that is only closed is not).
   */
  const countMalformed = (code: ErrorCode): void => {
    if (!deps.current().config.metrics.enabled) return
    metrics.forRoute('none').observe('', new SluiceError(code).status, 'none', 0)
    protoCounters[1].inc()
  }

  /** The one observation per request: a metrics sample and, when enabled, the access line. */
  const record = (snap: Snapshot, raw: RequestView, routeName: string, upstream: string | undefined, status: number, bytes: number, t0: number, cache: CacheResult, clientIp: string, err: string | undefined, reqId: string | undefined): void => {
    const config = snap.config
    const method = raw.method ?? 'GET'
    const ms = t0 > 0 ? performance.now() - t0 : 0
    const proto = raw.httpVersionMajor === 2 ? 2 : raw.httpVersionMinor === 0 ? 0 : 1
    if (config.metrics.enabled) {
      metrics.forRoute(routeName).observe(method, status, cache, ms / 1000)
      protoCounters[proto].inc()
    }
    if (config.log.accessLog) {
      accessLog.write({
        reqId,
        route: routeName,
        upstream,
        method,
        url: raw.url,
        status,
        bytes,
        ms,
        cache,
        ip: clientIp || resolveClientIp(raw.headers, h2Peers.get(raw) ?? raw.socket?.remoteAddress, snap.trust),
        err,
        proto: proto === 1 ? undefined : proto === 2 ? 'h2' : 'http/1.0'
      })
    }
  }

  /** The request's ID: the pipeline's copy, or (a request Fastify answered itself) the one the request handler assigned. */
  const requestIdOf = (request: FastifyRequest, snap: Snapshot): string | undefined =>
    request.sluice ? request.sluice.requestId || undefined : request.raw.headers[snap.requestId.name] as string | undefined

  /**
   * The context of a request Fastify answers itself before the pipeline runs (a path it cannot
   * decode, a Content-Type it cannot parse: 415, a QUERY without one: 400): its error code for
   * the access line, a SERVER span when tracing is on, and its t0. Fastify raises these from
   * its router, in the same synchronous call as the request listener above (as the pipeline
   * takes its t0): now is the request's arrival.
   */
  const earlyContext = (request: FastifyRequest, code: ErrorCode): RequestContext => {
    const t0 = performance.now()
    const snap = deps.current()
    const ctx = new RequestContext(snap, t0)
    ctx.requestId = (request.raw.headers[snap.requestId.name] as string | undefined) ?? ''
    ctx.errorCode = code
    if (deps.tracing?.on === true) ctx.trace = deps.tracing.server(request.raw.headers, request.raw.method ?? 'GET', performance.timeOrigin + t0)
    request.sluice = ctx
    return ctx
  }

  /** Called exactly once per request that went through Fastify. */
  const observe = (request: FastifyRequest, status: number, bytes: number): void => {
    const ctx = request.sluice
    // undefined, not null, on a request Fastify answered itself (an unsupported method such as PRI)
    if (ctx && ctx.observed) return
    if (ctx) ctx.observed = true
    const snap = ctx?.snap ?? deps.current()
    record(snap, request.raw, ctx?.route?.name ?? 'none', ctx?.route?.upstream.name, status, bytes, ctx?.t0 ?? 0, ctx?.cacheResult ?? 'none', ctx?.clientIp ?? '', ctx?.errorCode ?? undefined, requestIdOf(request, snap))
    const span = ctx?.trace
    if (span) Tracing.finish(span, { route: ctx.route?.name ?? 'none', upstream: ctx.route?.upstream.name, status, cache: ctx.cacheResult, retries: Math.max(0, (ctx.ureq?.attempts ?? 0) - 1), method: request.raw.method ?? 'GET', url: request.raw.url, error: ctx.errorCode ?? undefined })
  }

  const tracing = deps.tracing
  fast = createFastPath(deps.cache, (snap, raw, routeName, upstream, status, bytes, t0, requestId) => {
    record(snap, raw, routeName, upstream, status, bytes, t0, 'hit', '', undefined, requestId)
    // A hit answered before Fastify gets its span too (made and closed here, from t0).
    if (tracing?.on === true) {
      const span = tracing.server(raw.headers, raw.method ?? 'GET', performance.timeOrigin + t0)
      if (span !== null) Tracing.finish(span, { route: routeName, upstream, status, cache: 'hit', retries: 0, method: raw.method ?? 'GET', url: raw.url })
    }
  })

  const handle = createPipeline({ ...deps, observe, draining: () => tunnels.draining })
  app.all('/*', handle)
  app.setNotFoundHandler(handle)

  app.setErrorHandler((err: FastifyError | SluiceError, request, reply) => {
    let e: SluiceError
    if (isSluiceError(err)) e = err
    else if (err.statusCode === 413) e = new SluiceError('SLUICE_ERR_BODY_TOO_LARGE')
    else if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) e = new SluiceError('SLUICE_ERR_BAD_REQUEST', err.message)
    else e = new SluiceError('SLUICE_ERR_INTERNAL')
    // No context: Fastify raised it before the pipeline ran (its 415 for a Content-Type it cannot
    // parse, say). Timed from the request's arrival, with its code and a span, as every answer.
    const ctx = request.sluice ?? earlyContext(request, e.code)
    const snap = ctx.snap
    const reqId = requestIdOf(request, snap)
    // The client's connection is already gone: nothing can be answered. It was cut by the end of
    // a drain (the pools close after it, so the upstream request fails too) or the client left;
    // either way it is one access line, not an upstream error.
    if (request.raw.socket?.destroyed === true) {
      if (e.code === 'SLUICE_ERR_INTERNAL') log.error({ reqId, err, url: request.url }, 'internal error')
      const shutdown = tunnels.draining
      ctx.errorCode = shutdown ? 'SLUICE_ERR_SHUTTING_DOWN' : 'SLUICE_ERR_CLIENT_CLOSED'
      observe(request, shutdown ? 503 : 499, 0)
      reply.raw.destroy()
      return
    }
    if (e.code === 'SLUICE_ERR_INTERNAL') log.error({ reqId, err, url: request.url }, 'internal error')
    ctx.errorCode = e.code
    if (e.status >= 500 && e.code !== 'SLUICE_ERR_INTERNAL') {
      log.warn({ reqId, code: e.code, route: ctx.route?.name, upstream: ctx.route?.upstream.name, target: e.target, detail: e.message }, 'upstream error')
    }
    let body: string | null = null
    if (!request.raw.socket?.destroyed) reply.raw.once('close', () => observe(request, reply.raw.statusCode, errorBytes(request.raw, reply.raw, body)))
    if (e.code === 'SLUICE_ERR_CLIENT_CLOSED') { reply.code(499); observe(request, 499, 0); reply.raw.destroy(); return }
    reply.code(e.status).header('content-type', 'application/json; charset=utf-8')
    if (e.headers) reply.headers(e.headers)
    if (reqId === undefined) return reply.send(body = errorBody(e))
    reply.header(snap.requestId.header, reqId)
    return reply.send(body = errorBody(e, { requestId: reqId }))
  })


  // Closing refuses new tunnels (503), as the request listener refuses new requests.
  app.addHook('preClose', async () => { tunnels.draining = true })
  app.addHook('onClose', async () => { accessLog.close() })
  app.server.on('upgrade', handleUpgrade(tunnels, (req, socket, head) => {
    // An Upgrade Sluice does not take (not WebSocket): the request as a plain one, on a response
    // of its own (Node's parser has let go of the socket), and the connection closes after it.
    // Node's parser ends the request at its head: a body (Content-Length bytes, the first of
    // them in `head`) is read from the socket here, into a message of its own.
    let incoming = req
    const length = Number(req.headers['content-length'] ?? 0)
    if (length > 0) {
      const m = new IncomingMessage(socket as Socket)
      m.method = req.method
      m.url = req.url
      m.headers = req.headers
      m.rawHeaders = req.rawHeaders
      m.httpVersion = req.httpVersion
      m.httpVersionMajor = req.httpVersionMajor
      m.httpVersionMinor = req.httpVersionMinor
      let left = length
      const feed = (b: Buffer): void => {
        const part = b.length > left ? b.subarray(0, left) : b
        left -= part.length
        if (part.length > 0 && !m.push(part)) socket.pause()
        if (left === 0) { socket.off('data', feed); m.complete = true; m.push(null) }
      }
      feed(head)
      if (left > 0) socket.on('data', feed)
      incoming = m
    } else if (!req.complete) { req.complete = true; req.push(null) }
    const res = new ServerResponse(incoming)
    res.shouldKeepAlive = false
    res.assignSocket(socket as Socket)
    // Node's server passes the socket's 'drain' on to the response it is writing; this one too.
    const drain = (): void => { res.emit('drain') }
    socket.on('drain', drain)
    res.once('finish', () => { socket.off('drain', drain); res.detachSocket(socket as Socket); socket.end() })
    app.server.emit('request', incoming, res)
  }))
  return app
}

export type { Snapshot }
