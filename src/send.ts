// Writing a response straight to Node's ServerResponse: one header array, one writeHead.
// writeStored: bytes in hand (a cache hit, a 304, a HEAD), then one end. The fast path (before
// Fastify) and the pipeline (after it) both send stored responses through here.
// writeStreamed: a streamed body (pass-through, a miss, on-the-fly compression), piped.
import { STATUS_CODES, type ServerResponse } from 'node:http'
import { constants as h2constants, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2'
import type { Readable } from 'node:stream'
import type { ProxyResponse } from './types.js'
import type { RequestIdRule } from './request-id.js'
import { writeError, type SluiceError } from './errors.js'

type Extra = Record<string, string | number | string[] | undefined>

/**
 * `rid`: this request's ID header rule (src/request-id.ts) and `id` its value. A stored or
 * upstream copy of that header (an origin that echoes it) gives way to this request's.
 */
/** The response's own fields onto `flat` as name/value pairs, without `skip` (the request ID field this request's replaces). */
function pushStored (flat: string[], h: ProxyResponse['headers'], skip: string): void {
  for (const k in h) {
    const v = h[k]
    if (v === undefined || k === skip) continue
    if (typeof v === 'string') flat.push(k, v)
    else for (let i = 0; i < v.length; i++) flat.push(k, v[i])
  }
}

function headerArray (res: ProxyResponse, extra: Extra | undefined, rid: RequestIdRule | undefined, id: string | undefined): string[] {
  const flat: string[] = []
  const h = res.headers
  const skip = rid === undefined || id === undefined ? '' : rid.name
  if (skip !== '') flat.push(rid!.header, id!)
  pushStored(flat, h, skip)
  if (extra !== undefined) for (const k in extra) { const v = extra[k]; if (v !== undefined && k !== skip) flat.push(k, String(v)) }
  if (res.cacheStatus !== undefined) flat.push('cache-status', res.cacheStatus)
  if (res.age !== undefined) flat.push('age', res.age)
  return flat
}

export function writeStored (out: ServerResponse, res: ProxyResponse, extra?: Extra, rid?: RequestIdRule, id?: string): void {
  out.writeHead(res.status, headerArray(res, extra, rid, id))
  out.end(res.body ?? undefined)
}

/** The fields of Node's ServerResponse that writeStoredHead reads and sets (Node 20 and 22; test/core/stored-head.test.ts). */
interface ResponseInternals {
  _header: string | null
  _hasBody: boolean
  chunkedEncoding: boolean
  useChunkedEncodingByDefault: boolean
  _headerSent: boolean
  _keepAliveTimeout: number
  _defaultKeepAlive: boolean
  _maxRequestsPerSocket: number
  maxRequestsOnConnectionReached?: boolean
  /** Node's: the request said `Expect: 100-continue`, and whether 100 was sent. */
  _expect_continue?: boolean
  _sent100?: boolean
}

/** A stored response's status line and fields, written once per entry (and coding), then the request ID field's name. */
interface StoredBlock { head: string, status: number, rid: string, ridHeader: string, date: boolean }
// Keyed on the entry's response-header object, which the cache builds once per stored coding
// and shares between hits (src/httpcache/respond.ts outHeaders); it goes when the entry does.
const blocks = new WeakMap<object, StoredBlock>()
const FLATTEN = /^/

/** The status line and the name/value pairs of `flat`, each line ending in CRLF. */
function headLines (status: number, flat: string[]): string {
  let head = 'HTTP/1.1 ' + status + ' ' + (STATUS_CODES[status] ?? 'unknown') + '\r\n'
  for (let i = 0; i < flat.length; i += 2) head += flat[i] + ': ' + flat[i + 1] + '\r\n'
  return head
}

function storedBlock (res: ProxyResponse, rid: RequestIdRule): StoredBlock {
  const h = res.headers
  const had = blocks.get(h)
  if (had !== undefined && had.status === res.status && had.rid === rid.name && had.ridHeader === rid.header) return had
  const flat: string[] = []
  pushStored(flat, h, rid.name)
  let head = headLines(res.status, flat)
  head += rid.header + ': '
  FLATTEN.test(head) // one flat string, so each hit copies it once instead of walking its pieces
  const b = { head, status: res.status, rid: rid.name, ridHeader: rid.header, date: h.date !== undefined }
  blocks.set(h, b)
  return b
}

let dateSecond = -1
let dateLine = ''
let keepAliveMs = -1
let keepAliveLines = ''

/**
 * writeStored for a fast-path hit on HTTP/1.1: the response head is written as one string,
 * instead of through writeHead, which checks every header name and value against two regular
 * expressions and lower-cases each name, per response. A stored response's fields were checked
 * when they came in (Node's and undici's parsers refuse bad ones), the request ID is checked
 * when it is taken from the client (src/request-id.ts) and the rest are Sluice's own, so the
 * checks find nothing here.
 *
 * The head is what Node would write: the status line, the stored fields, Date when the stored
 * response has none, and Connection: keep-alive with Keep-Alive: timeout=N. The status line and
 * stored fields are written once per stored entry and coding (storedBlock); a hit adds its
 * request ID, Cache-Status and Age. Every other case Node decides differently (a connection
 * that closes after this response, a request limit per connection, a response without
 * Content-Length, a head already begun) goes through writeStored.
 *
 * Callgrind, 1 KB hit (bench/instr.mjs --warm 20000 --requests 6000): 78.7k instructions
 * through writeHead; 65.9k with the head as one string; 61.2k with the stored part written
 * once (bare Fastify 65.5k in the same run).
 */
export function writeStoredHead (out: ServerResponse, res: ProxyResponse, rid: RequestIdRule, id: string): void {
  const o = out as ServerResponse & ResponseInternals
  if (!directHeadAllowed(o) || res.headers['content-length'] === undefined) {
    writeStored(out, res, undefined, rid, id)
    return
  }
  const b = storedBlock(res, rid)
  let head = b.head + id + '\r\n'
  if (res.cacheStatus !== undefined) head += 'cache-status: ' + res.cacheStatus + '\r\n'
  if (res.age !== undefined) head += 'age: ' + res.age + '\r\n'
  setHead(o, res.status, head, b.date, false)
  out.end(res.body ?? undefined)
}

/** Whether Node's own head logic would add only Date and the keep-alive fields (and, without a length, chunked framing). */
function directHeadAllowed (o: ServerResponse & ResponseInternals): boolean {
  return o.shouldKeepAlive && o.maxRequestsOnConnectionReached !== true && o.sendDate && o._header === null && o._defaultKeepAlive === true &&
    ~~o._maxRequestsPerSocket === 0 && typeof o._keepAliveTimeout === 'number' &&
    // A final answer to an Expect: 100-continue request that got no 100 closes the connection
    // (the client may send the body anyway): writeHead decides that.
    (o._expect_continue !== true || o._sent100 === true)
}

/** Finish a head as Node's _storeHeader would (Date unless the response has one, keep-alive, chunked framing) and set it on the response. */
function setHead (o: ServerResponse & ResponseInternals, status: number, head: string, hasDate: boolean, chunked: boolean): void {
  if (!hasDate) {
    const second = Math.floor(Date.now() / 1000)
    if (second !== dateSecond) { dateSecond = second; dateLine = 'Date: ' + new Date(second * 1000).toUTCString() + '\r\n' }
    head += dateLine
  }
  if (o._keepAliveTimeout !== keepAliveMs) {
    keepAliveMs = o._keepAliveTimeout
    keepAliveLines = 'Connection: keep-alive\r\n' + (keepAliveMs > 0 ? 'Keep-Alive: timeout=' + Math.floor(keepAliveMs / 1000) + '\r\n' : '')
  }
  head += keepAliveLines
  if (chunked) {
    head += 'Transfer-Encoding: chunked\r\n'
    o.chunkedEncoding = true
  }
  o._header = head + '\r\n'
  o._headerSent = false
  o.statusCode = status
}

/**
 * writeHead for a streamed response on HTTP/1.1, with the head written as one string (as
 * writeStoredHead does for hits): the upstream's fields were checked by undici's parser, whose
 * rules for names and values are the ones writeHead applies again (llhttp refuses the same
 * control characters and non-token names); route header edits are checked when the config is
 * loaded; the rest are Sluice's own. A response without Content-Length gets chunked framing,
 * as Node gives it. Falls back to writeHead where Node would decide otherwise (see
 * directHeadAllowed), for HTTP/2, for 1xx, 204 and 304, and for a response that may have no body.
 */
function writeStreamedHead (out: ServerResponse, res: ProxyResponse, extra: Extra | undefined, rid: RequestIdRule | undefined, id: string | undefined): void {
  const o = out as ServerResponse & ResponseInternals
  const status = res.status
  // Date and Content-Length can only be the upstream's own (lower-case) fields: route edits may
  // not set them (src/config/check.ts), and the rest are Sluice's own fields.
  const length = res.headers['content-length'] !== undefined
  if (status < 200 || status === 204 || status === 304 || o._hasBody !== true || !directHeadAllowed(o) || (!length && o.useChunkedEncodingByDefault !== true)) {
    out.writeHead(status, headerArray(res, extra, rid, id))
    return
  }
  setHead(o, status, headLines(status, headerArray(res, extra, rid, id)), res.headers.date !== undefined, !length)
}

/**
 * writeStored on a raw HTTP/2 stream (the fast path answers h2 hits there, before Node's
 * compatibility layer): the same header list, as the object `respond()` takes, in one HEADERS
 * frame, then the body in DATA unless there is none (HEAD).
 */
export function respondStored (stream: ServerHttp2Stream, res: ProxyResponse, rid: RequestIdRule, id: string): void {
  const flat = headerArray(res, undefined, rid, id)
  const h: OutgoingHttpHeaders = { ':status': res.status }
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i]
    const had = h[k]
    h[k] = had === undefined ? flat[i + 1] : Array.isArray(had) ? [...had, flat[i + 1]] : [String(had), flat[i + 1]]
  }
  const body = res.body as Buffer | null
  // No DATA for HEAD, 204 and 304 (respond() itself ends a 204's or 304's stream: a later
  // end(body) was a write after end, an 'error' on the stream that took the process down).
  if (body === null || res.status === 204 || res.status === 304) { stream.respond(h, { endStream: true }); return }
  stream.respond(h)
  stream.end(body)
}

