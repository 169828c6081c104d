// The fast path for the hottest request: a fresh L1 cache hit on a plain GET or HEAD. It runs
// before Fastify (HTTP/1.1: in the server's request handler; HTTP/2: on the raw stream, before
// Node's compatibility layer builds request and response objects), writes the stored bytes and
// returns true; anything it does not handle plainly (an encoded path, conditionals, Range,
// Authorization, request cache directives, limits, Server-Timing, a miss) returns false and goes
// through Fastify and the full pipeline (src/pipeline.ts), which gives the same answer, slower.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ServerHttp2Stream } from 'node:http2'
import type { Snapshot } from './config/snapshot.js'
import type { CacheStage } from './httpcache/stage.js'
import type { Headers, ProxyResponse, UpstreamRequest } from './types.js'
import { writeStoredHead, respondStored } from './send.js'
import { assignRequestId } from './request-id.js'
import { declaredBodyBytes } from './observability/metrics.js'

/** What the fast path and the request observer read of a request: an IncomingMessage, or an HTTP/2 stream's view of one. */
export type RequestView = Pick<IncomingMessage, 'method' | 'url' | 'headers' | 'rawHeaders' | 'httpVersionMajor' | 'httpVersionMinor'> & { socket?: { remoteAddress?: string } | null }

export type FastObserve = (snap: Snapshot, req: RequestView, routeName: string, upstream: string, status: number, bytes: number, t0: number, requestId: string) => void

export interface FastPath {
  /** HTTP/1.x: `snap` is the snapshot the request handler read for this request (one read per request). */
  h1 (req: IncomingMessage, res: ServerResponse, snap: Snapshot, requestId: string): boolean
  /**
   * HTTP/2: the stream and a view of its request (pseudo-headers in `headers`, Host set from
   * :authority). The request ID is assigned here, on a hit only: a miss gets its one ID from the
   * request listener it goes on to.
   */
  h2 (req: RequestView, stream: ServerHttp2Stream, snap: Snapshot): boolean
}

function writeH1 (res: ServerResponse, hit: ProxyResponse, snap: Snapshot, id: string): void {
  writeStoredHead(res, hit, snap.requestId, id)
}

function writeH2 (stream: ServerHttp2Stream, hit: ProxyResponse, snap: Snapshot, id: string): void {
  respondStored(stream, hit, snap.requestId, id)
}

export function createFastPath (cache: CacheStage, observe: FastObserve): FastPath {
  function serve<Out> (req: RequestView, out: Out, write: (out: Out, hit: ProxyResponse, snap: Snapshot, id: string) => void, snap: Snapshot, assigned: string | null): boolean {
    const method = req.method
    if (method !== 'GET' && method !== 'HEAD') return false
    const t0 = performance.now()
    const url = req.url ?? '/'
    if (url.length > snap.config.server.maxUrlBytes || req.rawHeaders.length > 2 * snap.config.server.maxHeadersCount) return false
    const q = url.indexOf('?')
    const path = q === -1 ? url : url.slice(0, q)
    if (path.charCodeAt(0) !== 47 || path.indexOf('%') !== -1 || path.indexOf('/.') !== -1 || path.indexOf('//') !== -1 || path.indexOf('\\') !== -1) return false
    const h = req.headers
    if (h.authorization !== undefined || h.range !== undefined || h['cache-control'] !== undefined || h.pragma !== undefined ||
      h['if-none-match'] !== undefined || h['if-modified-since'] !== undefined || h.upgrade !== undefined ||
      // A request with a body takes the full path, where the route's maxBodyBytes applies.
      (h['content-length'] !== undefined && h['content-length'] !== '0') || h['transfer-encoding'] !== undefined) return false
    const route = snap.router.match(h.host, method, path)
    if (route === null || !route.cache.enabled || route.rateLimit !== null || route.serverTiming) return false
    const ureq: UpstreamRequest = { method, path: url, headers: h as Headers, body: null, host: h.host ?? '', protocol: 'http', clientIp: '' }
    const hit = cache.peek(route, ureq)
    if (hit === null) return false
    const requestId = assigned ?? assignRequestId(req, snap.requestId)
    write(out, hit, snap, requestId)
    const body = hit.body as Buffer | null
    const bytes = body === null ? 0 : body.length
    // Body sizes (the stage's metrics: gateway.ts hands the fast path the stage only).
    const m = cache.metrics
    if (m !== undefined && snap.config.metrics.enabled) m.forRoute(route.name).sizes(declaredBodyBytes(h), bytes)
    observe(snap, req, route.name, route.upstream.name, hit.status, bytes, t0, requestId)
    return true
  }
  return {
    h1: (req, res, snap, id) => serve(req, res, writeH1, snap, id),
    h2: (req, stream, snap) => !stream.destroyed && serve(req, stream, writeH2, snap, null)
  }
}
