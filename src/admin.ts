// The admin listener: /healthz, /readyz, /metrics, and the token-guarded /admin/* API.
import { createHash, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { Readable } from 'node:stream'
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { Metrics } from './observability/metrics.js'
import type { Snapshot } from './config/snapshot.js'
import type { ReloadResult } from './config/reload.js'
import { SluiceError, errorBody } from './errors.js'
import { redactConfig } from './config/redact.js'
import { DASHBOARD_HTML } from './observability/dashboard.js'
import { historyFor, stopHistory, type HistoryAnswer } from './observability/status.js'
import { cpuProfile, heapSnapshot, profilerBusy } from './observability/profile.js'

export interface Readiness { ready: boolean; degraded: string[]; details: Record<string, unknown> }

export interface AdminDeps {
  current: () => Snapshot
  metrics: Metrics
  log: Logger
  reload: () => Promise<ReloadResult>
  purge: (p: { key?: string; prefix?: string; tag?: string }) => Promise<{ purged: number; incomplete?: string }>
  /** The cluster primary asks its workers (their Redis and rate limits), hence a promise. */
  readiness: () => Readiness | Promise<Readiness>
  upstreams: () => Record<string, unknown> | Promise<Record<string, unknown>>
  status: () => Promise<unknown>
  /**
   * POST /admin/profile: by default this process is profiled; the cluster primary (which serves
   * no traffic) passes one that profiles worker `worker` (?worker=N), or one that serves traffic.
   */
  profile?: (ms: number, worker: number | undefined) => Promise<unknown>
  /** POST /admin/heap-snapshot: as `profile`, the cluster primary passes one that snapshots worker `worker`. */
  heapSnapshot?: (worker: number | undefined, timeoutMs?: number) => Promise<Readable>
  /**
   * GET /admin/status/history: samples of the last minutes for the status page's charts. By
   * default this process samples its own metrics (StatusHistory, src/observability/status.ts,
   * stopped when the admin app closes); the cluster primary passes its workers' merged history.
   */
  history?: (since?: number) => Promise<HistoryAnswer>
  extraRoutes?: (app: FastifyInstance, guard: (req: FastifyRequest, reply: FastifyReply) => Promise<void>) => void
}


/** An admin error answer: the code's status, its JSON body (with `extra` fields). */
function refuse (reply: FastifyReply, e: SluiceError, extra?: Record<string, unknown>): ReturnType<typeof errorBody> {
  reply.code(e.status).type('application/json')
  return errorBody(e, extra)
}

function digest (s: string): Buffer {
  return createHash('sha256').update(s).digest()
}

/** Constant-time comparison of the presented token with the configured one. */
export function tokenMatches (presented: string, expected: string): boolean {
  return timingSafeEqual(digest(presented), digest(expected))
}

export { redactConfig } from './config/redact.js'

/** uPlot's browser build and stylesheet (npm `uplot`), read once, served to the status page. */
let uplotAssets: { js: Buffer; css: Buffer } | null | undefined
function readUplot (): { js: Buffer; css: Buffer } | null {
  if (uplotAssets !== undefined) return uplotAssets
  try {
    const req = createRequire(import.meta.url)
    uplotAssets = { js: readFileSync(req.resolve('uplot/dist/uPlot.iife.min.js')), css: readFileSync(req.resolve('uplot/dist/uPlot.min.css')) }
  } catch {
    uplotAssets = null
  }
  return uplotAssets
}

const FAILURE_WINDOW_MS = 60_000
const MAX_FAILURES = 10

/** A Host header naming a loopback address (or localhost): what a tokenless admin port answers for. */
export function loopbackHost (host: string | undefined): boolean {
  if (host === undefined) return false
  const name = (host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d*$/, '')).toLowerCase()
  return name === 'localhost' || name === 'localhost.' || name.endsWith('.localhost') || name === '::1' || /^127(\.\d{1,3}){3}$/.test(name) || name === '::ffff:127.0.0.1'
}

function forbidden (reply: FastifyReply, why: string): FastifyReply {
  return reply.code(403).type('application/json').send(errorBody(new SluiceError('SLUICE_ERR_ADMIN_FORBIDDEN', why)))
}

