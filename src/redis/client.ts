// The one Redis client, created here and injected into the stores that use it.
// Short timeouts and no offline queue: when Redis is slow or down, commands fail at once and
// every feature falls back (cache → miss, limiter → local share), counts it, and /readyz says so.
//
// Three shapes, one interface (ioredis `Redis | Cluster`):
// - one server: redis.url (redis:// or rediss://; an ACL user may be in the URL);
// - Redis Cluster: redis.cluster.nodes (seed nodes; slots are discovered and followed);
// - Sentinel: redis.sentinels + redis.name (the master is looked up and followed on failover).
// redis.username/password and redis.tls apply to every connection of each shape.
import { readFileSync } from 'node:fs'
import type { ConnectionOptions } from 'node:tls'
import { Redis, Cluster, ReplyError, type RedisOptions, type ClusterOptions } from 'ioredis'
import { StandaloneConnector, SentinelConnector } from 'ioredis/built/connectors/index.js'
import type { Logger } from 'pino'
import { REDIS_COMMANDS, type Metrics } from '../observability/metrics.js'
import type { FastHistogramChild } from '../observability/fast-metrics.js'
import { redactUrl } from '../observability/logger.js'

export interface RedisTlsConfig { enabled: boolean; caFile: string; certFile: string; keyFile: string; servername: string; rejectUnauthorized: boolean }

export interface RedisConfig {
  url: string
  keyPrefix: string
  commandTimeoutMs: number
  connectTimeoutMs: number
  username?: string
  password?: string
  tls?: Partial<RedisTlsConfig>
  cluster?: { nodes: string[] }
  sentinels?: string[]
  name?: string
  sentinelPassword?: string
}

export type RedisClient = Redis | Cluster
export type RedisMode = 'single' | 'cluster' | 'sentinel'

export interface RedisHandle {
  client: RedisClient
  prefix: string
  mode: RedisMode
  /**
   * Report a failed command: counts sluice_redis_errors_total{op}, logs once per outage, and
   * marks Redis down until a PING answers (probed once a second): a Redis that hangs with its
   * connection open never reconnects, so only a probe can see it come back.
   */
  onError (op: string, err: Error): void
  /** false while Redis is marked down: the cache skips it (a miss) instead of waiting out a timeout per request. */
  up (): boolean
  /** Resolves true once the connection is ready (at once if it is), false at its first error or after `ms` without it. */
  ready (ms: number): Promise<boolean>
  status (): { configured: true; url: string; mode: RedisMode; state: string; healthy: boolean; lastError: string | null; errors: number }
  /** A new connection for SUBSCRIBE (queues until connected, resubscribes after reconnects), of the same shape. */
  subscriber (): RedisClient
  close (): Promise<void>
}

/** true when the config names any Redis (a URL, a cluster or sentinels). */
export function redisConfigured (cfg: Pick<RedisConfig, 'url' | 'cluster' | 'sentinels'>): boolean {
  return !!cfg.url || (cfg.cluster?.nodes?.length ?? 0) > 0 || (cfg.sentinels?.length ?? 0) > 0
}

export function redisMode (cfg: Pick<RedisConfig, 'url' | 'cluster' | 'sentinels'>): RedisMode {
  if ((cfg.cluster?.nodes?.length ?? 0) > 0) return 'cluster'
  if ((cfg.sentinels?.length ?? 0) > 0) return 'sentinel'
  return 'single'
}

function hostPort (s: string): { host: string; port: number } {
  const u = new URL(/^[a-z]+:\/\//i.test(s) ? s : `redis://${s}`)
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 6379) }
}

