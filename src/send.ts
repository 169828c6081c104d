// Writing a response whose bytes are in hand (a cache hit, a 304, a HEAD) straight to Node's
// ServerResponse: one header array, one writeHead, one end. The fast path (before Fastify)
// and the pipeline (after it) both send stored responses through here.
import type { ServerResponse } from 'node:http'
import type { ProxyResponse } from './types.js'

export function writeStored (out: ServerResponse, res: ProxyResponse, extra?: Record<string, string | number | string[] | undefined>): void {
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
  out.writeHead(res.status, flat)
  out.end(res.body ?? undefined)
}