export function buildAdmin (deps: AdminDeps): FastifyInstance {
  const app = Fastify({ logger: false, bodyLimit: 1 << 20 })
  // Only /admin/purge reads a body (JSON). Whatever else a client sends is not parsed, so
  // `curl -d ''` (an empty form) or `wget --post-data=` reloads instead of getting 415, and an
  // empty JSON body is no body rather than a 400.
  const json = app.getDefaultJsonParser('error', 'error')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (body === '') { done(null, undefined); return }
    json(req, body as string, done)
  })
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, _body, done) => { done(null, undefined) })
  // Fastify's own errors (a body that is not JSON, or past the 1 MiB limit) and anything a
  // handler throws answer the documented {error, message} shape, like every other admin error.
  app.setErrorHandler((err: FastifyError, request, reply) => {
    const status = err.statusCode ?? 500
    const e = status === 413
      ? new SluiceError('SLUICE_ERR_BODY_TOO_LARGE', 'The request body is larger than the admin API accepts (1 MiB)')
      : status >= 400 && status < 500 ? new SluiceError('SLUICE_ERR_ADMIN_BAD_REQUEST', err.message) : new SluiceError('SLUICE_ERR_INTERNAL')
    if (e.status >= 500) deps.log.error({ err, path: request.url }, 'admin request failed')
    reply.code(e.status).type('application/json').send(errorBody(e))
  })
  const failures = new Map<string, { count: number; since: number }>()
  // The admin listener binds once; like its address, its token is the one it started with (a
  // reload that changes `admin` is logged as needing a restart). Read live, a reload could
  // drop the token of a listener still bound to a public address.
  const token = deps.current().config.admin.token

  // Browsers: a page on another site must not drive the admin API (CSRF: a form or no-cors
  // POST reloads, profiles, purges), and a tokenless admin port on loopback must not answer a
  // page whose host name was rebound to 127.0.0.1 (DNS rebinding reads /admin/config).
  app.addHook('onRequest', async (request, reply) => {
    // The route Fastify matched, not the raw URL: /%61dmin/reload is routed to /admin/reload.
    const url = request.routeOptions.url ?? ''
    if (!url.startsWith('/admin') && !url.startsWith('/dashboard')) return
    if (!token && !loopbackHost(request.headers.host)) return forbidden(reply, 'This admin port has no token and answers only for a loopback host name (localhost, 127.0.0.1, [::1])')
    if (request.method === 'GET' || request.method === 'HEAD') return
    const site = request.headers['sec-fetch-site']
    if (site !== undefined && site !== 'same-origin' && site !== 'none') return forbidden(reply, 'A cross-site request cannot change the gateway')
    const origin = request.headers.origin
    if (origin !== undefined) {
      let same = false
      try { same = new URL(origin).host === request.headers.host } catch { /* not a URL: refused */ }
      if (!same) return forbidden(reply, 'A cross-site request cannot change the gateway')
    }
  })

  async function guard (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    if (!token) return
    const ip = request.ip
    const now = Date.now()
    const f = failures.get(ip)
    if (f && now - f.since < FAILURE_WINDOW_MS && f.count >= MAX_FAILURES) {
      reply.code(429).header('retry-after', String(Math.ceil((f.since + FAILURE_WINDOW_MS - now) / 1000))).type('application/json')
      await reply.send(errorBody(new SluiceError('SLUICE_ERR_RATE_LIMITED', 'Too many failed admin authentications')))
      return reply
    }
    const h = request.headers.authorization ?? ''
    // The scheme is case-insensitive (RFC 9110 11.1), and one or more spaces end it.
    const presented = /^bearer +(.*)$/is.exec(h)?.[1] ?? ''
    if (presented && tokenMatches(presented, token)) { failures.delete(ip); return }
    // A request that presents no token guesses nothing: 401, not counted. Counted, the status
    // page polling before its token is typed (or any page's cross-site GET) locked the IP out.
    if (!presented) return unauthorized(reply)
    const rec = f && now - f.since < FAILURE_WINDOW_MS ? f : { count: 0, since: now }
    rec.count++
    failures.delete(ip) // re-inserted last: the table is in order of last failure
    failures.set(ip, rec)
    // Bounded under a spray of addresses by dropping the addresses whose last failure is
    // oldest, never the whole table (clearing it let a sprayer reset its own lockout).
    if (failures.size > 10_000) {
      for (const k of failures.keys()) { failures.delete(k); if (failures.size <= 9_000) break }
    }
    deps.log.warn({ ip, path: request.url, failures: rec.count }, 'admin authentication failed')
    return unauthorized(reply)
  }

  async function unauthorized (reply: FastifyReply): Promise<FastifyReply> {
    reply.code(401).header('www-authenticate', 'Bearer realm="sluice-admin"').type('application/json')
    await reply.send(errorBody(new SluiceError('SLUICE_ERR_UNAUTHORIZED')))
    return reply
  }

  app.get('/healthz', async () => ({ status: 'ok' }))

  app.get('/readyz', async (_req, reply) => {
    const r = await deps.readiness()
    reply.code(r.ready ? 200 : 503)
    return { status: !r.ready ? 'not-ready' : r.degraded.length ? 'degraded' : 'ready', degraded: r.degraded, version: deps.current().version, ...r.details }
  })

  app.get('/metrics', async (_req, reply) => {
    reply.type(deps.metrics.registry.contentType)
    return deps.metrics.registry.metrics()
  })

  app.get('/dashboard', async (_req, reply) => {
    reply.type('text/html; charset=utf-8').header('cache-control', 'no-store')
      .header('content-security-policy', "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; connect-src 'self'")
    return DASHBOARD_HTML
  })

  // The chart library the page loads, from this port (no CDN). Like /dashboard itself it needs
  // no token: it is the same public code for everyone, and a <script src> cannot send a bearer
  // header. The data it charts comes from the guarded /admin/status/history.
  const uplot = readUplot()
  if (!uplot) deps.log.warn('uplot is not installed: the status page shows its tables without charts')
  for (const [path, type, key] of [['/admin/assets/uplot.js', 'text/javascript; charset=utf-8', 'js'], ['/admin/assets/uplot.css', 'text/css; charset=utf-8', 'css']] as const) {
    app.get(path, async (_req, reply) => {
      if (!uplot) {
        return refuse(reply, new SluiceError('SLUICE_ERR_NO_ROUTE', 'uplot is not installed'))
      }
      reply.type(type).header('cache-control', 'public, max-age=3600').header('x-content-type-options', 'nosniff')
      return uplot[key]
    })
  }

  let history = deps.history
  if (!history) {
    const metrics = deps.metrics
    const h = historyFor(metrics)
    history = async (since) => h.answer(since)
    app.addHook('onClose', async () => { stopHistory(metrics) })
  }
  const historyOf = history

  /** ?worker=N of /admin/profile and /admin/heap-snapshot: a worker index, or a 400 to answer. */
  const workerIndex = (req: FastifyRequest): number | undefined | SluiceError => {
    const w = (req.query as Record<string, unknown>).worker
    if (w === undefined) return undefined
    // Digits only: Number() read `?worker=` (and ` `, `0x1`, `1e0`) as an index, so an empty
    // value profiled worker 0 instead of being refused.
    if (typeof w !== 'string' || !/^\d{1,6}$/.test(w)) {
      return new SluiceError('SLUICE_ERR_ADMIN_BAD_REQUEST', 'worker must be a worker index (0, 1, ...)')
    }
    return Number(w)
  }
  /** A profile or snapshot that could not be taken: 409 when one is already running, 504 when the worker did not answer in time, else 400 (no such worker). */
  const profilerError = (err: unknown): SluiceError => {
    const status = (err as { statusCode?: number }).statusCode
    return new SluiceError(status === 409 ? 'SLUICE_ERR_ADMIN_BUSY' : status === 504 ? 'SLUICE_ERR_ADMIN_TIMEOUT' : 'SLUICE_ERR_ADMIN_BAD_REQUEST', (err as Error).message)
  }

  app.register(async (admin) => {
    admin.addHook('onRequest', guard)
    admin.get('/admin/status', async () => deps.status())
    admin.get('/admin/status/history', async (req) => {
      const since = Number((req.query as Record<string, string>).since)
      return historyOf(Number.isFinite(since) ? since : undefined)
    })
    admin.post('/admin/profile', async (req, reply) => {
      const seconds = Number((req.query as Record<string, string>).seconds ?? 10)
      if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 300) {
        return refuse(reply, new SluiceError('SLUICE_ERR_ADMIN_BAD_REQUEST', 'seconds must be between 0 and 300'))
      }
      const worker = workerIndex(req)
      if (worker instanceof SluiceError) return refuse(reply, worker)
      deps.log.info({ seconds, worker }, 'CPU profile started')
      let profile: unknown
      try {
        profile = deps.profile ? await deps.profile(seconds * 1000, worker) : await cpuProfile(seconds * 1000)
      } catch (err) {
        return refuse(reply, profilerError(err))
      }
      if (profile === null || profile === undefined) {
        // A cluster worker that was busy (or gone) answers null.
        return refuse(reply, new SluiceError('SLUICE_ERR_ADMIN_BUSY', 'the worker could not take a profile (one is already running, or it stopped)'))
      }
      reply.type('application/json').header('content-disposition', `attachment; filename="sluice-${Date.now()}.cpuprofile"`)
      return profile
    })
    admin.post('/admin/heap-snapshot', async (req, reply) => {
      const worker = workerIndex(req)
      if (worker instanceof SluiceError) return refuse(reply, worker)
      const t = (req.query as Record<string, unknown>).timeout
      const timeout = t === undefined ? undefined : typeof t === 'string' && /^\d{1,3}$/.test(t) ? Number(t) : NaN
      if (timeout !== undefined && !(timeout >= 1 && timeout <= 600)) {
        return refuse(reply, new SluiceError('SLUICE_ERR_ADMIN_BAD_REQUEST', 'timeout must be a number of seconds between 1 and 600'))
      }
      let snapshot: Readable
      if (deps.heapSnapshot) {
        // The cluster primary serves no traffic: a worker's heap is the one worth reading.
        deps.log.info({ worker }, 'heap snapshot requested')
        try {
          snapshot = await deps.heapSnapshot(worker, timeout === undefined ? undefined : timeout * 1000)
        } catch (err) {
          return refuse(reply, profilerError(err))
        }
      } else {
        if (profilerBusy()) {
          return refuse(reply, new SluiceError('SLUICE_ERR_ADMIN_BUSY', 'a profile is already running'))
        }
        deps.log.info('heap snapshot requested')
        snapshot = heapSnapshot()
      }
      reply.type('application/json').header('content-disposition', `attachment; filename="sluice-${Date.now()}.heapsnapshot"`)
      return reply.send(snapshot)
    })
    admin.post('/admin/reload', async (_req, reply) => {
      const r = await deps.reload()
      if (r.ok) return r
      return refuse(reply, new SluiceError('SLUICE_ERR_CONFIG_INVALID', 'The configuration is not valid; the previous config keeps serving'), { ...r })
    })
    admin.get('/admin/config', async () => {
      const s = deps.current()
      return { version: s.version, loadedAt: new Date(s.loadedAt).toISOString(), file: s.file, config: redactConfig(s.config) }
    })
    admin.get('/admin/upstreams', async () => deps.upstreams())
    admin.post('/admin/purge', async (req, reply) => {
      const b = (req.body ?? {}) as Record<string, unknown>
      const keys = ['key', 'prefix', 'tag'].filter((k) => typeof b[k] === 'string' && (b[k] as string).length > 0)
      if (keys.length !== 1) {
        return refuse(reply, new SluiceError('SLUICE_ERR_ADMIN_BAD_REQUEST', 'Send exactly one of {"key": ...}, {"prefix": ...} or {"tag": ...}'))
      }
      const r = await deps.purge({ [keys[0]]: b[keys[0]] as string })
      if (r.incomplete !== undefined) {
        // The memory part is done; the shared part is not: the caller must retry.
        deps.log.error({ [keys[0]]: b[keys[0]], purged: r.purged, unreached: r.incomplete }, 'cache purge incomplete: Redis was not reached; retry it')
        const e = new SluiceError('SLUICE_ERR_PURGE_INCOMPLETE')
        return refuse(reply, e, { ok: false, purged: r.purged, unreached: r.incomplete })
      }
      deps.log.info({ [keys[0]]: b[keys[0]], purged: r.purged }, 'cache purge')
      return { ok: true, ...r }
    })
    deps.extraRoutes?.(admin, guard)
  })

  app.setNotFoundHandler((_req, reply) => {
    reply.code(404).type('application/json').send(errorBody(new SluiceError('SLUICE_ERR_NO_ROUTE', 'Unknown admin endpoint')))
  })
  return app
}
