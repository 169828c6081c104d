// /admin/upstreams with workers: each worker has its own pools, breakers and target health
// (it checks and ejects on its own), so the primary merges their answers. Pool counts and
// requests in flight are summed; a target is listed when any worker has it, and `healthy`
// only when every worker has it in rotation (`healthyIn` says how many do); the breaker
// shown is the worst state; each worker's own view stays under `perWorker`.

export interface TargetView { target: string, healthy: boolean, ejected: boolean, inFlight: number, pool?: Record<string, number>, healthyIn?: number, [k: string]: unknown }

export interface UpstreamView {
  url?: string
  balance?: string
  pool?: Record<string, number>
  breaker?: { state?: string } & Record<string, unknown>
  targets?: TargetView[]
  [k: string]: unknown
}

const BREAKER_RANK: Record<string, number> = { closed: 0, 'half-open': 1, open: 2 }

function sum (a: Record<string, number> | undefined, b: Record<string, number> | undefined): Record<string, number> {
  const out: Record<string, number> = { ...(a ?? {}) }
  for (const [k, v] of Object.entries(b ?? {})) if (typeof v === 'number') out[k] = (out[k] ?? 0) + v
  return out
}

export function mergeUpstreams (workers: { pid: number | undefined, upstreams: Record<string, UpstreamView> | undefined }[]): Record<string, unknown> {
  const out: Record<string, UpstreamView & { workers: number, perWorker: unknown[] }> = {}
  for (const { pid, upstreams } of workers) {
    if (!upstreams) continue
    for (const [name, u] of Object.entries(upstreams)) {
      const cur = out[name]
      if (cur === undefined) {
        out[name] = {
          ...u,
          targets: (u.targets ?? []).map((t) => ({ ...t, healthyIn: t.healthy && !t.ejected ? 1 : 0 })),
          workers: 1,
          perWorker: [{ pid, breaker: u.breaker, pool: u.pool, targets: u.targets }]
        }
        continue
      }
      cur.workers++
      cur.pool = sum(cur.pool, u.pool)
      if ((BREAKER_RANK[u.breaker?.state ?? 'closed'] ?? 0) > (BREAKER_RANK[cur.breaker?.state ?? 'closed'] ?? 0)) cur.breaker = u.breaker
      const merged = cur.targets ?? (cur.targets = [])
      const theirs = u.targets ?? []
      for (const t of theirs) {
        const mine = merged.find((x) => x.target === t.target)
        if (!mine) {
          // A target the workers before did not have (a reload reaching workers one by one):
          // listed, but not healthy, since they do not have it in rotation.
          merged.push({ ...t, healthy: false, healthyIn: t.healthy && !t.ejected ? 1 : 0 })
          continue
        }
        mine.healthy = mine.healthy && t.healthy
        mine.ejected = mine.ejected || t.ejected
        mine.inFlight += t.inFlight
        mine.healthyIn = (mine.healthyIn ?? 0) + (t.healthy && !t.ejected ? 1 : 0)
        mine.pool = sum(mine.pool, t.pool)
      }
      // A target this worker does not have is not in rotation there.
      for (const mine of merged) if (!theirs.some((t) => t.target === mine.target)) mine.healthy = false
      cur.perWorker.push({ pid, breaker: u.breaker, pool: u.pool, targets: u.targets })
    }
  }
  return out
}