/**
 * End a response whose body failed after its head was sent, so the client cannot take the
 * part it got for the whole: HTTP/1 closes the connection; HTTP/2 resets the stream with
 * INTERNAL_ERROR (destroying the compatibility response resets it with NO_ERROR, which an
 * HTTP/2 client reads as a normal end).
 */
function cut (out: ServerResponse): void {
  const stream = (out as ServerResponse & { stream?: ServerHttp2Stream }).stream
  if (stream === undefined) out.destroy()
  else if (!stream.destroyed) stream.close(h2constants.NGHTTP2_INTERNAL_ERROR)
}

/**
 * Whether any byte of this response may have reached the client. HTTP/1: Node keeps the head
 * (writeHead's, or setHead's) until the first body write or end and sets `_headerSent` when it
 * hands it to the socket (an Expect: 100-continue answer goes at once). HTTP/2: respond() sends
 * HEADERS at writeHead.
 */
function headGone (out: ServerResponse): boolean {
  if (out.destroyed || out.writableEnded) return true
  if ((out as ServerResponse & { stream?: ServerHttp2Stream }).stream !== undefined) return out.headersSent
  return (out as ServerResponse & ResponseInternals)._headerSent
}

/**
 * Take back an HTTP/1 response head that was never sent and answer `err` (Sluice's JSON error
 * body, with the request ID) instead. Undoes what writeHead or setHead decided for the old head:
 * the head itself, chunked framing, the status message, any field set with setHeader. A
 * connection the old head would have closed (`_last`) is closed after the error too. Returns
 * the error body's length.
 */
