// Per-request state, attached as request.sluice (declared with decorateRequest so every
// request object keeps one shape). It holds the snapshot captured once at the start.
import type { Span } from '@opentelemetry/api'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { BlockList } from 'node:net'
import type { HeaderEdits, RouteEntry, Snapshot } from './config/snapshot.js'
import type { CacheResult, Headers, UpstreamRequest } from './types.js'
import { resolveClientIp, schemeOf } from './forwarding.js'
import { connectionTokens, isHopByHop } from './upstream/headers.js'
import { editResponseHeaders } from './upstream/rewrite.js'

/**
 * A response that closed before all of it was sent (the client left, or reset its stream).
 * Both flags are read: an HTTP/2 compatibility response reports writableFinished once its
 * stream closes, reset or not, and only writableEnded tells that nothing ended it.
 */
export function cutShort (res: { writableEnded: boolean; writableFinished: boolean }): boolean {
  return !res.writableEnded || !res.writableFinished
}

/** The response's connection (HTTP/1) or stream (HTTP/2, which has no `destroyed` of its own) is gone. */
export function responseGone (res: ServerResponse): boolean {
  const r = res as ServerResponse & { stream?: { destroyed: boolean } }
  return (r.destroyed ?? r.stream?.destroyed) === true
}

export class RequestContext {
  route: RouteEntry | null = null
  cacheResult: CacheResult = 'none'
  /** Stable error code when the gateway answered with an error. */
  errorCode: string | null = null
  clientIp = ''
  /** [route ms, limit ms] when the route sends Server-Timing, else null. */
  timing: [number, number] | null = null
  /** Set once metrics and the access line were written for this request. */
  observed = false
  /** The request ID (src/request-id.ts), assigned before the request reached Fastify. */
  requestId = ''
  /** The request's SERVER span (tracing on and sampled), made before routing so that every answer has one; ended when the request is observed. */
  trace: Span | null = null
  /** The upstream request: its attempt count, read when the request is observed. */
  ureq: { trace?: Span | null, attempts?: number } | null = null
  constructor (readonly snap: Snapshot, readonly t0: number = performance.now()) {}
}

/**
 * The UpstreamRequest for a client request. Its abort signal is made on first use only, so a
 * cache hit (which never reaches the upstream) allocates no AbortController or listener.
 */
export class ClientUpstreamRequest implements UpstreamRequest {
  method: string
  path: string
  /** The client's headers as received: forwarding headers are added to the upstream copy only. */
  headers: Headers
  body: UpstreamRequest['body']
  readBody?: () => Promise<Buffer>
  host: string
  protocol: 'http' | 'https' = 'http'
  readonly forwarded: { peer: string | undefined; trust: BlockList | null }
  readonly requestIdHeader: string | undefined
  readonly httpVersion: string
  trace: Span | null = null
  attempts = 0
  private ip: string | null = null
  private controller: AbortController | null = null
  private bridged = false
  /** RFC 9110 §15.2: no 1xx to an HTTP/1.0 client (it takes the first status line for the answer). */
  private readonly interimOk: boolean
  constructor (raw: IncomingMessage, private readonly res: ServerResponse, path: string, body: UpstreamRequest['body'], trust: BlockList | null, clientIp: string | null, private readonly edits: HeaderEdits | null = null, requestIdName?: string) {
    this.interimOk = raw.httpVersionMajor > 1 || (raw.httpVersionMajor === 1 && raw.httpVersionMinor >= 1)
    this.method = raw.method ?? 'GET'
    this.httpVersion = raw.httpVersion
    this.path = path
    this.headers = raw.headers as Headers
    this.requestIdHeader = requestIdName
    this.body = body
    this.host = raw.headers.host ?? ''
    this.protocol = schemeOf(raw.socket)
    this.forwarded = { peer: raw.socket.remoteAddress, trust }
    this.ip = clientIp
  }

  /**
   * An interim response from the upstream: 103 Early Hints (and 102) go to the client as they
   * arrive, before the final response; they are never stored (the cache sees only the final one).
   * An HTTP/1.0 client gets neither. A 103 loses its hop-by-hop fields and those its own
   * Connection names, and gets the route's response edits (headers.response), as the final
   * response does.
   */
  readonly onInfo = (info: { statusCode: number, headers: Record<string, string | string[] | undefined> }): void => {
    const res = this.res
    if (res.headersSent || responseGone(res) || !this.interimOk) return
    try {
      if (info.statusCode === 103) {
        const named = connectionTokens(info.headers.connection)
        const hints: Record<string, string | string[]> = {}
        for (const k in info.headers) {
          const v = info.headers[k]
          if (v !== undefined && !isHopByHop(k) && !named.includes(k)) hints[k] = v
        }
        if (this.edits !== null) editResponseHeaders(hints, this.edits)
        if (hints.link !== undefined) res.writeEarlyHints(hints)
      } else if (info.statusCode === 102 && typeof (res as { writeProcessing?: () => void }).writeProcessing === 'function') {
        res.writeProcessing()
      }
    } catch { /* a hint that cannot be written is dropped: the final response still comes */ }
  }

  /** Resolved on first use: a cache hit never needs it. */
  get clientIp (): string {
    if (this.ip === null) this.ip = resolveClientIp(this.headers, this.forwarded.peer, this.forwarded.trust)
    return this.ip
  }

  /**
   * The ServerResponse itself, made to emit 'abort' when the client goes away before the
   * response is finished: one 'close' listener, no AbortController or EventTarget per request.
   */
  get abortEmitter (): ServerResponse {
    const res = this.res
    if (!this.bridged) {
      this.bridged = true
      res.once('close', () => { if (cutShort(res)) res.emit('abort') })
    }
    return res
  }

  clientGone (): boolean {
    return responseGone(this.res) && cutShort(this.res)
  }

  get signal (): AbortSignal {
    if (this.controller === null) {
      const c = new AbortController()
      this.controller = c
      const res = this.res
      if (responseGone(res) && cutShort(res)) c.abort()
      else res.once('close', () => { if (cutShort(res)) c.abort() })
    }
    return this.controller.signal
  }
}
