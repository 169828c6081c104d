// One undici keep-alive pool per upstream, kept across reloads while its settings are the
// same. A changed or removed upstream gets a new pool; the old one closes once its in-flight
// requests (open SSE streams included) are done.
import { readFileSync } from 'node:fs'
import { Pool } from 'undici'
import type { Logger } from 'pino'
import type { UpstreamEntry } from '../config/compile.js'

interface PoolRecord { key: string; pool: Pool }

function poolKey (u: UpstreamEntry): string {
  const c = u.config
  return JSON.stringify([u.origin, c.connections, c.connectTimeoutMs, c.keepAliveTimeoutMs, c.bodyTimeoutMs, c.tls])
}

function createPool (u: UpstreamEntry): Pool {
  const c = u.config
  return new Pool(u.origin, {
    connections: c.connections,
    pipelining: 1,
    keepAliveTimeout: c.keepAliveTimeoutMs,
    headersTimeout: c.timeoutMs,
    bodyTimeout: c.bodyTimeoutMs,
    connect: {
      timeout: c.connectTimeoutMs,
      rejectUnauthorized: c.tls.rejectUnauthorized,
      ...(c.tls.servername ? { servername: c.tls.servername } : {}),
      ...(c.tls.caFile ? { ca: readFileSync(c.tls.caFile) } : {})
    }
  })
}

export class PoolRegistry {
  private readonly pools = new Map<string, PoolRecord>()
  constructor (private readonly log: Logger) {}

  /** Create pools for new or changed upstreams; close the ones no longer used (gracefully). */
  reconcile (upstreams: Readonly<Record<string, UpstreamEntry>>): void {
    for (const [name, u] of Object.entries(upstreams)) {
      const key = poolKey(u)
      const cur = this.pools.get(name)
      if (cur && cur.key === key) continue
      this.pools.set(name, { key, pool: createPool(u) })
      if (cur) this.retire(name, cur.pool)
    }
    for (const [name, rec] of this.pools) {
      if (!Object.hasOwn(upstreams, name)) { this.pools.delete(name); this.retire(name, rec.pool) }
    }
  }

  get (name: string): Pool {
    const rec = this.pools.get(name)
    if (!rec) throw new Error(`no pool for upstream ${name}`)
    return rec.pool
  }

  stats (): Record<string, { connected: number; free: number; pending: number; queued: number; running: number; size: number }> {
    const out: Record<string, { connected: number; free: number; pending: number; queued: number; running: number; size: number }> = {}
    for (const [name, { pool }] of this.pools) {
      const s = pool.stats
      out[name] = { connected: s.connected, free: s.free, pending: s.pending, queued: s.queued, running: s.running, size: s.size }
    }
    return out
  }

  private retire (name: string, pool: Pool): void {
    pool.close().then(
      () => this.log.debug({ upstream: name }, 'old upstream pool closed'),
      (err) => this.log.warn({ upstream: name, err: err.message }, 'old upstream pool did not close cleanly')
    )
  }

  async close (): Promise<void> {
    const all = [...this.pools.values()]
    this.pools.clear()
    await Promise.all(all.map(({ pool }) => pool.destroy().catch(() => {})))
  }
}
