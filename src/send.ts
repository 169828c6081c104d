// Writing a response straight to Node's ServerResponse: one header array, one writeHead.
// writeStored: bytes in hand (a cache hit, a 304, a HEAD), then one end. The fast path (before
// Fastify) and the pipeline (after it) both send stored responses through here.
// writeStreamed: a streamed body (pass-through, a miss, on-the-fly compression), piped.
import type { ServerResponse } from 'node:http'
import type { OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2'
import type { Readable } from 'node:stream'
import type { ProxyResponse } from './types.js'
import type { RequestIdRule } from './request-id.js'

type Extra = Record<string, string | number | string[] | undefined>

/**
 * `rid`: this request's ID header rule (src/request-id.ts) and `id` its value. A stored or
 * upstream copy of that header (an origin that echoes it) gives way to this request's.
 */
function headerArray (res: ProxyResponse, extra: Extra | undefined, rid: RequestIdRule | undefined, id: string | undefined): string[] {
  const flat: string[] = []
  const h = res.headers
  const skip = rid === undefined || id === undefined ? '' : rid.name
  if (skip !== '') flat.push(rid!.header, id!)
  for (const k in h) {
    const v = h[k]
    if (v === undefined || k === skip) continue
    if (typeof v === 'string') flat.push(k, v)
    else for (let i = 0; i < v.length; i++) flat.push(k, v[i])
  }
  if (extra !== undefined) for (const k in extra) { const v = extra[k]; if (v !== undefined && k !== skip) flat.push(k, String(v)) }
  if (res.cacheStatus !== undefined) flat.push('cache-status', res.cacheStatus)
  if (res.age !== undefined) flat.push('age', res.age)
  return flat
}

export function writeStored (out: ServerResponse, res: ProxyResponse, extra?: Extra, rid?: RequestIdRule, id?: string): void {
  out.writeHead(res.status, headerArray(res, extra, rid, id))
  out.end(res.body ?? undefined)
}

/**
 * writeStored on a raw HTTP/2 stream (the fast path answers h2 hits there, before Node's
 * compatibility layer): the same header list, as the object `respond()` takes, in one HEADERS
 * frame, then the body in DATA unless there is none (HEAD).
 */
export function respondStored (stream: ServerHttp2Stream, res: ProxyResponse, rid: RequestIdRule, id: string): void {
  const flat = headerArray(res, undefined, rid, id)
  const h: OutgoingHttpHeaders = { ':status': res.status }
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i]
    const had = h[k]
    h[k] = had === undefined ? flat[i + 1] : Array.isArray(had) ? [...had, flat[i + 1]] : [String(had), flat[i + 1]]
  }
  const body = res.body as Buffer | null
  if (body === null) { stream.respond(h, { endStream: true }); return }
  stream.respond(h)
  stream.end(body)
}

/**
 * Send a streamed body with backpressure (pipe). If the body fails part-way, the client's
 * connection is cut, so a truncated response never looks complete (`onBodyError` is told
 * why); if the client goes away first, the body is destroyed, which closes its upstream
 * connection instead of reading the rest.
 */
export function writeStreamed (out: ServerResponse, res: ProxyResponse, body: Readable, extra: Extra | undefined, rid: RequestIdRule | undefined, id: string | undefined, onBodyError: (err: Error) => void): void {
  out.writeHead(res.status, headerArray(res, extra, rid, id))
  body.on('error', (err) => { onBodyError(err); out.destroy() })
  out.on('close', () => { if (!body.destroyed) body.destroy() })
  body.pipe(out)
}
