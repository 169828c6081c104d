// The compiled, frozen shape of a loaded config that every request reads (built by
// config/compile.ts). Types only: a leaf that the router, the request context and the stages
// import without importing the compiler.
import type { BlockList } from 'node:net'
import type { Config, UpstreamConfig } from './schema.js'
import type { CacheRouteConfig } from '../httpcache/config.js'
import type { CompressionRouteConfig } from '../compress/config.js'
import type { ClientRateLimitConfig } from '../resilience/config.js'
import type { RequestIdRule } from '../request-id.js'
import type { HealthCheckConfig, OutlierDetectionConfig } from '../upstream/config.js'
import type { TlsMaterial } from '../edge/tls.js'

/**
 * The TLS options of an upstream, built once at load and used by its pool (undici `connect`)
 * and by WebSocket tunnels (`tls.connect`): the CA bytes were read when the file was loaded.
 */
export interface UpstreamTlsOptions {
  rejectUnauthorized: boolean
  /** SNI name and the name the certificate must match, when it differs from the URL host. */
  servername?: string
  /** Contents of tls.caFile (extra CA certificates). */
  ca?: Buffer
}

/** One instance of an upstream (upstreams.NAME.url, or one of its targets). */
export interface TargetEntry {
  /** host:port (port always written): the `target` metric label and the id in /admin/upstreams. */
  id: string
  /** scheme://host:port, its pool's origin. */
  origin: string
  /** Path prefix of the target URL without a trailing slash ('' for none). */
  basePath: string
  /** host[:port] sent as Host unless preserveHost. */
  hostHeader: string
  weight: number
}

/** What balance: hash hashes: the client address, or a request header (lower-case name). */
export type HashKeyRule = { kind: 'ip' } | { kind: 'header', name: string }

export interface UpstreamEntry {
  name: string
  targets: readonly TargetEntry[]
  balance: 'round-robin' | 'least-request' | 'hash'
  hashKey: HashKeyRule
  healthCheck: Readonly<HealthCheckConfig> | null
  outlier: Readonly<OutlierDetectionConfig>
  config: Readonly<UpstreamConfig>
  /** Connection TLS options (used only for https upstreams). */
  tls: Readonly<UpstreamTlsOptions>
}

export interface RouteEntry {
  name: string
  index: number
  host: string
  pathPrefix: string
  methods: ReadonlySet<string> | null
  upstream: UpstreamEntry
  timeoutMs: number
  websocket: boolean
  maxBodyBytes: number
  cache: Readonly<CacheRouteConfig>
  compression: Readonly<CompressionRouteConfig>
  rateLimit: Readonly<ClientRateLimitConfig> | null
  /** routes[].retry.nonIdempotent: retries may repeat POST/PATCH on this route. */
  retryNonIdempotent: boolean
  /** routes[].serverTiming: send a Server-Timing header with per-stage times. */
  serverTiming: boolean
  /** routes[].rewrite, or null: the upstream path is rewritten, the cache key is not. */
  rewrite: PathRewrite | null
  /** routes[].headers, compiled; null when the route edits no header. */
  headerEdits: HeaderEdits | null
}

export interface PathRewrite {
  /** Prefix removed by whole segments, or '' for none. */
  strip: string
  /** Prefix added after stripping, or '' for none. */
  add: string
}

/** Names are lower case; `set` values replace whatever the message had. */
export interface HeaderEdits {
  requestSet: readonly (readonly [string, string])[]
  requestRemove: readonly string[]
  responseSet: readonly (readonly [string, string])[]
  responseRemove: readonly string[]
}

export interface Snapshot {
  /** Short hash of the config, shown in logs and /admin/config. */
  version: string
  loadedAt: number
  file: string
  config: Readonly<Config>
  routes: readonly RouteEntry[]
  upstreams: Readonly<Record<string, UpstreamEntry>>
  router: Router
  /** Trusted proxy addresses (listen.trustedProxies), or null when none are trusted. */
  trust: BlockList | null
  /** The request ID header and rule (requestId). */
  requestId: RequestIdRule
  /** The proxy port's certificate pair (listen.tls), read at load; null for cleartext. */
  listenTls: TlsMaterial | null
}

export interface Router {
  /** `host` is the Host header as received (any case, maybe with a port). */
  match (host: string | undefined, method: string, path: string): RouteEntry | null
}
