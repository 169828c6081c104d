// The proxy port's server: cleartext HTTP/1.1 (the default), HTTPS (listen.tls), or HTTPS
// with HTTP/2 by ALPN and HTTP/1.1 for clients that do not offer h2 (listen.http2). One
// request listener serves all three: HTTP/2 requests arrive through Node's compatibility API
// (req/res shaped like HTTP/1's). A stream hook (onStream) sees each HTTP/2 request first, on
// the raw stream: what it answers (fresh cache hits) never costs the compatibility objects.
// This file owns what differs: certificate swaps, HTTP/2 sessions (limits, rapid-reset guard,
// GOAWAY on drain) and closing every connection.
import { createServer as createHttp, type IncomingMessage, type ServerResponse, type Server as HttpServer } from 'node:http'
import { createServer as createHttps, type Server as HttpsServer } from 'node:https'
import { createSecureServer, constants as h2, type Http2SecureServer, type ServerHttp2Session, type ServerHttp2Stream, type IncomingHttpHeaders } from 'node:http2'
import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import { secureOptions, type TlsMaterial } from './tls.js'
import { SluiceError, errorBody } from '../errors.js'
import type { Http2Config, ListenTlsConfig } from './config.js'

export interface Http1Options {
  maxHeaderSize: number
  headersTimeout: number
  requestTimeout: number
  keepAliveTimeout: number
  connectionsCheckingInterval: number
  maxRequestsPerSocket: number
  maxHeadersCount: number
}

export interface EdgeOptions {
  http1: Http1Options
  /** The pair (read at load) and listen.tls, or null for cleartext. */
  tls: { material: TlsMaterial, cfg: ListenTlsConfig } | null
  /** server.http2 when listen.http2 is on (needs tls), else null. */
  http2: Http2Config | null
  log: Logger
  /** The request ID a request carries (src/request-id.ts), for log lines about it. */
  requestIdOf?: (headers: IncomingHttpHeaders) => string | undefined
}

export type RequestListener = (req: IncomingMessage, res: ServerResponse) => void
/** Sees an HTTP/2 request before the compatibility layer: true when it has answered the stream. */
export type StreamHook = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, rawHeaders: string[]) => boolean

export interface EdgeServer {
  server: HttpServer | HttpsServer | Http2SecureServer
  scheme: 'http' | 'https'
  /** Serve this pair to new connections (connections already open keep theirs). */
  setTls (m: TlsMaterial): void
  /** Ask every HTTP/2 connection to finish its streams and close (GOAWAY); HTTP/1 closes as answers end. */
  drain (): void
  /** Close every connection now (the shutdown grace period is over). */
  closeAll (): void
  /** Set the HTTP/2 stream hook (no effect without HTTP/2). */
  onStream (hook: StreamHook): void
}

/**
 * An HTTP/2 request's header size as HPACK counts it for SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113
 * §6.5.2, RFC 7541 §4.1): name + value + 32 per field, pseudo-headers included. Node reads header
 * octets as latin1, so string length is the octet count. (HTTP/1's maxHeaderSize counts the raw
 * head instead; the 32 per field makes HTTP/2 a little stricter for requests with many fields.)
 */
function headerListSize (rawHeaders: string[]): number {
  let n = 0
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) n += rawHeaders[i].length + rawHeaders[i + 1].length + 32
  return n
}

/** The header list nghttp2 itself refuses (RST_STREAM, no answer): well past maxHeaderBytes, bounded. */
function h2HeaderCeiling (maxHeaderBytes: number): number {
  return Math.max(65535, 2 * maxHeaderBytes)
}

