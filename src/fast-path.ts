// The fast path for the hottest request: a fresh L1 cache hit on a plain GET or HEAD. It runs
// in the server's request handler before Fastify, writes the stored bytes and returns true;
// anything it does not handle plainly (an encoded path, conditionals, Range, Authorization,
// request cache directives, limits, Server-Timing, a miss) returns false and goes through
// Fastify and the full pipeline (src/pipeline.ts), which gives the same answer, slower.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Snapshot } from './config/snapshot.js'
import type { CacheStage } from './httpcache/stage.js'
import type { Headers, UpstreamRequest } from './types.js'
import { writeStored } from './send.js'
import { declaredBodyBytes } from './observability/metrics.js'

export type FastObserve = (snap: Snapshot, req: IncomingMessage, routeName: string, upstream: string, status: number, bytes: number, t0: number, requestId: string) => void

/** `snap` is the snapshot the server's request handler read for this request (one read per request). */
export function createFastPath (cache: CacheStage, observe: FastObserve) {
  return function fastHit (req: IncomingMessage, res: ServerResponse, snap: Snapshot, requestId: string): boolean {
    const method = req.method
    if (method !== 'GET' && method !== 'HEAD') return false
    const t0 = performance.now()
    const url = req.url ?? '/'
    if (url.length > snap.config.server.maxUrlBytes || req.rawHeaders.length > 2 * snap.config.server.maxHeadersCount) return false
    const q = url.indexOf('?')
    const path = q === -1 ? url : url.slice(0, q)
    if (path.charCodeAt(0) !== 47 || path.indexOf('%') !== -1 || path.indexOf('/.') !== -1 || path.indexOf('\\') !== -1) return false
    const h = req.headers
    if (h.authorization !== undefined || h.range !== undefined || h['cache-control'] !== undefined || h.pragma !== undefined ||
      h['if-none-match'] !== undefined || h['if-modified-since'] !== undefined || h.upgrade !== undefined) return false
    const route = snap.router.match(h.host, method, path)
    if (route === null || !route.cache.enabled || route.rateLimit !== null || route.serverTiming) return false
    const ureq: UpstreamRequest = { method, path: url, headers: h as Headers, body: null, host: h.host ?? '', protocol: 'http', clientIp: '' }
    const hit = cache.peek(route, ureq)
    if (hit === null) return false
    writeStored(res, hit, undefined, snap.requestId, requestId)
    const body = hit.body as Buffer | null
    const bytes = body === null ? 0 : body.length
    // Body sizes (the stage's metrics: gateway.ts hands the fast path the stage only).
    const m = cache.metrics
    if (m !== undefined && snap.config.metrics.enabled) m.forRoute(route.name).sizes(declaredBodyBytes(h), bytes)
    observe(snap, req, route.name, route.upstream.name, hit.status, bytes, t0, requestId)
    return true
  }
}
