// The composition root: config → logger, metrics, Redis, registries and stages → the proxy
// and admin listeners. Everything is created here and injected; no module-level singletons.
import { lookup } from 'node:dns/promises'
import { request as undiciRequest, Agent as UndiciAgent } from 'undici'
import { isIP } from 'node:net'
import type { Logger } from 'pino'
import type { FastifyInstance } from 'fastify'
import { loadConfigFile, parseConfig } from './config/load.js'
import { compile, type Snapshot } from './config/compile.js'
import { SnapshotHolder, Reloader, statKeysNow } from './config/reload.js'
import { listenNeedsRestart, restartKeys, LISTEN_RESTART_WARNING } from './config/diff.js'
import { tlsFiles } from './config/tls-files.js'
import { createLogger } from './observability/logger.js'
import { createMetrics, type Metrics } from './observability/metrics.js'
import { createRedis, redisConfigured, type RedisHandle } from './redis/client.js'
import { TargetRegistry } from './upstream/targets.js'
import type { GuardProvider } from './upstream/guard.js'
import { createResilienceRegistry } from './resilience/registry.js'
import type { SharedBucketStore } from './resilience/limiter.js'
import { createUpstreamStage } from './stages/upstream.js'
import { createCacheStage, type CacheStage } from './httpcache/stage.js'
import { RedisStore } from './httpcache/redis-store.js'
import { CacheBus } from './httpcache/bus.js'
import { createCompressStage } from './compress/stage.js'
import type { ClientLimitProvider } from './stages/client-limit.js'
import { buildProxy, edgeOf } from './gateway.js'
import { Tracing } from './observability/tracing.js'
import { buildAdmin, type Readiness } from './admin.js'
import { collectStatus } from './observability/status.js'
import { VERSION } from './version.js'

export { VERSION }

export interface GatewayOptions {
  configFile: string
  /**
   * Start from this config text instead of reading configFile (a cluster worker starts from
   * the text its primary last validated, not from whatever the file holds now).
   */
  configText?: string
  /** Inject a logger (tests); default: pino on stdout at the configured level. */
  log?: Logger
  /** Watch the config file for changes (default true). */
  watch?: boolean
  /** Override listen ports (tests use 0). */
  proxyPort?: number
  adminPort?: number
  /** Listen on the admin port (default true; cluster workers leave it to the primary). */
  adminListen?: boolean
  /** Rate-limit buckets shared without Redis (a cluster worker passes the primary's); ignored when Redis is configured. */
  sharedBuckets?: SharedBucketStore | null
  /** The cache's clock (default Date.now): tests move time forward instead of sleeping. */
  now?: () => number
}

export interface Gateway {
  proxyUrl: string
  adminUrl: string
  holder: SnapshotHolder
  reloader: Reloader
  metrics: Metrics
  log: Logger
  cache: CacheStage
  proxy: FastifyInstance
  admin: FastifyInstance
  /** The /admin/upstreams view of this process (pools, breakers, targets). */
  upstreams (): Record<string, unknown>
  /** The /admin/status summary of this process. */
  status (): Promise<unknown>
  /** The /readyz answer of this process. */
  readiness (): Readiness
  /** Stop accepting, let in-flight requests finish within graceMs, then release everything. */
  close (graceMs?: number): Promise<void>
}

function address (app: FastifyInstance, scheme = 'http'): string {
  const a = app.server.address()
  if (a === null || typeof a === 'string') return String(a)
  return `${scheme}://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`
}


/** Warn at load about upstream names that do not resolve (requests to them get 502 SLUICE_ERR_UPSTREAM_DNS). */
function checkDns (snap: Snapshot, log: Logger): void {
  for (const u of Object.values(snap.upstreams)) {
    for (const t of u.targets) {
      const host = new URL(t.origin).hostname.replace(/^\[|\]$/g, '')
      if (isIP(host) !== 0) continue
      lookup(host).catch((err: NodeJS.ErrnoException) => {
        log.warn({ upstream: u.name, target: t.id, host, code: err.code }, 'upstream host name does not resolve; its requests will get 502 SLUICE_ERR_UPSTREAM_DNS until it does')
      })
    }
  }
}