export function createEdgeServer (o: EdgeOptions, listener: RequestListener): EdgeServer {
  const sockets = new Set<Socket>()
  const track = (s: Socket) => { sockets.add(s); s.once('close', () => sockets.delete(s)) }
  // An upgraded socket (a WebSocket tunnel) is no longer one of the HTTP server's connections:
  // closeAllConnections() skips it, and server.close() would wait for it forever. So closeAll
  // closes the tracked ones itself.
  const trackUpgrades = (s: HttpServer | HttpsServer): void => { s.on('upgrade', (_req: IncomingMessage, socket: Socket) => track(socket)) }
  const closeEvery = (s: HttpServer | HttpsServer): void => { s.closeAllConnections(); for (const so of sockets) so.destroy() }
  const h1 = {
    maxHeaderSize: o.http1.maxHeaderSize,
    headersTimeout: o.http1.headersTimeout,
    requestTimeout: o.http1.requestTimeout,
    keepAliveTimeout: o.http1.keepAliveTimeout,
    connectionsCheckingInterval: o.http1.connectionsCheckingInterval,
    // Host is checked by the listener, so a missing or repeated Host gets Sluice's JSON 400, not Node's empty one.
    requireHostHeader: false,
    noDelay: true
  }
  if (o.tls === null) {
    const s = createHttp(h1, listener)
    s.maxRequestsPerSocket = o.http1.maxRequestsPerSocket
    s.maxHeadersCount = o.http1.maxHeadersCount
    trackUpgrades(s)
    return { server: s, scheme: 'http', setTls () {}, drain () {}, closeAll: () => closeEvery(s), onStream () {} }
  }
  // A handshake that fails or never finishes (handshakeTimeoutMs), or plain HTTP sent to the TLS
  // port, closes that socket and nothing else.
  const dropTlsClient = (_err: Error, socket: { destroy (): void }) => socket.destroy()
  const tls = { ...secureOptions(o.tls.material), handshakeTimeout: o.tls.cfg.handshakeTimeoutMs, ...(o.tls.material.ca !== undefined ? { requestCert: true, rejectUnauthorized: true } : {}) }
  if (o.http2 === null) {
    const s = createHttps({ ...h1, ...tls }, listener)
    s.maxRequestsPerSocket = o.http1.maxRequestsPerSocket
    s.maxHeadersCount = o.http1.maxHeadersCount
    s.on('tlsClientError', dropTlsClient)
    trackUpgrades(s)
    return {
      server: s,
      scheme: 'https',
      setTls: (m) => s.setSecureContext(secureOptions(m)),
      drain () {},
      closeAll: () => closeEvery(s),
      onStream () {}
    }
  }
  const lim = o.http2
  const s = createSecureServer({
    ...tls,
    allowHTTP1: true,
    // enableConnectProtocol: WebSocket over HTTP/2 (RFC 8441, extended CONNECT); routes without
    // `websocket: true` refuse it as they refuse an HTTP/1.1 Upgrade.
    // maxHeaderListSize is what nghttp2 itself enforces (once the client has acknowledged it)
    // with a bare RST_STREAM ENHANCE_YOUR_CALM: it is set above maxHeaderBytes so that a header
    // list past maxHeaderBytes reaches the stream listener below and gets 431 like HTTP/1's;
    // only one past this hard ceiling is reset without an answer. maxHeaderListPairs is the same
    // for header lines: Node resets a stream past it (ENHANCE_YOUR_CALM), so it sits well above
    // maxHeadersCount (twice it, plus the five pseudo-headers of an extended CONNECT) and a
    // request with too many lines gets 431, as over HTTP/1.1.
    settings: { maxConcurrentStreams: lim.maxConcurrentStreams, maxHeaderListSize: h2HeaderCeiling(o.http1.maxHeaderSize), enablePush: false, enableConnectProtocol: true },
    maxHeaderListPairs: 2 * o.http1.maxHeadersCount + 5,
    // Node's own guards against invalid frames and refused streams (then the session closes).
    maxSessionInvalidFrames: 100,
    maxSessionRejectedStreams: 100
  }, listener as never)
  // Rapid reset (CVE-2023-44487): streams the client opens and cancels at once cost the server
  // work without ever counting against maxConcurrentStreams. Cancellations are counted per
  // connection and second; past the limit the connection gets GOAWAY ENHANCE_YOUR_CALM and is
  // closed. One listener function for every stream (no closure per request).
  const resetWindows = new WeakMap<object, { start: number, resets: number }>()
  let warned = 0 // rapid-reset warnings this minute (at most 20 are logged)
  // Node emits 'aborted' whenever a stream closes before its answer ended, also when the gateway
  // closes it itself (an upstream that died mid-body, a tunnel the upstream ended): only resets
  // the client sent count. A stream the gateway destroys is already `destroyed` when 'aborted'
  // fires (Node 20: destroy() -> _destroy -> closeStream); one it close()s is marked by
  // closeByGateway, put on each stream in place of close (one shared function, no closure).
  const closedByGateway = new WeakSet<ServerHttp2Stream>()
  function closeByGateway (this: ServerHttp2Stream, code?: number, cb?: () => void): void {
    closedByGateway.add(this)
    Object.getPrototypeOf(this).close.call(this, code, cb)
  }
  function onStreamError (this: ServerHttp2Stream, err: Error): void {
    o.log.debug({ err: err.message, code: (err as NodeJS.ErrnoException).code }, 'HTTP/2 stream error')
  }
  function onAborted (this: ServerHttp2Stream): void {
    if (this.destroyed || closedByGateway.has(this)) return
    const session = this.session
    if (session === undefined || session.destroyed) return
    let w = resetWindows.get(session)
    if (w === undefined) { w = { start: 0, resets: 0 }; resetWindows.set(session, w) }
    const now = Date.now()
    if (now - w.start >= 1000) { w.start = now; w.resets = 0 }
    if (++w.resets > lim.maxResetsPerSecond) {
      if (warned++ < 20) o.log.warn({ ip: session.socket?.remoteAddress, resets: w.resets }, 'HTTP/2 client cancels streams too fast (rapid reset); connection closed')
      session.goaway(h2.NGHTTP2_ENHANCE_YOUR_CALM)
      session.destroy()
    }
  }
  // server.maxHeaderBytes on HTTP/2: 431 SLUICE_ERR_HEADERS_TOO_LARGE on that stream (the
  // connection stays), logged as HTTP/1's is (gateway.ts clientErrorHandler), at most 20 a second.
  let tooLargeLogged = 0
  let tooLargeWindow = 0
  const tooLarge = new SluiceError('SLUICE_ERR_HEADERS_TOO_LARGE')
  const tooLargeBody = errorBody(tooLarge)
  const headersTooLarge = (stream: ServerHttp2Stream): void => {
    const now = Date.now()
    if (now - tooLargeWindow > 1000) { tooLargeWindow = now; tooLargeLogged = 0 }
    if (tooLargeLogged++ < 20) o.log.info({ code: tooLarge.code, cause: 'HTTP/2 header list over server.maxHeaderBytes', ip: stream.session?.socket?.remoteAddress }, 'rejected malformed request')
    if (stream.destroyed || stream.headersSent) return
    stream.respond({ ':status': tooLarge.status, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(tooLargeBody) })
    stream.end(tooLargeBody)
  }
  // The compatibility layer is the 'stream' listener Node added for the request listener. It is
  // moved behind the hook, which gets each stream first and passes on those it does not answer.
  let hook: StreamHook | null = null
  const compat = s.listeners('stream')
  const next = compat.length === 1 ? compat[0] as (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => void : null
  if (next !== null) s.removeListener('stream', next)
  else o.log.warn({ listeners: compat.length }, 'HTTP/2: the compatibility listener was not found; cache hits over h2 take the full path')
  s.prependListener('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => {
    stream.on('aborted', onAborted)
    // A stream answered before the compatibility layer (a fast-path hit) has no 'error'
    // listener of its own: an error on it must not reach the process as an uncaught one.
    stream.on('error', onStreamError)
    stream.close = closeByGateway
    if (headerListSize(rawHeaders) > o.http1.maxHeaderSize) { headersTooLarge(stream); return }
    if (next === null) return
    if (hook !== null) {
      // A throw here would reach the session's emitter and the process: the request goes the
      // full way instead (or, when its headers already went out, the stream is reset).
      try {
        if (hook(stream, headers, rawHeaders)) return
      } catch (err) {
        if (stream.headersSent) {
          hookFailed(err, headers)
          stream.close(h2.NGHTTP2_INTERNAL_ERROR)
          return
        }
        // Logged once the full path has taken the request: its request ID is then the one its
        // access line and answer carry (the listener assigns it into these same headers).
        next(stream, headers, flags, rawHeaders)
        hookFailed(err, headers)
        return
      }
    }
    next(stream, headers, flags, rawHeaders)
  })
  function hookFailed (err: unknown, headers: IncomingHttpHeaders): void {
    o.log.warn({ reqId: o.requestIdOf?.(headers), err: (err as Error).message, path: headers[':path'] }, 'HTTP/2: answering a hit on the stream failed; the request takes the full path')
  }
  // HTTP/1.1 connections on this server use the same limits as the cleartext listener. Node's
  // HTTP/1 connection listener reads them off this server: maxHeaderSize per parser (else
  // 16 KB), connectionsCheckingInterval when it starts listening (else 30 s, past headersTimeout).
  Object.assign(s, { maxHeaderSize: h1.maxHeaderSize, headersTimeout: h1.headersTimeout, requestTimeout: h1.requestTimeout, keepAliveTimeout: h1.keepAliveTimeout, connectionsCheckingInterval: h1.connectionsCheckingInterval, requireHostHeader: false, maxHeadersCount: o.http1.maxHeadersCount, maxRequestsPerSocket: o.http1.maxRequestsPerSocket })
  // Node makes the h2 session in its own 'secureConnection' listener, which runs before this one:
  // pair the two, so that when a session ends (GOAWAY, a protocol error) its socket goes too.
  let justOpened: ServerHttp2Session | null = null
  s.on('secureConnection', (socket: Socket) => {
    track(socket)
    const ss = justOpened
    justOpened = null
    if (ss !== null) ss.once('close', () => { if (!socket.destroyed) socket.destroy() })
  })
  s.on('tlsClientError', dropTlsClient)
  // A connection that breaks the protocol (invalid frames, flow-control errors) is closed; its
  // neighbours never notice.
  s.on('sessionError', (_err, session) => { if (!session.destroyed) session.destroy() })
  const sessions = new Set<ServerHttp2Session>()
  s.on('session', (session) => {
    sessions.add(session)
    session.once('close', () => sessions.delete(session))
    justOpened = session
    session.on('error', () => {})
    session.on('frameError', (_type, _code, streamId) => { if (streamId === 0 && !session.destroyed) session.destroy() })
    // Idle: no frame for idleTimeoutMs closes the connection politely.
    session.setTimeout(lim.idleTimeoutMs, () => session.close())
    // A client that has not sent a valid SETTINGS frame within handshakeTimeoutMs (a broken
    // preface, garbage after it: nghttp2 has answered GOAWAY and reads no more) is closed, not
    // left open until the idle timeout.
    const settingsDeadline = setTimeout(() => { if (!session.destroyed) session.destroy() }, o.tls!.cfg.handshakeTimeoutMs)
    settingsDeadline.unref()
    session.once('remoteSettings', () => clearTimeout(settingsDeadline))
    session.once('close', () => clearTimeout(settingsDeadline))
  })
  setInterval(() => { warned = 0 }, 60_000).unref()
  return {
    server: s,
    scheme: 'https',
    setTls: (m) => s.setSecureContext(secureOptions(m)),
    drain: () => { for (const ss of sessions) if (!ss.closed) ss.close() },
    closeAll: () => {
      for (const ss of sessions) ss.destroy()
      for (const so of sockets) so.destroy()
    },
    onStream: (h) => { hook = h }
  }
}
