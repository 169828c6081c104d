// Config schema of the cache: the top-level `cache:` block and each route's `cache:` block.
import { Type, type Static } from '@sinclair/typebox'
import { Strict, Bytes, Seconds, Ms, Bool, WithDefault } from '../config/types-helpers.js'

export const CacheGlobalSchema = Strict({
  memory: WithDefault(Strict({
    maxBytes: Bytes(268435456, 'Upper bound of the in-process L1 cache, headers and bodies included', 0),
    maxEntryBytes: Bytes(8388608, 'A response larger than this streams through uncached', 0)
  }, { description: 'The in-process L1 cache' })),
  coalesceAcrossReplicas: Bool(true, 'With Redis: a miss takes a fill lease in Redis, so one replica in the fleet fills each key and the others wait for its "filled" message (bounded by the route\'s coalesceTimeoutMs). Off: each replica coalesces its own misses'),
  hitForMissMaxKeys: Type.Integer({ minimum: 1, default: 10000, description: 'Most keys remembered as hit-for-miss at once (per process); past it, the oldest mark goes first. Bounds the memory a client can take with unique uncacheable URLs' }),
  targetedField: Type.String({ default: 'sluice-cache-control', pattern: '^[a-z0-9-]+$', description: 'A targeted cache-control field (RFC 9213) that overrides CDN-Cache-Control and Cache-Control for Sluice (lower case)' }),
  warmup: WithDefault(Strict({
    paths: Type.Array(Type.String({ pattern: '^/' }), { default: [], description: 'Paths fetched through the gateway after start and after each purge' }),
    host: Type.String({ default: '', description: 'Host header for warm-up requests; set it to the Host clients send, as the cache key includes it (empty: 127.0.0.1:<listen port>, which clients do not send)' })
  }, { description: 'Warm-up: fill the cache before traffic needs it' }))
}, { description: 'Cache storage shared by every route' })
export type CacheGlobalConfig = Static<typeof CacheGlobalSchema>

export const CacheKeySchema = Strict({
  sortQuery: Bool(false, 'Sort query parameters, so ?a=1&b=2 and ?b=2&a=1 share an entry; a cacheable request is forwarded with its query sorted, as keyed'),
  ignoreParams: Type.Array(Type.String(), { default: [], description: 'Query parameters left out of the key, and so never forwarded with a cacheable request (GET, HEAD, POST query): the origin sees exactly the keyed URL; `*` globs (e.g. utm_*)' }),
  headers: Type.Array(Type.String({ pattern: '^[a-z0-9-]+$' }), { default: [], description: 'Request headers added to the key (lower case)' })
}, { description: 'What goes into the cache key beyond method class, host, path and query' })

export const CacheRouteSchema = Strict({
  enabled: Bool(false, 'Cache this route\'s responses'),
  defaultTtlSeconds: Seconds(0, 'Freshness used only when the origin gives none; 0 means no default (heuristic freshness from Last-Modified may still apply)'),
  staleWhileRevalidateSeconds: Seconds(0, 'Serve stale this long past freshness while one background refresh runs (the response\'s own stale-while-revalidate wins)'),
  staleIfErrorSeconds: Seconds(0, 'Serve stale this long past freshness when the upstream fails (the response\'s own stale-if-error wins)'),
  key: WithDefault(CacheKeySchema),
  allowSetCookie: Bool(false, 'Store responses that carry Set-Cookie (the cookie is then sent to every client): only for origins that set no per-user cookies'),
  clientNoCacheRevalidates: Bool(true, 'A client\'s Cache-Control: no-cache (or Pragma: no-cache) makes Sluice revalidate with the origin'),
  etagFromBody: Bool(false, 'Add a strong ETag computed from the body when the origin sends none'),
  hitForMissSeconds: Seconds(10, 'After an uncacheable response, requests for that key go straight upstream (not coalesced) for this long'),
  coalesceTimeoutMs: Ms(5000, 'Longest wait for a coalesced fill before going upstream alone'),
  refreshAheadPercent: Type.Integer({ minimum: 0, maximum: 99, default: 0, description: 'Refresh a hit in the background once this share of its freshness has passed (0: off)' }),
  queryPost: WithDefault(Strict({
    enabled: Bool(false, 'Cache POST requests whose body is a query (GraphQL, search): the key adds a hash of the body and its Content-Type'),
    maxBodyBytes: Bytes(65536, 'Largest query body that is cached; larger POSTs pass through', 1)
  }, { description: 'POST query endpoints' })),
  heuristicPercent: Type.Integer({ minimum: 0, maximum: 100, default: 10, description: 'Heuristic freshness: this share of the time since Last-Modified (RFC 9111 §4.2.2), when the origin gives no freshness' }),
  maxHeuristicSeconds: Seconds(86400, 'Cap of heuristic freshness')
}, { description: 'Per-route HTTP cache (RFC 9111 shared cache)' })
export type CacheRouteConfig = Static<typeof CacheRouteSchema>
