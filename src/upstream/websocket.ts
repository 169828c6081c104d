// WebSocket (and only WebSocket) upgrades pass through as bytes: Sluice opens a TCP or TLS
// connection to the upstream, replays the handshake with forwarding headers, and pipes both
// ways. No frame parsing, so any subprotocol works.
//
// Two kinds of client side share one tunnel (openTunnel):
// - HTTP/1.1 Upgrade (RFC 6455): the client's socket; the upstream's 101 is relayed as bytes.
// - HTTP/2 extended CONNECT (RFC 8441): a stream with `:method: CONNECT` and
//   `:protocol: websocket`, on an h2 listener that advertises SETTINGS_ENABLE_CONNECT_PROTOCOL.
//   The upstream still gets an HTTP/1.1 Upgrade (GET, with a Sec-WebSocket-Key Sluice makes,
//   since an h2 client sends none); its 101 becomes `:status: 200` with the chosen subprotocol
//   and extensions, and the WebSocket frames travel in the stream's DATA frames, unchanged.
import { createHash, randomBytes } from 'node:crypto'
import { connect as netConnect, isIP, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import type { IncomingMessage, IncomingHttpHeaders } from 'node:http'
import { constants as h2c, type ServerHttp2Stream, type OutgoingHttpHeaders } from 'node:http2'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { Snapshot, RouteEntry } from '../config/snapshot.js'
import { applyForwarding, HOST_VALUE, hostLines, resolveClientIp, schemeOf } from '../forwarding.js'
import { SluiceError, rawError, errorBody, type ErrorCode } from '../errors.js'
import { mapUpstreamError } from './errors.js'
import { assignRequestId } from '../request-id.js'
import { normalisePath } from '../stages/path.js'
import { upstreamRequestHeaders, isHopByHop } from './headers.js'
import { rewritePath, editRequestHeaders } from './rewrite.js'
import type { TargetRegistry } from './targets.js'
import type { ClientLimitProvider } from '../stages/client-limit.js'
import { hashKeyOf } from './balancer.js'
import { Tracing } from '../observability/tracing.js'
import type { Span } from '@opentelemetry/api'

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

export type TunnelProto = 'http/1.1' | 'h2'

/** How one upgrade request ended: `opened` (a tunnel, now closed), `refused` by the upstream (its answer relayed), or `failed` (Sluice answered an error). */
export type TunnelResult = 'opened' | 'refused' | 'failed'

/** One upgrade request, reported once when it is over (metrics and the access line: gateway.ts). */
export interface TunnelOutcome {
  proto: TunnelProto
  result: TunnelResult
  /** The matched route, undefined when none matched. */
  route: string | undefined
  upstream: string | undefined
  /** The client's method: GET on HTTP/1.1, CONNECT on h2. */
  method: string
  url: string
  /** What the client got: 101 (HTTP/1.1) or 200 (h2) for a tunnel, the upstream's status for a refusal, Sluice's for an error. */
  status: number
  /** Bytes from the upstream to the client after the handshake (a tunnel, a refusal's body); 0 for Sluice's errors. */
  bytes: number
  /** From the upgrade request to the end of the tunnel (or of the answer). */
  ms: number
  reqId: string
  ip: string
  /** Sluice's error code, when it answered one. */
  err: string | undefined
}

/** The gateway's hooks: a tunnel opened (the open-tunnel gauge), and each upgrade request's outcome. */
export interface TunnelEvents {
  opened (proto: TunnelProto): void
  done (o: TunnelOutcome): void
}

/** What tunnels share with requests: the config, the balancer, the per-client limits, the log, and the gateway's hooks. */
export interface TunnelDeps {
  current: () => Snapshot
  targets: TargetRegistry
  /** The per-client limiter (routes[].rateLimit): an upgrade request takes a token like any request. */
  clientLimits: () => ClientLimitProvider | null
  log: Logger
  events: TunnelEvents
  /** OpenTelemetry: an upgrade request gets a SERVER span and its handshake a CLIENT span, as any request. */
  tracing?: Tracing
  /** True once the gateway drains (SIGTERM): a new upgrade gets 503, as a new request does. */
  draining: boolean
}
/** An upstream's handshake answer larger than this is not a handshake. */
const MAX_HEAD = 65536
/**
 * A tunnel has no idle timeout (a quiet WebSocket is a healthy one), so a peer that vanished
 * without closing (a NAT that forgot the flow, a host that lost power) is found by TCP
 * keep-alive probes instead, starting after this much silence, on the upstream connection and
 * on an HTTP/1.1 client's.
 */
const TUNNEL_KEEPALIVE_MS = 60_000

/** The client side of a tunnel: what differs between an HTTP/1.1 socket and an HTTP/2 stream. */
interface TunnelClient {
  /** The client's protocol, for the log lines. */
  readonly proto: TunnelProto
  /** The bytes of the tunnel once it is open. */
  readonly duplex: Duplex
  /** Headers to add to (or replace in) the upstream handshake. */
  readonly extraHeaders: Record<string, string> | null
  /** Bytes the client sent after its handshake (HTTP/1.1's `head`): they go upstream once it agrees. */
  readonly early: Buffer | null
  /** Whether anything was sent to the client yet (then an error can only close it). */
  started (): boolean
  /** Answer with a Sluice error (its status, body and extra headers); no tunnel. */
  reject (e: SluiceError): void
  /** The upstream agreed (101): `head` is its response head as text, `rest` the bytes after it. Not null: the handshake is not valid for this client (Sluice answers that error). */
  accept (head: string, headBytes: Buffer, rest: Buffer): { code: ErrorCode, message: string } | null
  /** The upstream refused with `status`: relay its answer (`buf` holds the head and what followed), then close. Not null: the answer cannot be relayed (Sluice answers that error). */
  refuse (head: string, status: number, buf: Buffer, headEnd: number, upstream: Socket, closeBoth: () => void): { code: ErrorCode, message: string } | null
}

/** What the tunnel needs to know about the client's request, whatever its protocol. */
interface TunnelRequest {
  /** performance.now() when the request arrived. */
  t0: number
  reqId: string
  /** The client's own method (GET, or CONNECT on h2), for the access line. */
  clientMethod: string
  /** Set when the request itself is not valid (a bad Host, a CONNECT without :path): Sluice answers that error. */
  invalid: { code: ErrorCode, message: string } | null
  /** The method routed and sent upstream: the client's on HTTP/1.1 (RFC 6455 says GET), GET for an extended CONNECT. */
  method: string
  /** Request target (path and query) as the client sent it. */
  url: string
  /** Lower-case headers, `host` set; pseudo-headers are never forwarded. */
  headers: IncomingHttpHeaders
  /** The client's connection (X-Forwarded-Proto: is it TLS). */
  socket: object
  remoteAddress: string | undefined
  /** The upgrade asked for (lower case): the Upgrade header, or HTTP/2's :protocol. */
  protocol: string
}

/**
 * One upgrade request, either protocol: pick the route (and take a per-client token), pick a
 * target, connect, replay the handshake, and pipe both ways once the upstream agrees. Its
 * outcome is reported once (finish), when it is over.
 */
class Tunnel {
  private routeName: string | undefined
  private upstreamName: string | undefined
  private result: TunnelResult = 'failed'
  private status = 499
  private err: string | undefined = 'SLUICE_ERR_CLIENT_CLOSED'
  private headBytes = 0
  private upstream: Socket | null = null
  private reported = false
  /** The SERVER span (tracing on and sampled), ended with the outcome; the handshake's CLIENT span. */
  private span: Span | null = null
  private attempt: Span | null = null
  /** The client's address (the peer, or behind trusted proxies), for the limiter and the access line. */
  private readonly ip: string

  constructor (private readonly deps: TunnelDeps, private readonly snap: Snapshot, private readonly req: TunnelRequest, private readonly client: TunnelClient) {
    this.ip = resolveClientIp(req.headers, req.remoteAddress, snap.trust)
  }

  start (): void {
    const { req, snap } = this
    const tracing = this.deps.tracing
    if (tracing?.on === true) this.span = tracing.server(req.headers, req.clientMethod, performance.timeOrigin + req.t0)
    if (req.invalid !== null) return this.fail(req.invalid.code, req.invalid.message)
    // A tunnel opened now would be cut at the end of the grace period.
    if (this.deps.draining) return this.fail('SLUICE_ERR_SHUTTING_DOWN')
    let url = req.url
    const q = url.indexOf('?')
    let path = q === -1 ? url : url.slice(0, q)
    try {
      const norm = normalisePath(path, snap.config.server.allowEncodedSlashes)
      if (norm !== path) { url = q === -1 ? norm : norm + url.slice(q); path = norm }
    } catch {
      return this.fail('SLUICE_ERR_BAD_PATH')
    }
    const route = snap.router.match(req.headers.host, req.method, path)
    if (route === null) return this.fail('SLUICE_ERR_NO_ROUTE')
    this.routeName = route.name
    if (req.protocol !== 'websocket' || !route.websocket) return this.fail('SLUICE_ERR_UPGRADE_REFUSED', `Route "${route.name}" does not accept an upgrade to ${JSON.stringify(req.protocol)}`)
    this.upstreamName = route.upstream.name
    // The route's per-client limit, as for any request: a handshake flood is limited too.
    const limits = route.rateLimit === null ? null : this.deps.clientLimits()
    const verdict = limits === null ? null : limits.check(route, this.ip, req.headers)
    if (verdict instanceof Promise) {
      verdict.then((e) => { if (e !== null) this.failWith(e); else this.connect(route, url) }, () => this.fail('SLUICE_ERR_INTERNAL'))
      return
    }
    if (verdict !== null) return this.failWith(verdict)
    this.connect(route, url)
  }

  private finish (): void {
    if (this.reported) return
    this.reported = true
    if (this.attempt !== null) { Tracing.endAttempt(this.attempt, 0, this.err); this.attempt = null }
    if (this.span !== null) Tracing.finish(this.span, { route: this.routeName ?? 'none', upstream: this.upstreamName, status: this.status, cache: 'none', retries: 0, method: this.req.clientMethod, url: this.req.url, error: this.err })
    const u = this.upstream
    this.deps.events.done({
      proto: this.client.proto,
      result: this.result,
      route: this.routeName,
      upstream: this.upstreamName,
      method: this.req.clientMethod,
      url: this.req.url,
      status: this.status,
      bytes: u === null || this.result === 'failed' ? 0 : Math.max(0, u.bytesRead - this.headBytes),
      ms: performance.now() - this.req.t0,
      reqId: this.req.reqId,
      ip: this.ip,
      err: this.err
    })
  }

  /** Sluice answers an error: no tunnel. */
  private failWith (e: SluiceError): void {
    if (this.reported) return
    this.result = 'failed'; this.status = e.status; this.err = e.code
    this.client.reject(e)
    this.finish()
  }

  private fail (code: ErrorCode, message?: string): void { this.failWith(new SluiceError(code, message)) }

  private connect (route: RouteEntry, url: string): void {
    const { req, client, snap } = this
    const { log, events } = this.deps
    const socket = client.duplex
    // The client left while its limit was checked.
    if (socket.destroyed) { this.finish(); return }
    const up = route.upstream
    // The same balancer as requests (hash: on the client address or header; a tunnel is one long
    // request, so it is not failed over: a refused connect answers 502).
    const set = this.deps.targets.get(up.name)
    const picked = set.pick(Date.now(), up.balance === 'hash' ? hashKeyOf(up.hashKey, req.headers, req.remoteAddress ?? '') : null, null)
    if (picked === null) return this.fail('SLUICE_ERR_NO_HEALTHY_TARGET', `upstream "${up.name}": no target is in rotation`)
    const te = picked.entry
    const target = new URL(te.origin)
    const secure = target.protocol === 'https:'
    const port = Number(target.port || (secure ? 443 : 80))
    // The upstream's TLS options as compiled (CA bytes read at load), the same object its pool uses.
    // SNI defaults to the URL host, except an IP address (RFC 6066); the certificate is checked against the host either way.
    const host = target.hostname.replace(/^\[|\]$/g, '')
    const servername = up.tls.servername ?? (isIP(host) === 0 ? host : undefined)
    const upstream: Socket = secure
      ? tlsConnect({ ...up.tls, host, port, ...(servername !== undefined ? { servername } : {}) })
      : netConnect({ host, port })
    this.upstream = upstream
    upstream.setKeepAlive(true, TUNNEL_KEEPALIVE_MS)
    // WebSocket never relies on TCP half-close: when either side ends or closes, close both
    // (HTTP server sockets allow half-open connections, which would otherwise linger).
    const closeBoth = (): void => { socket.destroy(); upstream.destroy(); this.finish() }
    const timer = setTimeout(() => { upstream.destroy(); this.fail('SLUICE_ERR_UPSTREAM_TIMEOUT', `upstream "${up.name}": connect timeout`) }, up.config.connectTimeoutMs)
    upstream.once(secure ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer)
      // The same header rules as any request (hop-by-hop and Connection-named headers dropped,
      // forwarding headers replaced from untrusted peers), then the two upgrade headers.
      const headers = upstreamRequestHeaders(req.headers, up.config.preserveHost ? (req.headers.host ?? te.hostHeader) : te.hostHeader)
      if (route.headerEdits !== null) editRequestHeaders(headers, route.headerEdits)
      applyForwarding(headers, req.remoteAddress, snap.trust, req.headers.host, schemeOf(req.socket))
      headers.connection = 'Upgrade'
      headers.upgrade = 'websocket'
      if (client.extraHeaders !== null) Object.assign(headers, client.extraHeaders)
      // The handshake is the tunnel's one upstream attempt: its span's context goes upstream as traceparent.
      if (this.span !== null && this.deps.tracing !== undefined) this.attempt = this.deps.tracing.attempt(this.span, up.name, picked.id, 1, headers)
      const lines = [`${req.method} ${te.basePath}${route.rewrite === null ? url : rewritePath(url, route.rewrite)} HTTP/1.1`]
      for (const k in headers) {
        const v = headers[k]
        for (const one of Array.isArray(v) ? v : [v]) lines.push(`${k}: ${one}`)
      }
      upstream.write(lines.join('\r\n') + '\r\n\r\n')
      // Nothing more from the client reaches the upstream until it has agreed to switch (101):
      // a refused handshake leaves a plain HTTP connection, and relaying the client's later bytes
      // would let them reach the upstream as requests the gateway never routed (smuggling).
      let buf: Buffer = Buffer.alloc(0)
      const onHead = (d: Buffer): void => {
        buf = buf.length === 0 ? d : Buffer.concat([buf, d])
        const end = buf.indexOf('\r\n\r\n')
        if (end === -1) { if (buf.length > MAX_HEAD) closeBoth(); return }
        upstream.off('data', onHead)
        const text = buf.toString('latin1', 0, end)
        this.headBytes = end + 4
        const st = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0)
        if (this.attempt !== null) { Tracing.endAttempt(this.attempt, st); this.attempt = null }
        if (/^HTTP\/1\.1 101 /.test(text)) {
          const refusal = client.accept(text, buf.subarray(0, end + 4), buf.subarray(end + 4))
          if (refusal !== null) { this.fail(refusal.code, refusal.message); upstream.destroy(); return }
          this.result = 'opened'; this.status = client.proto === 'h2' ? 200 : 101; this.err = undefined
          events.opened(client.proto)
          if (client.early !== null && client.early.length > 0) upstream.write(client.early)
          upstream.pipe(socket)
          socket.pipe(upstream)
          log.debug({ route: route.name, upstream: up.name, proto: client.proto }, 'websocket tunnel open')
          return
        }
        // No status line, or an interim 1xx other than 101: not an answer to the handshake.
        if (st < 200) { this.fail('SLUICE_ERR_UPSTREAM_PROTOCOL', `The upstream answered the WebSocket handshake with ${st === 0 ? 'no status line' : st}`); closeBoth(); return }
        this.result = 'refused'; this.status = st; this.err = undefined
        const bad = client.refuse(text, st, buf, end, upstream, closeBoth)
        if (bad !== null) { this.fail(bad.code, bad.message); closeBoth() }
      }
      upstream.on('data', onHead)
    })
    upstream.on('error', (e) => {
      clearTimeout(timer)
      log.warn({ route: route.name, upstream: up.name, proto: client.proto, err: e.message }, 'websocket upstream error')
      // The same codes as an ordinary request's: TLS, DNS, refused, reset (src/upstream/errors.ts).
      if (!client.started()) this.failWith(mapUpstreamError(e, up.name, false))
      else socket.destroy()
    })
    socket.on('end', closeBoth)
    socket.on('close', closeBoth)
    upstream.on('end', closeBoth)
    upstream.on('close', closeBoth)
  }
}