export async function startGateway (opts: GatewayOptions): Promise<Gateway> {
  // A process that watches: the config file's stat() before it is read, the certificate
  // files' right after; the reloader compares with these once it watches (below, after the
  // listeners are up).
  const watching = opts.watch !== false
  const seenAtLoad = watching && opts.configText === undefined ? statKeysNow([opts.configFile]) : new Map<string, string>()
  const loaded = opts.configText === undefined ? loadConfigFile(opts.configFile) : parseConfig(opts.configText, opts.configFile)
  const first = compile(loaded.config, loaded.raw, opts.configFile, loaded.ca, loaded.listenTls ?? null)
  if (watching) for (const [f, k] of statKeysNow(tlsFiles(first))) seenAtLoad.set(f, k)
  /** The CA the listener checks client certificates against now (listen.tls.caFile; see the reload's commit). */
  let liveClientCa = first.listenTls?.ca
  const cfg = first.config
  const log = opts.log ?? createLogger(cfg.log.level)
  for (const w of loaded.warnings) log.warn(w)
  const metrics = createMetrics({ version: VERSION, maxLabelValues: cfg.metrics.maxLabelValues })
  metrics.configLastReloadSuccess.set(Date.now() / 1000)
  const holder = new SnapshotHolder(first)
  const current = () => holder.current()

  const redis: RedisHandle | null = redisConfigured(cfg.redis) ? createRedis(cfg.redis, { log, metrics }) : null
  const pools = new TargetRegistry(log, metrics)
  pools.reconcile(first.upstreams)
  const resilience = createResilienceRegistry({
    metrics,
    log,
    redis: redis?.client ?? null,
    redisPrefix: cfg.redis.keyPrefix,
    commandTimeoutMs: cfg.redis.commandTimeoutMs,
    onRedisError: redis ? (op, e) => redis.onError(op, e as Error) : undefined,
    sharedBuckets: redis ? null : opts.sharedBuckets ?? null
  })
  const reconcileResilience = (snap: Snapshot) => resilience.reconcile(
    Object.fromEntries(Object.entries(snap.upstreams).map(([n, u]) => [n, u.config])), snap.routes)
  reconcileResilience(first)
  const guards: GuardProvider = resilience
  const clientLimits: ClientLimitProvider = resilience

  let warm = (): void => {}
  // The cache's stores are made here and injected: L1 by default, L2 and the replicas' bus with Redis.
  const onCacheRedisError = (op: string, err: Error) => redis!.onError(op, err)
  const cache = createCacheStage({
    config: cfg.cache,
    metrics,
    log,
    l2: redis ? new RedisStore(redis.client, cfg.redis.keyPrefix, onCacheRedisError, () => redis.up()) : null,
    bus: redis ? new CacheBus(redis.client, cfg.redis.keyPrefix, onCacheRedisError, cfg.cache.coalesceAcrossReplicas) : null,
    onPurged: () => warm(),
    now: opts.now
  })
  const compress = createCompressStage({ metrics })
  const tracing = new Tracing(log)
  tracing.configure(cfg.tracing)
  const upstream = createUpstreamStage({ tracing, targets: pools, guards: () => guards, metrics, log })

  const reloader = new Reloader({
    file: opts.configFile,
    holder,
    log,
    metrics,
    // Build the new pools (a failure throws and destroys what was built: nothing live changed);
    // after the swap, install them and bring the guards in line (config-driven, cannot fail).
    prepare: (next, prev) => {
      const poolPlan = pools.prepare(next.upstreams)
      return {
        commit: () => {
          poolPlan.commit()
          reconcileResilience(next)
          checkDns(next, log)
          // A new certificate pair (same listener shape) serves new connections from now on, and
          // so does a new listen.tls.minVersion (it lives in the same secure context: applying
          // only the pair would also apply the version, whatever the log said about a restart).
          // Whether clients must present a certificate is fixed when the listener starts
          // (requestCert): a listener that asks for them keeps checking them against a CA until
          // the restart, so a reload that removed caFile keeps the CA installed (with none, Node
          // would check them against its public roots and refuse every one).
          const pt = prev.listenTls
          const nt = next.listenTls
          if (nt !== null && pt !== null) {
            const ca = nt.ca ?? liveClientCa
            if (!nt.cert.equals(pt.cert) || !nt.key.equals(pt.key) || nt.minVersion !== pt.minVersion || !(ca ?? Buffer.alloc(0)).equals(liveClientCa ?? Buffer.alloc(0))) {
              edgeOf(proxy).setTls({ ...nt, ca })
              liveClientCa = ca
              log.info({ subject: nt.subject, validTo: nt.validTo, minVersion: nt.minVersion }, 'TLS certificate reloaded for new connections')
            }
          }
          // Only a process that watches (a cluster's primary watches for its workers).
          if (watching) reloader.watchFiles(tlsFiles(next))
          tracing.configure(next.config.tracing)
          if (prev.config.log.level !== next.config.log.level) { log.info({ from: prev.config.log.level, to: next.config.log.level }, 'log level changed'); log.level = next.config.log.level }
          if (listenNeedsRestart(prev.config, next.config)) log.warn({ key: 'listen' }, LISTEN_RESTART_WARNING)
          for (const k of restartKeys(prev.config, next.config)) log.warn({ key: k }, `a change to "${k}" takes effect at the next restart`)
        }
      }
    }
  })

  const startedAt = Date.now()
  const upstreamStatus = () => {
    const pool = pools.stats()
    const out: Record<string, unknown> = {}
    const rs = resilience.status()
    for (const [name, u] of Object.entries(current().upstreams)) {
      const r = rs.upstreams[name] as Record<string, unknown> | undefined
      const p = pool[name]
      out[name] = {
        url: u.targets.length === 1 ? p?.targets[0]?.url : p?.targets.map((t) => t.url).join(', '),
        balance: u.balance,
        pool: p?.pool,
        ...(r ? { breaker: r.breaker, limiter: r.budget, retry: r.retry } : {}),
        targets: p?.targets ?? []
      }
    }
    return out
  }
  const proxy = buildProxy({ current, upstream, targets: pools, tracing, cache, compress, clientLimits: () => clientLimits, log, metrics })
  let listening = false
  const admin = buildAdmin({
    current,
    metrics,
    log,
    reload: () => reloader.reload('admin'),
    purge: (p) => cache.purge(p),
    readiness: () => readiness(),
    upstreams: upstreamStatus,
    status: () => status()
  })
  // Also what a cluster worker reports to its primary's /readyz, and what /admin/status shows.
  const readiness = (): Readiness => {
    const degraded: string[] = []
    const details: Record<string, unknown> = {}
    if (redis) {
      const s = redis.status()
      details.redis = s
      if (!s.healthy) degraded.push('redis')
    } else details.redis = { configured: false }
    if (resilience.degraded) degraded.push('ratelimit')
    details.rateLimits = resilience.status().redis
    if (reloader.lastError) { degraded.push('config'); details.lastReloadErrors = reloader.lastError }
    details.cache = cache.stats()
    return { ready: listening, degraded, details }
  }
  const status = () => collectStatus({ current, metrics, upstreams: upstreamStatus, cacheStats: () => cache.stats(), readiness, startedAt, version: VERSION })

  // The first requests would otherwise find Redis still connecting, and go without L2 and the
  // shared limits. Bounded: a Redis that is down does not keep the gateway from starting.
  const waitFrom = Date.now()
  if (redis !== null && !(await redis.ready(cfg.redis.connectTimeoutMs))) {
    const s = redis.status()
    log.warn({ redis: s.url, waitedMs: Date.now() - waitFrom, err: s.lastError }, 'redis is not ready; starting without it (caches act as misses, limits use local buckets until it is)')
  }
  try {
    await proxy.listen({ host: cfg.listen.host, port: opts.proxyPort ?? cfg.listen.port })
    if (opts.adminListen !== false) await admin.listen({ host: cfg.admin.host, port: opts.adminPort ?? cfg.admin.port })
  } catch (err) {
    resilience.close()
    await Promise.allSettled([proxy.close(), admin.close(), pools.close(), cache.close(), redis?.close()])
    throw err
  }
  listening = true
  checkDns(first, log)
  // cache.warmup: fetch the listed paths through our own listener (every stage applies), after
  // start and after each purge; one at a time, so warm-up never floods the upstream.
  const proxyAddr = proxy.server.address() as { port: number }
  const edge = edgeOf(proxy)
  // Warm-up requests go to our own port: over TLS, to ourselves, so the certificate is not checked.
  const selfAgent = edge.scheme === 'https' ? new UndiciAgent({ connect: { rejectUnauthorized: false } }) : undefined
  warm = () => {
    const w = current().config.cache.warmup
    if (w.paths.length === 0) return
    void (async () => {
      let ok = 0
      for (const path of w.paths) {
        try {
          const r = await undiciRequest(`${edge.scheme}://127.0.0.1:${proxyAddr.port}${path}`, { headers: w.host ? { host: w.host } : {}, dispatcher: selfAgent })
          await r.body.dump()
          if (r.statusCode < 400) ok++
        } catch (err) {
          log.warn({ path, err: (err as Error).message }, 'cache warm-up request failed')
        }
      }
      log.info({ paths: w.paths.length, ok }, 'cache warm-up done')
    })()
  }
  warm()
  if (watching) {
    reloader.seed(seenAtLoad)
    reloader.watch()
    reloader.watchFiles(tlsFiles(first))
  }

  const gw: Gateway = {
    proxyUrl: address(proxy, edge.scheme),
    adminUrl: opts.adminListen !== false ? address(admin) : '',
    holder,
    reloader,
    metrics,
    log,
    cache,
    proxy,
    admin,
    status,
    readiness,
    upstreams: upstreamStatus,
    async close (graceMs = current().config.shutdownGraceMs) {
      reloader.close()
      listening = false
      const force = setTimeout(() => {
        log.warn({ graceMs }, 'shutdown grace period over; closing the remaining connections')
        edge.closeAll()
      }, graceMs)
      force.unref()
      // HTTP/2 connections get GOAWAY: their open streams finish, no new one starts.
      edge.drain()
      await proxy.close()
      await selfAgent?.close()
      clearTimeout(force)
      await admin.close()
      await cache.close()
      resilience.close()
      await pools.close()
      await tracing.close()
      await redis?.close()
    }
  }
  log.info({ proxy: gw.proxyUrl, admin: gw.adminUrl, version: first.version, routes: first.routes.length, upstreams: Object.keys(first.upstreams).length, redis: redis ? 'on' : 'off' }, 'sluice started')
  return gw
}
