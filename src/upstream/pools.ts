// One undici keep-alive pool per upstream, kept across reloads while its settings are the
// same. A changed or removed upstream gets a new pool; the old one closes once its in-flight
// requests (open SSE streams included) are done. A reload first prepares the new pools
// (nothing live changes, and a failure destroys them), then commits them after the swap.
import { createHash } from 'node:crypto'
import { Pool } from 'undici'
import type { Logger } from 'pino'
import type { UpstreamEntry } from '../config/snapshot.js'

interface PoolRecord { key: string; pool: Pool }

function poolKey (u: UpstreamEntry): string {
  const c = u.config
  const ca = u.tls.ca ? createHash('sha256').update(u.tls.ca).digest('hex') : null
  return JSON.stringify([u.origin, c.connections, c.connectTimeoutMs, c.keepAliveTimeoutMs, c.bodyTimeoutMs, c.timeoutMs, u.tls.rejectUnauthorized, u.tls.servername ?? null, ca])
}

function createPool (u: UpstreamEntry): Pool {
  const c = u.config
  return new Pool(u.origin, {
    connections: c.connections,
    pipelining: 1,
    keepAliveTimeout: c.keepAliveTimeoutMs,
    headersTimeout: c.timeoutMs,
    bodyTimeout: c.bodyTimeoutMs,
    // The upstream's TLS options as compiled (CA bytes read at load), shared with WebSocket tunnels.
    connect: { timeout: c.connectTimeoutMs, ...u.tls }
  })
}

/** New pools built for a config, not yet in use: commit() installs them (after the swap), abort() destroys them. */
export interface PoolPlan {
  /** Install the new pools and retire the replaced and removed ones. Does not throw. */
  commit (): void
  /** Destroy the new pools; the live ones were never touched. */
  abort (): void
}

function destroyAll (recs: Map<string, PoolRecord>): void {
  for (const { pool } of recs.values()) pool.destroy().catch(() => {})
}

export class PoolRegistry {
  private readonly pools = new Map<string, PoolRecord>()
  constructor (private readonly log: Logger) {}

  /**
   * Build pools for new or changed upstreams without installing them. Throws (after
   * destroying what it built) when one cannot be created; the live pools are untouched.
   */
  prepare (upstreams: Readonly<Record<string, UpstreamEntry>>): PoolPlan {
    const built = new Map<string, PoolRecord>()
    try {
      for (const [name, u] of Object.entries(upstreams)) {
        const key = poolKey(u)
        const cur = this.pools.get(name)
        if (cur && cur.key === key) continue
        built.set(name, { key, pool: createPool(u) })
      }
    } catch (err) {
      destroyAll(built)
      throw err
    }
    let settled = false
    return {
      commit: () => {
        if (settled) return
        settled = true
        for (const [name, rec] of built) {
          const cur = this.pools.get(name)
          this.pools.set(name, rec)
          if (cur) this.retire(name, cur.pool)
        }
        for (const [name, rec] of this.pools) {
          if (!Object.hasOwn(upstreams, name)) { this.pools.delete(name); this.retire(name, rec.pool) }
        }
      },
      abort: () => {
        if (settled) return
        settled = true
        destroyAll(built)
      }
    }
  }

  /** prepare() and commit() at once (start-up: there is no snapshot to swap yet). */
  reconcile (upstreams: Readonly<Record<string, UpstreamEntry>>): void {
    this.prepare(upstreams).commit()
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