function answerInstead (out: ServerResponse, err: SluiceError, rid: RequestIdRule | undefined, id: string | undefined): number {
  const o = out as ServerResponse & ResponseInternals & { _last?: boolean }
  o._header = null
  o.chunkedEncoding = false
  ;(o as { statusMessage?: string }).statusMessage = undefined
  for (const name of o.getHeaderNames()) o.removeHeader(name)
  return writeError(out, err, o._last === true, rid, id)
}

/**
 * Send a streamed body with backpressure. If the body fails before any byte of the response
 * went out (an origin that sends its head, then a malformed chunk or a reset), the client gets
 * the error `onBodyError` returns instead (502, Sluice's JSON error body) on HTTP/1; once a byte
 * went (and always on HTTP/2, whose HEADERS go at writeHead), or when `onBodyError` returns
 * none, the client's connection is cut, so a truncated response never looks complete
 * (`onBodyError` is told why, and whether the head went: `gone`); if the
 * client goes away first, the body is destroyed, which closes its upstream connection instead
 * of reading the rest. `onClose` runs once when the response closes (finished or cut off).
 *
 * The body is pumped by hand, not with Readable.pipe: pipe() puts about eight listeners on the
 * two streams per response and takes them off again when it ends (about 9k instructions of a
 * 245k pass-through request, callgrind), where this needs three on the body and one on the
 * response ('drain' only when the client reads slower than the upstream sends).
 */
export function writeStreamed (out: ServerResponse, res: ProxyResponse, body: Readable, extra: Extra | undefined, rid: RequestIdRule | undefined, id: string | undefined, onBodyError: (err: Error, gone: boolean) => SluiceError | undefined, onClose?: (sent: number) => void): void {
  writeStreamedHead(out, res, extra, rid, id)
  /** Body bytes handed to the response (the error body's, when one is answered instead). */
  let sent = 0
  body.on('error', (err) => {
    const gone = headGone(out)
    const answer = onBodyError(err, gone)
    if (gone || answer === undefined) cut(out)
    else sent = answerInstead(out, answer, rid, id)
  })
  out.once('close', () => {
    if (!body.destroyed) body.destroy()
    if (onClose !== undefined) onClose(sent)
  })
  let draining = false
  const resume = (): void => { draining = false; body.resume() }
  body.on('data', (chunk: Buffer) => {
    sent += chunk.length
    if (out.write(chunk) || draining || out.destroyed) return
    draining = true
    body.pause()
    out.once('drain', resume)
  })
  body.once('end', () => { out.end() })
}
