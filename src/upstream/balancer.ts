// Which target of an upstream gets a request: the balancing rules and each target's state
// (active health, passive ejection, requests in flight). Pure logic over TargetState, so the
// rules are tested without sockets; targets.ts adds the pools, the checks and the metrics.
//
// - A target is in rotation when its health checks pass (it starts healthy) and it is not
//   ejected. Passive ejection follows outlierDetection.consecutiveErrors failures in a row
//   (connect errors, resets, timeouts, 5xx) and lasts ejectMs. A target is ejected only while
//   fewer than maxEjectedPercent of the targets (rounded down, at least one of two or more)
//   are out of rotation for any reason, failed checks included, and never when it is the
//   last one in rotation: the others stay in rotation even while failing (panic mode). A
//   single target is never ejected; its circuit breaker protects it.
//   Envoy differs in form, not in intent: its max_ejection_percent counts only outlier-ejected
//   hosts out of all hosts, and a separate panic threshold (healthy_panic_threshold) makes it
//   balance over every host, failed checks or not, once too few are healthy. Sluice has no
//   such routing to hosts out of rotation, so it counts failed checks against the ejection
//   allowance instead, and so never lets passive ejection empty the rotation.
// - round-robin: smooth weighted round robin (a weight-2 target gets two of every three
//   requests against a weight-1 one, interleaved, not in bursts).
// - least-request: two targets drawn at random by weight; the one with fewer requests in
//   flight per unit of weight wins (the power of two choices).
// - hash: rendezvous hashing (highest random weight): each target scores hash(key, target) and
//   the best-scoring target in rotation wins. Removing one of N targets moves only the keys it
//   held (about 1/N); weights scale the scores (-weight / ln(u)).
import type { HashKeyRule, TargetEntry, UpstreamEntry } from '../config/snapshot.js'

/** The value balance: hash hashes: the header named by hashKey when the request has it, else the client address. */
export function hashKeyOf (rule: HashKeyRule, headers: Record<string, string | string[] | undefined>, clientIp: string): string {
  if (rule.kind === 'header') {
    const v = headers[rule.name]
    if (v !== undefined) return Array.isArray(v) ? v.join(',') : v
  }
  return clientIp
}

export class TargetState {
  readonly id: string
  /** Seed of this target in rendezvous hashing. */
  readonly seed: number
  weight: number
  entry: TargetEntry
  inFlight = 0
  /** Active health: false after unhealthyThreshold failed checks, until healthyThreshold pass. */
  healthy = true
  checkPasses = 0
  checkFails = 0
  lastCheck: { at: number, ok: boolean, detail: string } | null = null
  /** Passive: failures in a row, and the times the last ejection began and ends (0: not ejected). */
  consecutiveErrors = 0
  ejectedAt = 0
  ejectedUntil = 0
  ejections = 0
  /** Smooth weighted round robin's running weight. */
  current = 0

  constructor (entry: TargetEntry) {
    this.id = entry.id
    this.entry = entry
    this.weight = entry.weight
    this.seed = fnv1a(entry.id)
  }

  available (now: number): boolean { return this.healthy && this.ejectedUntil <= now }
}

