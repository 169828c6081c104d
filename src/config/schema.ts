// The config file's schema: composes each stage's schema (kept beside its stage) into one.
// Types are derived from it; `sluice schema` prints it as JSON Schema for YAML editors.
import { Type, type Static } from '@sinclair/typebox'
import { Strict, Ms, MAX_MS, Bytes, Bool, WithDefault } from './types-helpers.js'
import { RequestIdSchema } from '../request-id.js'
import { TracingSchema } from '../observability/tracing.js'
import { ListenEdgeProps, RequestBodyRateSchema, Http2Schema } from '../edge/config.js'
import { TargetSchema, BalanceSchema, HashKeySchema, HealthCheckSchema, OutlierDetectionSchema, RewriteSchema, RouteHeadersSchema, MAX_TARGETS } from '../upstream/config.js'
import { CacheGlobalSchema, CacheRouteSchema } from '../httpcache/config.js'
import { CompressionRouteSchema } from '../compress/config.js'
import { UpstreamRateLimitSchema, CircuitBreakerSchema, RetrySchema, ClientRateLimitSchema, RouteRetrySchema } from '../resilience/config.js'

export const NAME = '^[A-Za-z0-9][A-Za-z0-9_.-]*$'
const Port = (def: number, description: string) => Type.Integer({ minimum: 0, maximum: 65535, default: def, description })

export const ListenSchema = Strict({
  host: Type.String({ default: '0.0.0.0', description: 'Address the proxy listens on' }),
  port: Port(8080, 'Port the proxy listens on'),
  trustedProxies: Type.Array(Type.String(), { default: [], description: 'CIDRs or addresses of proxies in front of Sluice whose X-Forwarded-For is trusted; from anyone else the header is replaced' }),
  ...ListenEdgeProps
}, { description: 'The proxy listener' })

export const AdminSchema = Strict({
  host: Type.String({ default: '127.0.0.1', description: 'Address of the admin port (loopback by default; any other address requires a token)' }),
  port: Port(9901, 'Port of the admin listener (health, readiness, metrics, admin API)'),
  token: Type.String({ default: '', description: 'Bearer token required by /admin/*; empty means no token (loopback only)' })
}, { description: 'The admin listener' })

export const RedisSchema = Strict({
  url: Type.String({ default: '', description: 'redis:// or rediss:// URL; empty means memory only' }),
  keyPrefix: Type.String({ default: 'sluice:', description: 'Prefix of every key Sluice writes' }),
  commandTimeoutMs: Ms(250, 'A Redis command slower than this counts as an error and Sluice carries on without it', 1),
  connectTimeoutMs: Ms(2000, 'Connection timeout', 1),
  username: Type.String({ default: '', description: 'ACL user (Redis 6+) for every connection, when the URL does not carry one (redis://user:password@host); used for cluster nodes and for the servers Sentinel names' }),
  password: Type.String({ default: '', description: 'Password of the ACL user (or the legacy requirepass), when the URL does not carry one' }),
  tls: WithDefault(Strict({
    enabled: Bool(false, 'Connect with TLS; a rediss:// URL or cluster node turns it on by itself'),
    caFile: Type.String({ default: '', description: 'PEM file of the CA that signed the Redis server certificates; empty: the system CAs' }),
    certFile: Type.String({ default: '', description: 'PEM client certificate, for servers that require one (tls-auth-clients yes)' }),
    keyFile: Type.String({ default: '', description: 'PEM key of certFile' }),
    servername: Type.String({ default: '', description: 'Server name (SNI) the certificate must match, when it differs from the host' }),
    rejectUnauthorized: Bool(true, 'Verify the server certificate (turning it off logs a warning)')
  }, { description: 'TLS toward Redis (single server, cluster nodes and Sentinel-discovered servers)' })),
  cluster: Type.Optional(Strict({
    nodes: Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'Seed nodes as redis:// or rediss:// URLs or host:port; the other nodes and the slot map are discovered' })
  }, { description: 'A Redis Cluster instead of redis.url. Every key Sluice writes together carries a {hash tag}, so each script and transaction stays in one slot' })),
  sentinels: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'Redis Sentinel instead of redis.url: the sentinels as host:port; the master named redis.name is found through them and followed on failover' })),
  name: Type.String({ default: 'mymaster', description: 'With redis.sentinels: the master group name' }),
  sentinelPassword: Type.String({ default: '', description: 'With redis.sentinels: the password of the sentinels themselves, when they require one' })
}, { description: 'Optional shared store for the L2 cache, rate limits and purge fan-out: one server (url), a Redis Cluster (cluster) or Sentinel (sentinels). When more than one is set, cluster wins over sentinels, and sentinels over url' })

