// Request IDs: every request gets one, kept from the client when it is sane and trusted, or
// made here. It goes to the upstream (in the request's own headers, so fills, retries and
// WebSocket tunnels carry it), back to the client on every response Sluice writes (hits, errors
// and streamed answers alike; an ID the origin echoes or a stored response carries is
// replaced), into the access line (`reqId`), every JSON error body (`requestId`) and the log
// lines the gateway writes about the request.
import { randomBytes } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { Type, type Static } from '@sinclair/typebox'
import { Strict, Bool } from './config/types-helpers.js'

export const RequestIdSchema = Strict({
  header: Type.String({ pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", default: 'X-Request-Id', description: 'The request ID header, read from clients and sent to upstreams and back' }),
  trustIncoming: Bool(true, "Keep a client's ID when it is 1 to 128 visible ASCII characters (otherwise, or when false, a new one replaces it)")
}, { description: 'Request IDs (kept or made for every request; see README "Request IDs")' })
export type RequestIdConfig = Static<typeof RequestIdSchema>

/** The compiled form kept on the snapshot: the header as configured (sent) and lower case (read). */
export interface RequestIdRule { header: string; name: string; trust: boolean }

export function compileRequestId (c: RequestIdConfig): RequestIdRule {
  return Object.freeze({ header: c.header, name: c.header.toLowerCase(), trust: c.trustIncoming })
}

/** 1 to 128 visible ASCII characters: no spaces, no control bytes, nothing outside ASCII. */
const SANE = /^[\x21-\x7e]{1,128}$/

// A new ID: 8 random characters fixed per process (48 bits, so replicas and restarts do not
// collide), then a counter in base 36. Unique and compact; not a secret (it counts requests).
const PREFIX = randomBytes(6).toString('base64url')
let counter = 0
export function newRequestId (): string {
  return PREFIX + (++counter).toString(36)
}

/**
 * The request's ID. A new one is written into `req.headers`, so every copy of the request's
 * headers sent upstream carries it. Node joins repeated header lines with ", ", which is not
 * sane, so a request with two IDs gets a new one.
 */
export function assignRequestId (req: Pick<IncomingMessage, 'headers'>, rule: RequestIdRule): string {
  const h = req.headers
  const v = h[rule.name]
  if (rule.trust && typeof v === 'string' && SANE.test(v)) return v
  const id = newRequestId()
  h[rule.name] = id
  return id
}

/**
 * The request's ID for a log line about it: the client's request carries it in its headers
 * (`requestIdHeader` names the field), and so does a cache fill or refresh sent on its behalf.
 */
export function upstreamRequestId (req: { headers: Record<string, unknown>, requestIdHeader?: string }): string | undefined {
  const v = req.requestIdHeader === undefined ? undefined : req.headers[req.requestIdHeader]
  return typeof v === 'string' ? v : undefined
}