/** node:tls options from redis.tls, or undefined when TLS is off. */
export function tlsOptions (cfg: RedisConfig): ConnectionOptions | undefined {
  const t = cfg.tls ?? {}
  const urls = [cfg.url, ...(cfg.cluster?.nodes ?? [])]
  if (!t.enabled && !urls.some((u) => /^rediss:\/\//i.test(u ?? ''))) return undefined
  const o: ConnectionOptions = { rejectUnauthorized: t.rejectUnauthorized !== false }
  if (t.caFile) o.ca = readFileSync(t.caFile)
  if (t.certFile) o.cert = readFileSync(t.certFile)
  if (t.keyFile) o.key = readFileSync(t.keyFile)
  if (t.servername) o.servername = t.servername
  return o
}

// ioredis listens for a connection's errors with `once`: its handler reports the first error and
// schedules the reconnect. A socket can fail twice (a TLS socket that got an alert while it was
// being torn down, a write after a reset), and that second 'error' event then had no listener and
// was thrown as an uncaught exception, which ends the process. Each connector below keeps one
// listener on every socket it opens for its whole life; the first error still reaches ioredis
// (and the 'error' listener in createRedis), and later ones are already explained by it.
type Connect = StandaloneConnector['connect']
type ConnectorClass = NonNullable<RedisOptions['Connector']>
const listenForLife = (stream: Awaited<ReturnType<Connect>>): typeof stream => stream.on('error', laterSocketError)
function laterSocketError (): void {}
class StandaloneGuarded extends StandaloneConnector {
  override connect (...a: Parameters<Connect>): ReturnType<Connect> { return super.connect(...a).then(listenForLife) }
}
class SentinelGuarded extends SentinelConnector {
  override connect (...a: Parameters<Connect>): ReturnType<Connect> { return super.connect(...a).then(listenForLife) }
}
// The sentinels are asked through clients ioredis makes itself (one per query of the master's
// address, and the failover detector's subscriptions), with the default connector: their
// sockets fail the same way (a TLS sentinel's alert during teardown). connectToSentinel is
// private in ioredis's types, so it is wrapped on the prototype.
{
  const proto = SentinelGuarded.prototype as unknown as { connectToSentinel (endpoint: unknown, options?: RedisOptions): Redis }
  const toSentinel = proto.connectToSentinel
  proto.connectToSentinel = function (endpoint, options) {
    return toSentinel.call(this, endpoint, { Connector: StandaloneGuarded as unknown as ConnectorClass, ...options })
  }
}

/** What every connection shares: timeouts, fail-fast, credentials, TLS. */
function baseOptions (cfg: RedisConfig): RedisOptions {
  const o: RedisOptions = {
    connectTimeout: cfg.connectTimeoutMs,
    commandTimeout: cfg.commandTimeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    lazyConnect: false,
    retryStrategy: (times) => Math.min(100 * times, 2000),
    Connector: StandaloneGuarded as unknown as ConnectorClass
  }
  if (cfg.username) o.username = cfg.username
  if (cfg.password) o.password = cfg.password
  const tls = tlsOptions(cfg)
  if (tls) o.tls = tls
  return o
}

/** Build the ioredis client for the configured shape. `extra` overrides (a subscriber queues, for one). */
export function createRedisClient (cfg: RedisConfig, extra: RedisOptions = {}): RedisClient {
  const base = { ...baseOptions(cfg), ...extra }
  const mode = redisMode(cfg)
  if (mode === 'cluster') {
    const nodes = cfg.cluster!.nodes.map((n) => {
      // Credentials in a node URL apply to every node (ioredis would use them for that seed only).
      const u = /^rediss?:\/\//i.test(n) ? new URL(n) : null
      if (u?.username && !base.username) base.username = decodeURIComponent(u.username)
      if (u?.password && !base.password) base.password = decodeURIComponent(u.password)
      return hostPort(n)
    })
    const { enableOfflineQueue, maxRetriesPerRequest, retryStrategy, ...redisOptions } = base
    void maxRetriesPerRequest; void retryStrategy
    const options: ClusterOptions = {
      redisOptions,
      enableOfflineQueue,
      enableReadyCheck: true,
      scaleReads: 'master',
      maxRedirections: 16,
      retryDelayOnFailover: 100,
      retryDelayOnClusterDown: 100,
      slotsRefreshTimeout: Math.max(1000, cfg.connectTimeoutMs),
      clusterRetryStrategy: (times) => Math.min(100 * times, 2000),
      // TLS certificates name the host as configured, not the IP a node announces.
      ...(base.tls ? { dnsLookup: (address: string, cb: (err: Error | null, a: string) => void) => cb(null, address) } : {})
    }
    const cluster = new Cluster(nodes, options)
    // Redis#duplicate(options) and Cluster#duplicate(nodes, options) differ: a store written for
    // one server (the cache's pub/sub subscriber) may call duplicate({ ... }) on either. Accept
    // that form here: cluster-level keys stay on top, the rest go to every node's options.
    const dup = cluster.duplicate.bind(cluster)
    cluster.duplicate = ((a?: unknown, b?: ClusterOptions) => {
      if (Array.isArray(a)) return dup(a, b)
      const { enableOfflineQueue: q, ...per } = (a ?? {}) as RedisOptions
      return dup([], { ...(q === undefined ? {} : { enableOfflineQueue: q }), redisOptions: { ...redisOptions, ...per } })
    }) as Cluster['duplicate']
    return cluster
  }
  if (mode === 'sentinel') {
    const client = new Redis({
      ...base,
      Connector: SentinelGuarded as unknown as ConnectorClass,
      sentinels: cfg.sentinels!.map(hostPort),
      name: cfg.name || 'mymaster',
      ...(cfg.sentinelPassword ? { sentinelPassword: cfg.sentinelPassword } : {}),
      ...(base.tls ? { enableTLSForSentinelMode: true, sentinelTLS: base.tls } : {}),
      sentinelRetryStrategy: (times: number) => Math.min(100 * times, 2000),
      // Follow a failover: reconnect to the new master when the old one turns replica.
      reconnectOnError: (err: Error) => /READONLY/.test(err.message) ? 2 : false
    })
    // ioredis gives its own sentinel connector the client to emit 'sentinelReconnecting' and
    // 'failoverSubscribed' on; a connector passed as an option must be told the same.
    ;(client as unknown as { connector: { emitter: unknown } }).connector.emitter = client
    return client
  }
  // One server; the URL's own user, password and rediss:// win over the config keys.
  return new Redis(cfg.url, base)
}

function shownAs (cfg: RedisConfig): string {
  const mode = redisMode(cfg)
  if (mode === 'cluster') return `cluster(${cfg.cluster!.nodes.map((n) => /^rediss?:\/\//i.test(n) ? redactUrl(n) : n).join(',')})`
  if (mode === 'sentinel') return `sentinel(${cfg.name || 'mymaster'}@${cfg.sentinels!.join(',')})`
  return redactUrl(cfg.url)
}

const TIMED = Symbol('sluice.timed')
type Sent = { name: string; promise: Promise<unknown>; [TIMED]?: true }

/**
 * Times every command sent on `client` into sluice_redis_command_duration_seconds{command}:
 * from sendCommand until the reply or the failure (a timeout included). One wrapper on the
 * client instance covers the cache store, the rate-limit buckets and the purge bus's publishes
 * (scripts count as evalsha, or eval after NOSCRIPT). Commands refused at once because the
 * client is not ready are not timed (sluice_redis_errors_total counts those). Subscriber
 * connections are separate clients and are not timed.
 */
export function timeCommands (client: RedisClient, metrics: Metrics): void {
  const children: Record<string, FastHistogramChild> = Object.create(null)
  for (const c of REDIS_COMMANDS) children[c] = metrics.redisCommandDuration.labels(c)
  const other = metrics.redisCommandDuration.labels('_other')
  const send = client.sendCommand as (this: RedisClient, command: Sent, ...rest: unknown[]) => unknown
  client.sendCommand = function (this: RedisClient, command: Sent, ...rest: unknown[]) {
    // A cluster re-sends a queued command through sendCommand: time it once, from the first send.
    if (command[TIMED] === true || client.status !== 'ready') return send.call(this, command, ...rest)
    command[TIMED] = true
    // ioredis names commands as called: client.get → 'get', client.call('MEMORY', ...) → 'MEMORY'.
    const h = children[command.name] ?? children[command.name.toLowerCase()] ?? other
    const t0 = performance.now()
    const done = (): void => { h.observe((performance.now() - t0) / 1000) }
    command.promise.then(done, done)
    return send.call(this, command, ...rest)
  } as RedisClient['sendCommand']
}

/**
 * Whether a failed command means Redis cannot be used now: a timeout, a closed or refused
 * connection, or a server that answers that it cannot serve (loading, busy script, cluster
 * down). A reply error for this one command, or a value Sluice could not decode, does not.
 */
export function unavailable (err: Error): boolean {
  if (err instanceof ReplyError) return /^(LOADING|BUSY|CLUSTERDOWN|MASTERDOWN|TRYAGAIN|NOAUTH|WRONGPASS|NOPERM)\b/.test(err.message)
  if (err instanceof SyntaxError || err instanceof RangeError || (err as { code?: unknown }).code === 'SLUICE_L2_CORRUPT') return false
  return true
}

export function createRedis (cfg: RedisConfig, deps: { log: Logger; metrics: Metrics }): RedisHandle {
  const { log, metrics } = deps
  const shown = shownAs(cfg)
  const mode = redisMode(cfg)
  if ([!!cfg.url, mode === 'cluster', (cfg.sentinels?.length ?? 0) > 0].filter(Boolean).length > 1) {
    log.warn({ using: mode }, 'redis: more than one of url, cluster and sentinels is set; cluster wins over sentinels, sentinels over url')
  }
  if (cfg.tls?.rejectUnauthorized === false) log.warn({ redis: shown }, 'redis TLS certificates are not verified (redis.tls.rejectUnauthorized: false)')
  const client = createRedisClient(cfg)
  timeCommands(client, metrics)
  let lastError: string | null = null
  let errors = 0
  let down = false
  // One line when Redis goes away, and one more for each other reason seen while it stays away
  // (at most 5): the first error is often a timeout, and the cause (a refused certificate, a
  // wrong password) only comes after it. Reconnect attempts that fail the same way log nothing.
  const reasons = new Set<string>()
  const markDown = (err: Error) => {
    lastError = err.message
    if (!down) {
      down = true
      reasons.clear()
      reasons.add(err.message)
      log.warn({ redis: shown, err: err.message }, 'redis unavailable: caches act as misses, limits use local buckets')
    } else if (reasons.size < 5 && !reasons.has(err.message)) {
      reasons.add(err.message)
      log.warn({ redis: shown, err: err.message }, 'redis unavailable: another error while it is down')
    }
  }
  client.on('error', (err: Error) => { metrics.redisErrors.labels('connection').inc(); errors++; markDown(err) })
  const back = () => {
    if (down) log.info({ redis: shown }, 'redis is back')
    down = false
    if (probe !== null) { clearInterval(probe); probe = null }
  }
  client.on('ready', back)
  // While down with the connection still open (a hung or overloaded server), one PING a
  // second; the first answer brings Redis back. A closed connection reconnects by itself.
  let probe: NodeJS.Timeout | null = null
  let pinging = false
  let closed = false
  const startProbe = () => {
    if (probe !== null || closed) return
    probe = setInterval(() => {
      if (pinging || client.status !== 'ready') return
      pinging = true
      client.ping().then(back, () => {}).finally(() => { pinging = false })
    }, 1000)
    probe.unref()
  }
  return {
    client,
    prefix: cfg.keyPrefix,
    mode,
    onError (op, err) {
      metrics.redisErrors.labels(op).inc()
      errors++
      // Only a Redis that cannot answer is marked down. One that answered with an error (a
      // script error, a wrong type), or a record that does not decode, is counted and logged
      // by the caller, and the next command goes to Redis as usual.
      if (!unavailable(err)) { lastError = err.message; return }
      markDown(err)
      startProbe()
    },
    up () { return !down && client.status === 'ready' },
    ready (ms) {
      if (client.status === 'ready') return Promise.resolve(true)
      return new Promise((resolve) => {
        const done = (ok: boolean) => { clearTimeout(timer); client.off('ready', yes); client.off('error', no); resolve(ok) }
        const yes = () => done(true)
        // A refused or failed connection: Redis is not there now, so there is nothing to wait for.
        const no = () => done(false)
        const timer = setTimeout(no, ms)
        timer.unref()
        client.once('ready', yes)
        client.once('error', no)
      })
    },
    status () {
      return { configured: true, url: shown, mode, state: client.status, healthy: client.status === 'ready' && !down, lastError, errors }
    },
    subscriber () {
      return createRedisClient(cfg, { enableOfflineQueue: true, maxRetriesPerRequest: null, commandTimeout: undefined })
    },
    async close () {
      closed = true
      if (probe !== null) { clearInterval(probe); probe = null }
      try { await client.quit() } catch { client.disconnect() }
    }
  }
}
