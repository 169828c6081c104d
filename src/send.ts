// Writing a response straight to Node's ServerResponse: one header array, one writeHead.
// writeStored: bytes in hand (a cache hit, a 304, a HEAD), then one end. The fast path (before
// Fastify) and the pipeline (after it) both send stored responses through here.
// writeStreamed: a streamed body (pass-through, a miss, on-the-fly compression), piped.
import type { ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import type { ProxyResponse } from './types.js'

type Extra = Record<string, string | number | string[] | undefined>

function headerArray (res: ProxyResponse, extra: Extra | undefined): string[] {
  const flat: string[] = []
  const h = res.headers
  for (const k in h) {
    const v = h[k]
    if (v === undefined) continue
    if (typeof v === 'string') flat.push(k, v)
    else for (let i = 0; i < v.length; i++) flat.push(k, v[i])
  }
  if (extra !== undefined) for (const k in extra) { const v = extra[k]; if (v !== undefined) flat.push(k, String(v)) }
  if (res.cacheStatus !== undefined) flat.push('cache-status', res.cacheStatus)
  if (res.age !== undefined) flat.push('age', res.age)
  return flat
}

export function writeStored (out: ServerResponse, res: ProxyResponse, extra?: Extra): void {
  out.writeHead(res.status, headerArray(res, extra))
  out.end(res.body ?? undefined)
}

/**
 * Send a streamed body with backpressure (pipe). If the body fails part-way, the client's
 * connection is cut, so a truncated response never looks complete (`onBodyError` is told
 * why); if the client goes away first, the body is destroyed, which closes its upstream
 * connection instead of reading the rest.
 */
export function writeStreamed (out: ServerResponse, res: ProxyResponse, body: Readable, extra: Extra | undefined, onBodyError: (err: Error) => void): void {
  out.writeHead(res.status, headerArray(res, extra))
  body.on('error', (err) => { onBodyError(err); out.destroy() })
  out.on('close', () => { if (!body.destroyed) body.destroy() })
  body.pipe(out)
}
