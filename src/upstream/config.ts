// Config schemas of an upstream's targets (load balancing, health checks, outlier ejection)
// and of a route's rewrite and header edits. The keys are a fixed interface (README
// "Upstreams with several targets"); each has a default, so a config with `url:` alone keeps
// its meaning.
import { Type, type Static } from '@sinclair/typebox'
import { Strict, Ms } from '../config/types-helpers.js'

/** Most targets one upstream may have: bounds the `target` metric label. */
export const MAX_TARGETS = 64

/** RFC 9110 token: what a header name may be. */
export const TOKEN = '^[!#$%&\'*+.^_`|~0-9A-Za-z-]+$'

/**
 * A target's id: host:port, the port spelled out (80, 443 by scheme). It is the target's metric
 * label and the key its pool and health are kept under across reloads, so two targets of one
 * upstream may not share it (config/check.ts).
 */
export function targetId (u: URL): string {
  return `${u.hostname}:${u.port || (u.protocol === 'https:' ? '443' : '80')}`
}

export const TargetSchema = Type.Union([
  Type.String({ description: 'Target URL: http(s)://host[:port][/base-path]' }),
  Strict({
    url: Type.String({ description: 'Target URL: http(s)://host[:port][/base-path]' }),
    weight: Type.Integer({ minimum: 1, maximum: 1000, default: 1, description: 'Share of requests relative to the other targets' })
  }, { description: 'A target with a weight' })
], { description: 'One instance of the upstream' })

export const HealthCheckSchema = Strict({
  path: Type.String({ pattern: '^/', description: 'Path requested (GET) from each target' }),
  intervalMs: Ms(5000, 'Time between two checks of one target', 100),
  timeoutMs: Ms(1000, 'A check that has no answer in this time fails', 1),
  healthyThreshold: Type.Integer({ minimum: 1, maximum: 100, default: 2, description: 'Passing checks in a row that bring an unhealthy target back' }),
  unhealthyThreshold: Type.Integer({ minimum: 1, maximum: 100, default: 3, description: 'Failing checks in a row that take a target out of rotation' }),
  expectStatus: Type.Array(Type.Integer({ minimum: 100, maximum: 599 }), { minItems: 1, uniqueItems: true, default: [200, 204], description: 'Statuses that pass' })
}, { description: 'Active health checks of every target (run from each process, one check per interval per target)' })
export type HealthCheckConfig = Static<typeof HealthCheckSchema>

export const OutlierDetectionSchema = Strict({
  consecutiveErrors: Type.Integer({ minimum: 1, maximum: 1000, default: 5, description: 'Failures in a row (connect errors, resets, timeouts, 5xx) that eject a target' }),
  ejectMs: Ms(30000, 'How long an ejected target stays out of rotation', 1),
  maxEjectedPercent: Type.Integer({ minimum: 0, maximum: 100, default: 50, description: 'Passive ejection stops while this share of the targets is out of rotation for any reason (ejected or failing its health checks; rounded down, at least one when the upstream has two or more), and never takes the last target in rotation: the rest stay in rotation even when they fail too (panic mode)' })
}, { description: 'Passive ejection of a target that fails live traffic' })
export type OutlierDetectionConfig = Static<typeof OutlierDetectionSchema>

export const BalanceSchema = Type.Union([Type.Literal('round-robin'), Type.Literal('least-request'), Type.Literal('hash')], {
  default: 'round-robin',
  description: 'How a target is chosen: round-robin (weighted), least-request (power of two choices, weighted), hash (consistent: rendezvous hashing of hashKey)'
})

export const HashKeySchema = Type.String({
  pattern: '^(ip|header:[!#$%&\'*+.^_`|~0-9A-Za-z-]+)$',
  default: 'ip',
  description: 'What balance: hash hashes: `ip` (the client address) or `header:NAME` (a request header; absent → the client address)'
})

const HeaderMap = Type.Record(Type.String({ pattern: TOKEN }), Type.String(), { description: 'Header name → value (set replaces any value)' })
const HeaderEdits = Strict({
  set: Type.Optional(HeaderMap),
  remove: Type.Optional(Type.Array(Type.String({ pattern: TOKEN }), { uniqueItems: true, description: 'Header names removed' }))
}, { description: 'Header edits' })
export type HeaderEditsConfig = Static<typeof HeaderEdits>

export const RouteHeadersSchema = Strict({
  request: Type.Optional({ ...HeaderEdits, description: 'Edits of the request sent to the upstream (after Sluice\'s own header rules; hop-by-hop, Host, forwarding and request-ID headers are refused)' }),
  response: Type.Optional({ ...HeaderEdits, description: 'Edits of the upstream\'s response as it arrives, before the cache and compression see it (hop-by-hop and framing headers are refused)' })
}, { description: 'Request and response header edits' })
export type RouteHeadersConfig = Static<typeof RouteHeadersSchema>

export const RewriteSchema = Strict({
  stripPrefix: Type.Optional(Type.String({ pattern: '^/', description: 'Path prefix removed before forwarding, by whole segments (/svc strips /svc and /svc/x, never /svcx)' })),
  addPrefix: Type.Optional(Type.String({ pattern: '^/', description: 'Path prefix added before forwarding (after stripPrefix)' }))
}, { description: 'Path rewrite toward the upstream; the cache key stays the client-facing URL' })
export type RewriteConfig = Static<typeof RewriteSchema>