/**
 * A refusal with a Content-Length: `first` and what the upstream sends next, up to `total`
 * bytes, go to the client; then both sides close (the upstream connection is not reused).
 */
function relayBounded (upstream: Socket, first: Buffer, total: number, out: Duplex, closeBoth: () => void): void {
  let got = first
  const relay = (chunk: Buffer): void => {
    got = chunk === got ? got : Buffer.concat([got, chunk])
    if (got.length < total) return
    upstream.off('data', relay)
    out.once('finish', closeBoth)
    out.end(got.subarray(0, total))
  }
  upstream.on('data', relay)
  relay(got)
}

/** HTTP/1.1 Upgrade: the server's 'upgrade' event. */
export function handleUpgrade (deps: TunnelDeps) {
  return function onUpgrade (req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const t0 = performance.now()
    socket.on('error', () => {})
    const snap = deps.current()
    // The tunnel's request carries the request ID upstream too (src/request-id.ts).
    const reqId = assignRequestId(req, snap.requestId)
    // RFC 9112 §3.2, as for any request (gateway.ts): one Host line on HTTP/1.1.
    const hosts = hostLines(req.rawHeaders)
    const badHost = hosts > 1 || (hosts === 0 && req.httpVersion === '1.1') || (hosts === 1 && !HOST_VALUE.test(req.headers.host as string))
    new Tunnel(deps, snap, {
      t0,
      reqId,
      clientMethod: req.method ?? 'GET',
      invalid: badHost ? { code: 'SLUICE_ERR_BAD_REQUEST', message: 'An HTTP/1.1 request needs exactly one valid Host header' } : null,
      method: req.method ?? 'GET',
      url: req.url ?? '/',
      headers: req.headers,
      socket: req.socket,
      remoteAddress: req.socket.remoteAddress,
      protocol: String(req.headers.upgrade ?? '').toLowerCase()
    }, {
      proto: 'http/1.1',
      duplex: socket,
      extraHeaders: null,
      early: head,
      started: () => (socket as Socket).bytesWritten > 0,
      reject: (e) => { socket.end(rawError(e)) },
      accept (_head, headBytes, rest) {
        socket.write(rest.length === 0 ? headBytes : Buffer.concat([headBytes, rest]))
        ;(socket as Socket).setKeepAlive?.(true, TUNNEL_KEEPALIVE_MS)
        return null
      },
      refuse (text, _status, buf, end, upstream, closeBoth) {
        // Relay the upstream's answer (its Content-Length, or until it closes), then close.
        const cl = /\r\ncontent-length:[ \t]*(\d+)/i.exec(text)
        if (cl === null) { socket.write(buf); upstream.pipe(socket); return null }
        relayBounded(upstream, buf, end + 4 + Number(cl[1]), socket, closeBoth)
        return null
      }
    }).start()
  }
}

