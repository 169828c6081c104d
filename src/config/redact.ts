// The config as GET /admin/config shows it, secrets replaced; `sluice config diff` redacts its
// local file the same way, so both sides compare alike.
import type { Snapshot } from './snapshot.js'
import { redactUrl } from '../observability/logger.js'

/** Every value of a header map replaced (header edits and exporter headers carry API keys). */
function redactHeaderValues (m: unknown): void {
  if (m === null || typeof m !== 'object') return
  for (const k of Object.keys(m)) (m as Record<string, unknown>)[k] = '[redacted]'
}

/** The config as /admin/config shows it: secrets replaced. */
export function redactConfig (config: Snapshot['config']): unknown {
  const c = structuredClone(config) as unknown as Record<string, Record<string, unknown>>
  if (c.admin?.token) c.admin.token = '[redacted]'
  // Values a route (or the route defaults) sets on requests and responses, and the OTLP
  // exporter's headers: often `Authorization: Bearer ...` or an API key.
  const edits = (r: unknown) => {
    const h = (r as { headers?: { request?: { set?: unknown }; response?: { set?: unknown } } } | null)?.headers
    redactHeaderValues(h?.request?.set)
    redactHeaderValues(h?.response?.set)
  }
  for (const r of (c.routes as unknown as unknown[] | undefined) ?? []) edits(r)
  edits(c.defaults)
  redactHeaderValues((c.tracing as { otlp?: { headers?: unknown } } | undefined)?.otlp?.headers)
  if (typeof c.redis?.url === 'string' && c.redis.url) c.redis.url = redactUrl(c.redis.url)
  // Redis Cluster / Sentinel / ACL credentials (src/redis/client.ts).
  for (const k of ['password', 'sentinelPassword']) if (c.redis?.[k]) c.redis[k] = '[redacted]'
  const cl = c.redis?.cluster as { nodes?: string[] } | undefined
  if (Array.isArray(cl?.nodes)) cl.nodes = cl.nodes.map((n) => /^rediss?:\/\//.test(n) ? redactUrl(n) : n)
  return c
}

