// Every error Sluice answers with, declared once: a stable code, an HTTP status and a message,
// and the writers that put one on the wire outside Fastify's reply (there is one of each).
// The README table "Error codes" lists each one; test/core/docs.test.ts fails when one is missing.
import { STATUS_CODES, type ServerResponse } from 'node:http'

export interface ErrorSpec { status: number; message: string }

export const ERRORS = {
  SLUICE_ERR_NO_ROUTE: { status: 404, message: 'No route matches this request' },
  SLUICE_ERR_BAD_REQUEST: { status: 400, message: 'Malformed request' },
  SLUICE_ERR_BAD_PATH: { status: 400, message: 'The request path is not valid' },
  SLUICE_ERR_REQUEST_TIMEOUT: { status: 408, message: 'The request was not received in time' },
  SLUICE_ERR_EXPECTATION_FAILED: { status: 417, message: 'Only the 100-continue expectation is supported' },
  SLUICE_ERR_BODY_TOO_LARGE: { status: 413, message: 'The request body is larger than this route allows' },
  SLUICE_ERR_URI_TOO_LONG: { status: 414, message: 'The request URI is too long' },
  SLUICE_ERR_HEADERS_TOO_LARGE: { status: 431, message: 'The request headers are too large' },
  SLUICE_ERR_RATE_LIMITED: { status: 429, message: 'Too many requests from this client' },
  SLUICE_ERR_UPSTREAM_BUDGET: { status: 429, message: 'The upstream request budget is exhausted' },
  SLUICE_ERR_UPSTREAM_CONNECT: { status: 502, message: 'The upstream refused the connection' },
  SLUICE_ERR_UPSTREAM_RESET: { status: 502, message: 'The upstream closed the connection' },
  SLUICE_ERR_UPSTREAM_DNS: { status: 502, message: 'The upstream host name does not resolve' },
  SLUICE_ERR_UPSTREAM_TLS: { status: 502, message: 'The upstream TLS handshake failed' },
  SLUICE_ERR_UPSTREAM_PROTOCOL: { status: 502, message: 'The upstream sent an invalid response' },
  SLUICE_ERR_CIRCUIT_OPEN: { status: 503, message: 'The upstream circuit breaker is open' },
  SLUICE_ERR_NO_HEALTHY_TARGET: { status: 503, message: 'No target of the upstream is in rotation (every one failed its health checks or was ejected)' },
  SLUICE_ERR_SHUTTING_DOWN: { status: 503, message: 'The gateway is shutting down' },
  SLUICE_ERR_UPSTREAM_TIMEOUT: { status: 504, message: 'The upstream did not answer in time' },
  SLUICE_ERR_DECOMPRESSED_TOO_LARGE: { status: 502, message: 'The upstream body expands past maxDecompressedBytes when decoded' },
  SLUICE_ERR_ONLY_IF_CACHED: { status: 504, message: 'only-if-cached was requested and no stored response is available' },
  SLUICE_ERR_UNAUTHORIZED: { status: 401, message: 'A valid admin token is required' },
  SLUICE_ERR_ADMIN_BAD_REQUEST: { status: 400, message: 'The admin request is not valid' },
  SLUICE_ERR_CONFIG_INVALID: { status: 422, message: 'The configuration is not valid' },
  SLUICE_ERR_ADMIN_FORBIDDEN: { status: 403, message: 'This admin request comes from another site, or names a host this admin port does not answer for' },
  SLUICE_ERR_ADMIN_BUSY: { status: 409, message: 'A CPU profile or heap snapshot is already being taken' },
  SLUICE_ERR_ADMIN_TIMEOUT: { status: 504, message: 'The worker did not answer the admin request in time' },
  SLUICE_ERR_PURGE_INCOMPLETE: { status: 503, message: 'The purge cleared this process\'s memory cache but could not reach Redis; retry it' },
  SLUICE_ERR_CLIENT_CLOSED: { status: 499, message: 'The client closed the connection before the response (logged, never sent)' },
  SLUICE_ERR_UPGRADE_REFUSED: { status: 400, message: 'This route does not accept this upgrade' },
  SLUICE_ERR_INTERNAL: { status: 500, message: 'Internal gateway error' },
  SLUICE_ERR_NOT_IMPLEMENTED: { status: 501, message: 'The request uses a transfer coding other than chunked' }
} as const satisfies Record<string, ErrorSpec>

export type ErrorCode = keyof typeof ERRORS

export class SluiceError extends Error {
  readonly code: ErrorCode
  readonly status: number
  /** Extra response headers (Retry-After, RateLimit fields...). */
  headers?: Record<string, string>
  /** The upstream target (host:port) whose attempt failed, for the log line; never sent to the client. */
  target?: string
  constructor (code: ErrorCode, message?: string, opts: { cause?: unknown; headers?: Record<string, string> } = {}) {
    super(message ?? ERRORS[code].message, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.name = 'SluiceError'
    this.code = code
    this.status = ERRORS[code].status
    if (opts.headers) this.headers = opts.headers
  }
}

export function isSluiceError (err: unknown): err is SluiceError {
  return err instanceof SluiceError
}

/** The JSON body every error response carries (`extra`: more fields, for the admin API). */
export function errorBody (err: SluiceError, extra?: Record<string, unknown>): string {
  return JSON.stringify(extra === undefined ? { error: err.code, message: err.message } : { error: err.code, message: err.message, ...extra })
}

/** An error written to a ServerResponse before Fastify runs, as JSON; `close` ends the connection after it. Returns the body's length in bytes. */
export function writeError (res: ServerResponse, err: SluiceError, close = false, rid?: { header: string }, requestId?: string): number {
  const body = requestId === undefined ? errorBody(err) : errorBody(err, { requestId })
  // HTTP/2 has no Connection field (Node drops it with a warning): its stream ends by itself.
  const h1 = !('stream' in res)
  if (close && h1) res.shouldKeepAlive = false
  const length = Buffer.byteLength(body)
  res.writeHead(err.status, { 'content-type': 'application/json', 'content-length': length, ...(close && h1 ? { connection: 'close' } : {}), ...(rid && requestId !== undefined ? { [rid.header]: requestId } : {}), ...err.headers })
  res.end(body)
  return length
}

/** An error as raw HTTP/1.1 bytes, for a bare socket (a malformed request, a refused upgrade); the connection closes after it. */
export function rawError (err: SluiceError, rid?: { header: string }, requestId?: string): string {
  const body = requestId === undefined ? errorBody(err) : errorBody(err, { requestId })
  let extra = rid !== undefined && requestId !== undefined ? `${rid.header}: ${requestId}\r\n` : ''
  if (err.headers !== undefined) for (const k in err.headers) extra += `${k}: ${err.headers[k]}\r\n`
  return `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n${extra}\r\n${body}`
}
