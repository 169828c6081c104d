// Types shared by the stages of the request pipeline (see src/pipeline.ts).
import type { Readable } from 'node:stream'

export type HeaderValue = string | string[]
/** Header names are lower case, as Node and undici give them. */
export type Headers = Record<string, HeaderValue | undefined>

/** The cache result label of a request, used in metrics and the access log. */
export type CacheResult =
  | 'none'        // the route has no cache
  | 'hit'
  | 'miss'
  | 'stale'
  | 'bypass'
  | 'revalidated'
  | 'coalesced'

/**
 * What the upstream stage is asked to send. It is a value, not the client's request,
 * so that a cache fill or a background refresh can outlive the client that caused it.
 */
export interface UpstreamRequest {
  method: string
  /** Path and query as they are forwarded (already normalised). */
  path: string
  /** Request headers as the client sent them (lower case). Hop-by-hop headers are removed by the upstream stage. */
  headers: Headers
  /** null for no body; a Buffer when the body was buffered (retries need it); else the client's stream. */
  body: Readable | Buffer | null
  /**
   * Set when the body (a stream now) is to be buffered for retries only once the upstream
   * stage has admitted the request (budget, breaker, a target in rotation): an
   * `Expect: 100-continue` client then gets its 100, and uploads, only if the request can go.
   */
  readBody?: () => Promise<Buffer>
  /** The client-facing host (Host header, without trusting X-Forwarded-Host). */
  host: string
  protocol: 'http' | 'https'
  /** The client address used for X-Forwarded-For, limits and logs. */
  clientIp: string
  /** Aborts the exchange (client went away). A detached fetch (cache fill, refresh) passes none. */
  signal?: AbortSignal
  /**
   * A cheaper abort source than `signal` for the undici request: an EventEmitter that emits
   * 'abort' when the client goes away (undici accepts either). Optional.
   */
  abortEmitter?: import('node:events').EventEmitter
  /** True once the client has gone away (when the request belongs to a client). */
  clientGone?: () => boolean
  /** Interim (1xx) responses from the upstream, passed to the client as they arrive (a client's request only). */
  onInfo?: (info: { statusCode: number, headers: Record<string, string | string[] | undefined> }) => void
  /** The request's SERVER span (tracing on): each upstream attempt gets a child span. */
  trace?: import('@opentelemetry/api').Span | null
  /** Attempts sent upstream so far (set by the upstream stage; retries = attempts - 1). */
  attempts?: number
  /** The HTTP version the client spoke (Node's httpVersion: 1.0, 1.1, 2.0), named in the upstream request's Via; absent, 1.1. */
  httpVersion?: string
  /** The request-ID field's name (lower case): kept upstream even when the client's Connection names it. */
  requestIdHeader?: string
  /** Where X-Forwarded-* come from: the client's socket peer and the trusted proxies. Absent: headers are sent as they are. */
  forwarded?: { peer: string | undefined; trust: import('node:net').BlockList | null }
}

/** A response on its way to the client: from the upstream (streamed) or from the cache (bytes). */
export interface ProxyResponse {
  status: number
  /** End-to-end headers only: hop-by-hop headers have been removed. */
  headers: Headers
  body: Readable | Buffer | null
  /** Metric label for the cache decision. */
  cacheResult: CacheResult
  /** Value of the Cache-Status header, when the route has a cache. */
  cacheStatus?: string
  /** Value of the Age header (seconds), for responses served from the cache. */
  age?: string
}