/** FNV-1a, 32 bits, over a string's UTF-16 code units. */
export function fnv1a (s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/** murmur3's 32-bit finaliser: spreads a combined key and seed over all bits. */
function mix (h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** What a failed or answered attempt tells the outlier detector. */
export type AttemptOutcome = 'ok' | 'failure' | 'neutral'

export class Balancer {
  constructor (
    readonly upstream: UpstreamEntry,
    readonly targets: TargetState[],
    private readonly random: () => number = Math.random
  ) {}

  /**
   * The target for one attempt, or null when none is in rotation. `exclude` lists targets that
   * already failed this request (used only while another target is in rotation); `key` is
   * the hash key (balance: hash).
   */
  pick (now: number, key: string | null, exclude: readonly TargetState[] | null): TargetState | null {
    const ts = this.targets
    if (ts.length === 1) return ts[0].available(now) ? ts[0] : null
    switch (this.upstream.balance) {
      case 'hash': return this.byHash(now, key ?? '', exclude)
      case 'least-request': return this.leastRequest(now, exclude)
      default: return this.roundRobin(now, exclude)
    }
  }

  private usable (t: TargetState, now: number, exclude: readonly TargetState[] | null): boolean {
    return t.available(now) && (exclude === null || !exclude.includes(t))
  }

  private roundRobin (now: number, exclude: readonly TargetState[] | null): TargetState | null {
    let best: TargetState | null = null
    let total = 0
    for (const t of this.targets) {
      if (!this.usable(t, now, exclude)) continue
      t.current += t.weight
      total += t.weight
      if (best === null || t.current > best.current) best = t
    }
    if (best !== null) best.current -= total
    return best
  }

  private weightedDraw (now: number, exclude: readonly TargetState[] | null, total: number): TargetState | null {
    let r = this.random() * total
    let last: TargetState | null = null
    for (const t of this.targets) {
      if (!this.usable(t, now, exclude)) continue
      last = t
      r -= t.weight
      if (r < 0) return t
    }
    return last
  }

  private leastRequest (now: number, exclude: readonly TargetState[] | null): TargetState | null {
    let total = 0
    for (const t of this.targets) if (this.usable(t, now, exclude)) total += t.weight
    if (total === 0) return null
    const a = this.weightedDraw(now, exclude, total)
    const b = this.weightedDraw(now, exclude, total)
    if (a === null || b === null || a === b) return a ?? b
    // a.inFlight / a.weight against b.inFlight / b.weight, without dividing.
    const la = a.inFlight * b.weight
    const lb = b.inFlight * a.weight
    return la < lb ? a : lb < la ? b : (this.random() < a.weight / (a.weight + b.weight) ? a : b)
  }

  private byHash (now: number, key: string, exclude: readonly TargetState[] | null): TargetState | null {
    const kh = fnv1a(key)
    let best: TargetState | null = null
    let bestScore = -Infinity
    for (const t of this.targets) {
      if (!this.usable(t, now, exclude)) continue
      // u in (0, 1); score = -w / ln(u) (weighted rendezvous hashing).
      const u = (mix(kh ^ t.seed) + 0.5) / 4294967296
      const score = -t.weight / Math.log(u)
      if (score > bestScore) { bestScore = score; best = t }
    }
    return best
  }

  /** Whether some target not in `exclude` is in rotation (pick would not return null). */
  anyAvailable (now: number, exclude: readonly TargetState[] | null): boolean {
    for (const t of this.targets) if (this.usable(t, now, exclude)) return true
    return false
  }

  /** How many targets may be out of rotation before none more is ejected (maxEjectedPercent of all, rounded down; at least one of two or more). */
  maxEjected (): number {
    const n = this.targets.length
    const pct = this.upstream.outlier.maxEjectedPercent
    if (n < 2 || pct === 0) return 0
    return Math.max(1, Math.floor(n * pct / 100))
  }

  /**
   * Count an attempt's outcome toward passive ejection. Returns true when this outcome ejected
   * the target (the caller logs it and updates the metric).
   */
  record (t: TargetState, outcome: AttemptOutcome): boolean {
    if (outcome === 'neutral') return false
    if (outcome === 'ok') { t.consecutiveErrors = 0; return false }
    // The clock is read only on a failure: a success (every request, mostly) costs no clock read.
    const now = Date.now()
    t.consecutiveErrors++
    if (t.consecutiveErrors < this.upstream.outlier.consecutiveErrors || t.ejectedUntil > now) return false
    // The other targets out of rotation (ejected or failing their checks), and those still in it.
    let out = 0
    let inRotation = 0
    for (const x of this.targets) {
      if (x === t) continue
      if (x.available(now)) inRotation++
      else out++
    }
    if (inRotation === 0 || out >= this.maxEjected()) return false
    t.ejectedAt = now
    t.ejectedUntil = now + this.upstream.outlier.ejectMs
    t.consecutiveErrors = 0
    t.ejections++
    return true
  }
}