export const LogSchema = Strict({
  level: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), { default: 'info', description: 'Log level' }),
  accessLog: Bool(true, 'One JSON line per request')
}, { description: 'Logging (pino, JSON lines on stdout)' })

export const MetricsSchema = Strict({
  enabled: Bool(true, 'Observe every request in sluice_http_* metrics (off only to measure their cost)'),
  maxLabelValues: Type.Integer({ minimum: 1, default: 500, description: 'Distinct values one label (route, upstream) may take; the excess folds into _other' })
}, { description: 'Prometheus metrics on the admin port' })

export const ServerSchema = Strict({
  maxHeaderBytes: Bytes(16384, 'Largest request header block; larger gets 431', 1024),
  headersTimeoutMs: Ms(30000, 'Time allowed to receive the request headers; slower gets 408 and the connection closes', 1),
  requestTimeoutMs: Ms(300000, 'Time allowed to receive a whole request (headers and body); 0 disables'),
  keepAliveTimeoutMs: Ms(5000, 'Idle time before a client keep-alive connection is closed', 1),
  maxRequestsPerSocket: Type.Integer({ minimum: 0, default: 0, description: 'Requests served on one client connection before it is closed; 0 means no limit' }),
  maxUrlBytes: Bytes(8192, 'Longest request target (path and query); longer gets 414', 1),
  maxHeadersCount: Type.Integer({ minimum: 1, maximum: 2000, default: 100, description: 'Most request header lines; more gets 431' }),
  allowEncodedSlashes: Bool(false, 'Accept %2F and %5C in paths (kept encoded); by default they get 400'),
  mergeSlashes: Bool(true, 'Merge repeated slashes in paths (//a//b is /a/b) before routing and forwarding; false forwards them as sent, and routes see them too'),
  requestBodyRate: WithDefault(RequestBodyRateSchema),
  http2: WithDefault(Http2Schema)
}, { description: 'Limits of the client-facing HTTP server' })

export const UpstreamSchema = Strict({
  url: Type.Optional(Type.String({ description: 'Base URL of the upstream: http(s)://host[:port][/base-path] (one target; use targets for several)' })),
  targets: Type.Optional(Type.Array(TargetSchema, { minItems: 1, maxItems: MAX_TARGETS, description: 'Instances of the upstream, each a URL or { url, weight } (instead of url)' })),
  balance: BalanceSchema,
  hashKey: HashKeySchema,
  healthCheck: Type.Optional(HealthCheckSchema),
  outlierDetection: WithDefault(OutlierDetectionSchema),
  timeoutMs: Ms(10000, 'Deadline for the upstream\'s response headers, from when the first attempt may be sent (retries, their budget waits and a wait for a free pooled connection included; the first attempt\'s budget queue is not) → 504', 1),
  connectTimeoutMs: Ms(5000, 'TCP/TLS connect timeout of one attempt → 504', 1),
  bodyTimeoutMs: Ms(60000, 'Longest idle gap while streaming the upstream body; 0 disables (long-lived SSE)'),
  connections: Type.Integer({ minimum: 1, default: 128, description: 'Size of the keep-alive connection pool' }),
  keepAliveTimeoutMs: Ms(4000, 'Idle time before a pooled upstream connection is closed', 1),
  preserveHost: Bool(false, 'Forward the client\'s Host header (in lower case) instead of the upstream\'s host'),
  tls: WithDefault(Strict({
    rejectUnauthorized: Bool(true, 'Verify the upstream certificate (turning this off logs a warning at load)'),
    servername: Type.Optional(Type.String({ description: 'SNI name, when it differs from the URL host' })),
    caFile: Type.Optional(Type.String({ description: 'PEM file of extra CA certificates' }))
  }, { description: 'Upstream TLS' })),
  rateLimit: Type.Optional(UpstreamRateLimitSchema),
  circuitBreaker: WithDefault(CircuitBreakerSchema),
  retry: WithDefault(RetrySchema)
}, { description: 'An upstream service' })

