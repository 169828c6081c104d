// Per-client limit of a route: a token bucket per client key (the IP the pipeline resolved
// through its trusted proxies, a header, or the whole route). A rejection is 429
// SLUICE_ERR_RATE_LIMITED with a rounded-up Retry-After and the RateLimit-Policy / RateLimit
// fields. In shadow mode a would-be rejection is counted and logged-by-metric only.
// The memory path is synchronous and allocates nothing when the request is allowed.
import { SluiceError } from '../errors.js'
import type { Metrics } from '../observability/metrics.js'
import type { Headers } from '../types.js'
import type { PerClientConfig } from './config.js'
import { policyField, rejectionHeaders } from './headers.js'
import type { Limiter } from './limiter.js'

export interface ClientInfo {
  /** The client address, already resolved through trusted proxies. */
  ip: string
  headers: Headers
}

const MAX_KEY_CHARS = 256

/**
 * The limit key of a client address: an IPv4 address as it is, an IPv6 address as its /64
 * (`2001:db8:1:2::/64`). One subscriber, host or VM is handed a whole /64 and can pick a
 * new address in it for every request, which would otherwise give it a fresh bucket each
 * time (and fill the store with one-off keys). An IPv4-mapped address (`::ffff:1.2.3.4`) is
 * an IPv4 client.
 */
export function addressKey (ip: string): string {
  if (ip.indexOf(':') === -1) return ip
  const pct = ip.indexOf('%')
  const a = pct === -1 ? ip : ip.slice(0, pct)
  const dot = a.lastIndexOf('.')
  if (dot !== -1) return a.toLowerCase().startsWith('::ffff:') ? a.slice(7) : a
  const gap = a.indexOf('::')
  const head = gap === -1 ? a.split(':') : (gap === 0 ? [] : a.slice(0, gap).split(':'))
  const tail = gap === -1 ? [] : (gap + 2 >= a.length ? [] : a.slice(gap + 2).split(':'))
  const groups = gap === -1 ? head : head.concat(new Array<string>(Math.max(0, 8 - head.length - tail.length)).fill('0'), tail)
  let out = ''
  for (let i = 0; i < 4; i++) out += (i === 0 ? '' : ':') + (parseInt(groups[i] ?? '0', 16) || 0).toString(16)
  return out + '::/64'
}

export class ClientLimiter {
  private cfg!: PerClientConfig
  private header: string | null = null
  private policy = ''
  /** The policy the local bucket enforces (this replica's share: no Redis, or Redis down). */
  private localPolicy = ''
  private readonly rejected: { inc(): void }

  constructor (readonly route: string, metrics: Metrics, private limiter: Limiter, cfg: PerClientConfig) {
    this.rejected = metrics.rateLimited.labels('client', route)
    this.configure(limiter, cfg)
  }

  configure (limiter: Limiter, cfg: PerClientConfig): void {
    this.limiter = limiter
    this.cfg = cfg
    this.header = cfg.key.startsWith('header:') ? cfg.key.slice(7).toLowerCase() : null
    this.policy = policyField('client', cfg.requestsPerSecond, cfg.burst)
    this.localPolicy = policyField('client', limiter.localRate, limiter.localBurst)
  }

  get shadow (): boolean { return this.cfg.shadow }

  private keyOf (req: ClientInfo): string {
    const k = this.cfg.key
    if (k === 'ip') return addressKey(req.ip)
    if (k === 'route') return ''
    const v = req.headers[this.header as string]
    const s = Array.isArray(v) ? v[0] : v
    if (s === undefined || s === '') return addressKey(req.ip)
    // A prefix that cannot be an IP keeps header values and addresses apart.
    return s.length > MAX_KEY_CHARS ? 'h=' + s.slice(0, MAX_KEY_CHARS) : 'h=' + s
  }

  /**
   * null when the request may go on; a SluiceError (429) to answer with otherwise. A Promise
   * of the same only while the bucket lives in Redis. Never throws because of Redis.
   */
  check (req: ClientInfo): SluiceError | null | Promise<SluiceError | null> {
    const r = this.limiter.take(this.keyOf(req), 0)
    if (typeof r === 'number') return r >= 0 ? null : this.reject(-r, true)
    return r.then((v) => v.r >= 0 ? null : this.reject(-v.r, v.local))
  }

  /** `local`: the local bucket decided, and the policy said is the one it enforces. */
  private reject (retryMs: number, local: boolean): SluiceError | null {
    this.rejected.inc()
    if (this.cfg.shadow) return null
    return new SluiceError('SLUICE_ERR_RATE_LIMITED', undefined, { headers: rejectionHeaders('client', local ? this.localPolicy : this.policy, retryMs) })
  }

  status () {
    return {
      requestsPerSecond: this.cfg.requestsPerSecond,
      burst: this.cfg.burst,
      key: this.cfg.key,
      shadow: this.cfg.shadow,
      local: this.limiter.usingLocal
    }
  }
}