/** The header fields of a response head (after the status line), lower-case names. */
function headFields (head: string): Array<[string, string]> {
  const out: Array<[string, string]> = []
  const lines = head.split('\r\n')
  for (let i = 1; i < lines.length; i++) {
    const c = lines[i].indexOf(':')
    if (c > 0) out.push([lines[i].slice(0, c).trim().toLowerCase(), lines[i].slice(c + 1).trim()])
  }
  return out
}

/** Response fields the upstream sent that may go on to an HTTP/2 client: not hop-by-hop, not the handshake's own, not Content-Length. */
function h2ResponseHeaders (fields: Array<[string, string]>): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {}
  for (const [k, v] of fields) {
    if (isHopByHop(k) || k === 'content-length' || k === 'sec-websocket-accept') continue
    const prev = out[k]
    out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [String(prev), v]
  }
  return out
}

/**
 * HTTP/2 extended CONNECT (RFC 8441): called by the h2 stream hook for a stream whose
 * `:method` is CONNECT and that carries `:protocol`. `headers.host` is set from `:authority`.
 */
export function handleH2Connect (deps: TunnelDeps, stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
  const t0 = performance.now()
  const snap = deps.current()
  stream.on('error', () => {})
  const id = assignRequestId({ headers }, snap.requestId)
  const idHeader = snap.requestId.header
  const reject = (e: SluiceError): void => {
    if (stream.destroyed || stream.closed) return
    if (stream.headersSent) { stream.close(h2c.NGHTTP2_CANCEL); return }
    const body = errorBody(e, { requestId: id })
    stream.respond({ ':status': e.status, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), [idHeader]: id, ...e.headers })
    stream.end(body)
  }
  const p = headers[':path']
  const path = typeof p === 'string' ? p : ''
  // RFC 8441 §4: an extended CONNECT carries :scheme and :path (a plain CONNECT carries neither).
  const invalid = path === '' || headers[':scheme'] === undefined
    ? { code: 'SLUICE_ERR_BAD_REQUEST' as const, message: 'An extended CONNECT needs :scheme and :path (RFC 8441)' }
    : headers.host === undefined || !HOST_VALUE.test(headers.host) ? { code: 'SLUICE_ERR_BAD_REQUEST' as const, message: 'The request needs a valid :authority' } : null
  /**
   * The upstream's answer as this stream's response head. Node refuses fields HTTP/2 cannot
   * carry (a name with a space, say): then Sluice answers 502 instead, and the process never
   * sees the throw.
   */
  const respond = (status: number, fields: Array<[string, string]>, contentLength: string | null): { code: ErrorCode, message: string } | null => {
    try {
      stream.respond({ ...h2ResponseHeaders(fields), ':status': status, [idHeader]: id, ...(contentLength !== null ? { 'content-length': contentLength } : {}) })
      return null
    } catch (e) {
      return { code: 'SLUICE_ERR_UPSTREAM_PROTOCOL', message: `The upstream's answer to the WebSocket handshake cannot be sent over HTTP/2: ${(e as Error).message}` }
    }
  }
  const key = randomBytes(16).toString('base64')
  const session = stream.session
  new Tunnel(deps, snap, {
    t0,
    reqId: id,
    clientMethod: 'CONNECT',
    invalid,
    method: 'GET',
    url: path,
    headers,
    socket: session?.socket ?? {},
    remoteAddress: session?.socket?.remoteAddress,
    protocol: String(headers[':protocol']).toLowerCase()
  }, {
    proto: 'h2',
    duplex: stream,
    early: null,
    // The upstream speaks RFC 6455: it needs a key and a version (an h2 client sends the version).
    extraHeaders: { 'sec-websocket-key': key, 'sec-websocket-version': typeof headers['sec-websocket-version'] === 'string' ? headers['sec-websocket-version'] : '13' },
    started: () => stream.headersSent,
    reject,
    accept (head, _headBytes, rest) {
      const fields = headFields(head)
      const accept = fields.find(([k]) => k === 'sec-websocket-accept')?.[1]
      if (accept !== createHash('sha1').update(key + WS_GUID).digest('base64')) {
        deps.log.warn({ path }, 'websocket upstream answered 101 without the right Sec-WebSocket-Accept')
        return { code: 'SLUICE_ERR_UPSTREAM_PROTOCOL', message: 'The upstream\'s WebSocket handshake is not valid (Sec-WebSocket-Accept)' }
      }
      // RFC 8441 §5: success is a 2xx; the subprotocol and extensions the upstream chose go with it.
      const bad = respond(200, fields, null)
      if (bad !== null) return bad
      if (rest.length > 0) stream.write(rest)
      return null
    },
    refuse (text, status, buf, end, upstream, closeBoth) {
      // Relay the upstream's answer (status, fields, body: its Content-Length, or until it closes).
      const fields = headFields(text)
      const cl = fields.find(([k]) => k === 'content-length')?.[1]
      const bad = respond(status, fields, cl ?? null)
      if (bad !== null) return bad
      const body = buf.subarray(end + 4)
      if (status === 204 || status === 304) { stream.end(); closeBoth(); return null }
      if (cl === undefined) {
        if (body.length > 0) stream.write(body)
        upstream.pipe(stream)
        return null
      }
      relayBounded(upstream, body, Number(cl), stream, closeBoth)
      return null
    }
  }).start()
}