export const MatchSchema = Strict({
  pathPrefix: Type.String({ default: '/', pattern: '^/', description: 'Path prefix; the longest matching prefix wins' }),
  methods: Type.Optional(Type.Array(Type.String({ pattern: '^[A-Z]+$' }), { minItems: 1, uniqueItems: true, description: 'Methods matched; absent means all' })),
  host: Type.String({ default: '*', description: 'Host matched: exact, `*.example.com`, or `*` for any' })
}, { description: 'What requests the route takes' })

export const RouteSchema = Strict({
  name: Type.String({ pattern: NAME, description: 'Route name, used in metrics and logs' }),
  match: WithDefault(MatchSchema),
  upstream: Type.String({ description: 'Name of an entry in upstreams' }),
  timeoutMs: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_MS, description: 'Overrides the upstream\'s timeoutMs for this route (milliseconds)' })),
  websocket: Bool(true, 'Pass WebSocket upgrades through'),
  maxBodyBytes: Type.Optional(Type.Integer({ minimum: 0, description: 'Largest request body; larger gets 413; 0 means no limit (bytes)' })),
  serverTiming: Type.Optional(Type.Boolean({ description: 'Add a Server-Timing header with the time spent per stage (route, limit, cache, upstream, compress); default false' })),
  cache: Type.Optional(CacheRouteSchema),
  compression: Type.Optional(CompressionRouteSchema),
  rateLimit: Type.Optional(ClientRateLimitSchema),
  retry: Type.Optional(RouteRetrySchema),
  rewrite: Type.Optional(RewriteSchema),
  headers: Type.Optional(RouteHeadersSchema)
}, { description: 'A route: a match and where it goes' })

export const RouteDefaultsSchema = Strict({
  timeoutMs: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_MS, description: 'Default route timeout (milliseconds)' })),
  maxBodyBytes: Type.Optional(Type.Integer({ minimum: 0, description: 'Default largest request body (bytes)' })),
  serverTiming: Type.Optional(Type.Boolean({ description: 'Default of routes[].serverTiming' })),
  cache: Type.Optional(Type.Partial(CacheRouteSchema)),
  compression: Type.Optional(Type.Partial(CompressionRouteSchema)),
  rateLimit: Type.Optional(ClientRateLimitSchema)
}, { description: 'Settings merged into every route that does not set them' })

export const ConfigSchema = Strict({
  $schema: Type.Optional(Type.String({ description: 'Path of the JSON Schema, for editors' })),
  listen: WithDefault(ListenSchema),
  admin: WithDefault(AdminSchema),
  redis: WithDefault(RedisSchema),
  log: WithDefault(LogSchema),
  metrics: WithDefault(MetricsSchema),
  requestId: WithDefault(RequestIdSchema),
  tracing: Type.Optional(TracingSchema),
  server: WithDefault(ServerSchema),
  shutdownGraceMs: Ms(10000, 'On SIGTERM, how long in-flight requests may take to finish'),
  workers: Type.Union([Type.Literal('auto'), Type.Integer({ minimum: 1, maximum: 256 })], { default: 1, description: 'Worker processes sharing the proxy port (node:cluster); `auto` is one per core. With more than 1, the primary serves the admin port and supervises the workers. Needs a restart to change' }),
  cache: WithDefault(CacheGlobalSchema),
  defaults: Type.Optional(RouteDefaultsSchema),
  upstreams: Type.Record(Type.String({ pattern: NAME }), UpstreamSchema, { description: 'Upstream services by name' }),
  routes: Type.Array(RouteSchema, { minItems: 1, description: 'Routes; see README "Route matching" for precedence' })
}, {
  $id: 'https://sluice.dev/schema/sluice.schema.json',
  title: 'Sluice configuration',
  // Top-level x- keys are the user's own, for anchors that other keys merge (`<<: *name`). The
  // loader drops them before it validates; this tells editors they are allowed.
  patternProperties: { '^x-': {} }
})

export type Config = Static<typeof ConfigSchema>
export type UpstreamConfig = Static<typeof UpstreamSchema>
export type RouteConfig = Static<typeof RouteSchema>
