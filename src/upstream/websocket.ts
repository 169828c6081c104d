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
import { applyForwarding, HOST_VALUE, hostLines, lowerHost, resolveClientIp, schemeOf } from '../forwarding.js'
import { SluiceError, rawError, errorBody, type ErrorCode } from '../errors.js'
import { mapUpstreamError } from './errors.js'
import { assignRequestId } from '../request-id.js'
import { normalisePath, requestLimitError, headerLineCount } from '../stages/path.js'
import { upstreamRequestHeaders, isHopByHop, connectionTokens } from './headers.js'
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
 * When the client ends its half of a tunnel, the upstream is told (its half is ended too) and
 * has this long to send what it still has (the answer to a Close frame) and close; then both
 * are closed. When the upstream ends first, both close once the client has everything it sent.
 */
const LINGER_MS = 2000
/** A refusal relayed without a length (chunked, or until the upstream closes) is cut past this many body bytes. */
const MAX_REFUSAL_BODY = 1 << 20
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
  /** The upstream agreed (101): `head` is its response head as text (Latin-1, without the blank line), `rest` the bytes after it. Not null: the handshake is not valid for this client (Sluice answers that error). */
  accept (head: string, rest: Buffer): { code: ErrorCode, message: string } | null
  /**
   * The upstream refused with `status`: send the client that answer's head (`fields` parsed,
   * `headBytes` as received; `length`: its Content-Length, null when it has none). The body
   * follows (Tunnel.relayBody). Not null: the answer cannot be relayed (Sluice answers that error).
   */
  refuse (fields: Array<[string, string]>, status: number, headBytes: Buffer, length: number | null): { code: ErrorCode, message: string } | null
  /** Whether a refusal's body goes to the client as received (HTTP/1.1: its chunked framing too) or decoded (HTTP/2 has its own framing). */
  readonly rawBody: boolean
  /** Close the client side: `abort` at once (a reset, an error), else after what was written to it has gone out. */
  close (abort: boolean): void
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
  /** Header lines the client sent (server.maxHeadersCount applies, as to any request). */
  headerLines: number
}

/** The Upgrade header (or :protocol) names WebSocket, alone or in a list (`websocket, foo/1`). */
const WEBSOCKET_TOKEN = /(^|[\s,])websocket([\s,/]|$)/

/** Fields that frame what follows a relayed head: the upstream's Connection naming them does not remove them. */
const FRAMING = new Set(['upgrade', 'transfer-encoding', 'content-length'])

/**
 * The upstream's 101 or refusal head for an HTTP/1.1 client (`head`: its text, Latin-1, without
 * the blank line). Its fields go as the upstream wrote them, less the hop-by-hop ones and those
 * its Connection names (RFC 9110 §7.6.1), as on any response. A 101 keeps its Upgrade and says
 * `Connection: Upgrade`; a refusal keeps its Transfer-Encoding (its body is relayed with its
 * chunked framing) and says `Connection: close`: the connection closes after it (a 426 keeps
 * its Upgrade too, which RFC 9110 §15.5.22 requires of it, and says `Connection: Upgrade, close`).
 * The request ID field is added (HTTP/1.1 clients get the ID on every answer) unless the
 * upstream sent one.
 */
function relayHead (head: string, switched: boolean, rid: { header: string }, id: string): Buffer {
  const lines = head.split('\r\n')
  const upgrade = switched || /^HTTP\/1\.[01] 426\b/.test(lines[0])
  const named: string[] = []
  for (let i = 1; i < lines.length; i++) {
    const c = lines[i].indexOf(':')
    if (c > 0 && lines[i].slice(0, c).trim().toLowerCase() === 'connection') named.push(...connectionTokens(lines[i].slice(c + 1)))
  }
  const out = [lines[0]]
  const idName = rid.header.toLowerCase()
  let hasId = false
  let keep = true
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]
    // A folded continuation line (obs-fold) goes with its field.
    if (line.startsWith(' ') || line.startsWith('\t')) { if (keep) out.push(line); continue }
    const c = line.indexOf(':')
    const name = (c > 0 ? line.slice(0, c) : line).trim().toLowerCase()
    keep = FRAMING.has(name)
      ? name !== 'upgrade' || upgrade
      : !isHopByHop(name) && !named.includes(name)
    if (!keep) continue
    if (name === idName) hasId = true
    out.push(line)
  }
  out.push(switched ? 'Connection: Upgrade' : upgrade ? 'Connection: Upgrade, close' : 'Connection: close')
  if (!hasId) out.push(`${rid.header}: ${id}`)
  return Buffer.from(out.join('\r\n') + '\r\n\r\n', 'latin1')
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
    // The request limits every request has (src/pipeline.ts).
    const over = requestLimitError(req.url, req.headerLines, snap.config.server)
    if (over !== null) return this.failWith(over)
    let url = req.url
    const q = url.indexOf('?')
    let path = q === -1 ? url : url.slice(0, q)
    try {
      const norm = normalisePath(path, snap.config.server.allowEncodedSlashes, snap.config.server.mergeSlashes)
      if (norm !== path) { url = q === -1 ? norm : norm + url.slice(q); path = norm }
    } catch {
      return this.fail('SLUICE_ERR_BAD_PATH')
    }
    const route = snap.router.match(req.headers.host, req.method, path)
    if (route === null) return this.fail('SLUICE_ERR_NO_ROUTE')
    this.routeName = route.name
    if (!WEBSOCKET_TOKEN.test(req.protocol) || !route.websocket) return this.fail('SLUICE_ERR_UPGRADE_REFUSED', `Route "${route.name}" does not accept an upgrade to ${JSON.stringify(req.protocol)}`)
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
    // A handshake cut while the gateway drains was cut by the end of the grace period, as the
    // pipeline reads a stream cut then (src/pipeline.ts sendResponse).
    if (this.result === 'failed' && this.err === 'SLUICE_ERR_CLIENT_CLOSED' && this.deps.draining) { this.status = 503; this.err = 'SLUICE_ERR_SHUTTING_DOWN' }
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
    let set: ReturnType<TargetRegistry['get']>
    try {
      set = this.deps.targets.get(up.name) // the pools closed, or a reload removed the upstream, during the limit check
    } catch (e) {
      return this.failWith(e as SluiceError)
    }
    const picked = set.pick(Date.now(), up.balance === 'hash' ? hashKeyOf(up.hashKey, req.headers, this.ip) : null, null)
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
    // How the two sides close depends on the phase:
    // - 'handshake': either side ending or closing closes both at once.
    // - 'failed' (Sluice answered an error) and 'relay' (a refusal is being relayed): the
    //   client is closed once it has been sent the whole answer; the client leaving closes both.
    // - 'open' (a tunnel): a side that ends its half has what it sent written to the other,
    //   which is then ended too (the pipes do that). Both close once the client has all the
    //   upstream sent, or LINGER_MS after the client ended if the upstream does not close.
    //   A side that closes without ending (a reset, an error) closes the other at once.
    let phase: 'handshake' | 'failed' | 'relay' | 'open' = 'handshake'
    let closed = false
    let linger: NodeJS.Timeout | null = null
    const closeBoth = (abort = true): void => {
      if (closed) return
      closed = true
      if (linger !== null) clearTimeout(linger)
      clearTimeout(timer)
      upstream.destroy()
      client.close(abort)
      this.finish()
    }
    /** The client has been sent its whole answer (an error or a refusal): close both once it has it. */
    const closeWhenSent = (): void => {
      upstream.destroy()
      if (socket.writableFinished) closeBoth(false)
      else socket.once('finish', () => closeBoth(false))
    }
    const settle = (): void => {
      if (closed) return
      const clGone = socket.destroyed || socket.closed
      if (phase === 'handshake') {
        // The upstream hung up without answering: the client gets a 502 (if the connection to it was made).
        if (!clGone && !socket.readableEnded && (upstream.readableEnded || upstream.destroyed) && !client.started() && upstream.remoteAddress !== undefined) failed('SLUICE_ERR_UPSTREAM_RESET', `upstream "${up.name}": the connection closed before the WebSocket handshake was answered`)
        else closeBoth()
        return
      }
      if (phase === 'failed' || phase === 'relay') { if (clGone) closeBoth(); return }
      const upGone = upstream.destroyed || upstream.closed
      // A side that closed without ending its half: a reset or an error.
      if ((upGone && !upstream.readableEnded) || (clGone && !socket.readableEnded)) { closeBoth(); return }
      // The upstream is done and the client has everything it sent.
      if ((upstream.readableEnded && socket.writableFinished) || (upGone && clGone)) { closeBoth(false); return }
      // The client is done and the upstream has been told: it gets LINGER_MS to answer and close.
      if (socket.readableEnded && upstream.writableFinished && linger === null) {
        linger = setTimeout(() => closeBoth(false), LINGER_MS)
        linger.unref()
      }
    }
    const failed = (code: ErrorCode | SluiceError, message?: string): void => {
      if (closed || phase === 'failed') return
      phase = 'failed'
      clearTimeout(timer)
      this.failWith(code instanceof SluiceError ? code : new SluiceError(code, message))
      closeWhenSent()
    }
    let timer = setTimeout(() => failed('SLUICE_ERR_UPSTREAM_TIMEOUT', `upstream "${up.name}": connect timeout`), up.config.connectTimeoutMs)
    upstream.once(secure ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer)
      // The handshake's answer has the upstream's response deadline, as any request's headers do.
      timer = setTimeout(() => {
        upstream.off('data', onHead)
        failed('SLUICE_ERR_UPSTREAM_TIMEOUT', `upstream "${up.name}": no answer to the WebSocket handshake within ${up.config.timeoutMs} ms`)
      }, up.config.timeoutMs)
      // The same header rules as any request (hop-by-hop and Connection-named headers dropped,
      // forwarding headers replaced from untrusted peers), then the two upgrade headers.
      const headers = upstreamRequestHeaders(req.headers, up.config.preserveHost && req.headers.host !== undefined ? lowerHost(req.headers.host) : te.hostHeader, snap.requestId.name, client.proto === 'h2' ? '2.0' : '1.1')
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
      // Latin-1: header bytes Node read as Latin-1 (obs-text) go upstream as they came.
      upstream.write(lines.join('\r\n') + '\r\n\r\n', 'latin1')
      // Nothing more from the client reaches the upstream until it has agreed to switch (101):
      // a refused handshake leaves a plain HTTP connection, and relaying the client's later bytes
      // would let them reach the upstream as requests the gateway never routed (smuggling).
      let buf: Buffer = Buffer.alloc(0)
      const onHead = (d: Buffer): void => {
        buf = buf.length === 0 ? d : Buffer.concat([buf, d])
        const end = buf.indexOf('\r\n\r\n')
        if (end === -1) {
          if (buf.length > MAX_HEAD) { upstream.off('data', onHead); failed('SLUICE_ERR_UPSTREAM_PROTOCOL', `The upstream's answer to the WebSocket handshake has a head over ${MAX_HEAD} bytes`) }
          return
        }
        clearTimeout(timer)
        upstream.off('data', onHead)
        const text = buf.toString('latin1', 0, end)
        this.headBytes = end + 4
        const st = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0)
        if (this.attempt !== null) { Tracing.endAttempt(this.attempt, st); this.attempt = null }
        // 101 with or without a reason phrase (RFC 9112 §4: it may be empty, and the space too).
        if (st === 101 && text.startsWith('HTTP/1.1 ')) {
          const refusal = client.accept(text, buf.subarray(end + 4))
          if (refusal !== null) { failed(refusal.code, refusal.message); return }
          this.result = 'opened'; this.status = client.proto === 'h2' ? 200 : 101; this.err = undefined
          phase = 'open'
          events.opened(client.proto)
          if (client.early !== null && client.early.length > 0) upstream.write(client.early)
          upstream.pipe(socket)
          socket.pipe(upstream)
          log.debug({ route: route.name, upstream: up.name, proto: client.proto }, 'websocket tunnel open')
          return
        }
        // No status line, or an interim 1xx other than 101: not an answer to the handshake.
        if (st < 200) { failed('SLUICE_ERR_UPSTREAM_PROTOCOL', `The upstream answered the WebSocket handshake with ${st === 0 ? 'no status line' : st}`); return }
        // A refusal: its head, then its body (by its Content-Length, its chunked framing, or
        // until the upstream closes), then both sides close.
        const fields = headFields(text)
        const cls = fields.filter(([k]) => k === 'content-length').map(([, v]) => v)
        const chunked = fields.some(([k, v]) => k === 'transfer-encoding' && /chunked/i.test(v))
        if (cls.length > 1 || (cls.length === 1 && !/^\d{1,15}$/.test(cls[0])) || (chunked && cls.length > 0)) { failed('SLUICE_ERR_UPSTREAM_PROTOCOL', 'The upstream\'s answer to the WebSocket handshake has an invalid length'); return }
        const noBody = st === 204 || st === 304
        const length = noBody ? 0 : cls.length === 1 ? Number(cls[0]) : null
        this.result = 'refused'; this.status = st; this.err = undefined
        phase = 'relay'
        const bad = client.refuse(fields, st, buf.subarray(0, end + 4), length)
        if (bad !== null) { failed(bad.code, bad.message); return }
        relayBody(upstream, buf.subarray(end + 4), length !== null ? length : chunked ? 'chunked' : 'close', socket, client.rawBody, closeWhenSent, () => closeBoth())
      }
      upstream.on('data', onHead)
    })
    upstream.on('error', (e) => {
      clearTimeout(timer)
      log.warn({ reqId: req.reqId, route: route.name, upstream: up.name, proto: client.proto, err: e.message }, 'websocket upstream error')
      // The same codes as an ordinary request's: TLS, DNS, refused, reset (src/upstream/errors.ts).
      if (!client.started() && phase === 'handshake') failed(mapUpstreamError(e, up.name, false))
      else closeBoth()
    })
    for (const d of [socket, upstream]) { d.on('end', settle); d.on('close', settle); d.on('finish', settle) }
  }
}

/**
 * The framing of a chunked body (RFC 9112 §7.1), followed to find where it ends; `feed` returns
 * how many of the bytes belong to the body and puts the decoded data in `out`. Throws on framing
 * that is not valid.
 */
class ChunkedFraming {
  private state: 'size' | 'data' | 'crlf' | 'trailer' | 'done' = 'size'
  private line = ''
  private left = 0
  get done (): boolean { return this.state === 'done' }

  feed (b: Buffer, out: Buffer[]): number {
    let i = 0
    while (i < b.length && this.state !== 'done') {
      if (this.state === 'data') {
        const n = Math.min(this.left, b.length - i)
        out.push(b.subarray(i, i + n))
        i += n
        this.left -= n
        if (this.left === 0) this.state = 'crlf'
        continue
      }
      const c = b[i++]
      if (c !== 0x0a) {
        if (this.line.length >= 4096) throw new Error('chunk line too long')
        this.line += String.fromCharCode(c)
        continue
      }
      const line = this.line.endsWith('\r') ? this.line.slice(0, -1) : this.line
      this.line = ''
      if (this.state === 'size') {
        const m = /^([0-9a-fA-F]{1,8})[ \t]*(;.*)?$/.exec(line)
        if (m === null) throw new Error('chunk size not valid')
        this.left = parseInt(m[1], 16)
        this.state = this.left === 0 ? 'trailer' : 'data'
      } else if (this.state === 'crlf') {
        if (line !== '') throw new Error('chunk data longer than its size')
        this.state = 'size'
      } else if (line === '') this.state = 'done'
    }
    return i
  }
}

/**
 * A refusal's body, after its head: `first` (what came with the head), then what the upstream
 * sends, to the client with back-pressure. `framing`: the Content-Length; 'chunked' (followed
 * to its end, and decoded unless `raw`); or 'close' (until the upstream closes, at most
 * MAX_REFUSAL_BODY bytes). Then the client is ended and `done` is called; `abort` when the
 * upstream's body ends early, runs over its bound, or has bad framing.
 */
function relayBody (upstream: Socket, first: Buffer, framing: number | 'chunked' | 'close', out: Duplex, raw: boolean, done: () => void, abort: () => void): void {
  let left = typeof framing === 'number' ? framing : MAX_REFUSAL_BODY
  const chunks = framing === 'chunked' ? new ChunkedFraming() : null
  let over = false
  const finish = (): void => {
    if (over) return
    over = true
    upstream.off('data', onData)
    upstream.off('end', onEnd)
    out.end()
    done()
  }
  const send = (b: Buffer): void => {
    if (b.length > 0 && !out.write(b)) { upstream.pause(); out.once('drain', () => upstream.resume()) }
  }
  function onData (d: Buffer): void {
    if (over) return
    if (chunks !== null) {
      const data: Buffer[] = []
      let used: number
      try { used = chunks.feed(d, data) } catch { over = true; abort(); return }
      left -= used
      if (left < 0) { over = true; abort(); return }
      if (raw) send(used === d.length ? d : d.subarray(0, used))
      else for (const b of data) send(b)
      if (chunks.done) finish()
      return
    }
    const part = d.length > left ? d.subarray(0, left) : d
    left -= part.length
    send(part)
    if (left === 0) { if (framing === 'close') { over = true; abort() } else finish() }
  }
  function onEnd (): void {
    if (framing === 'close') finish()
    else if (!over) { over = true; abort() }
  }
  upstream.on('data', onData)
  upstream.on('end', onEnd)
  if (typeof framing === 'number' && framing === 0) { finish(); return }
  onData(first)
}

/**
 * HTTP/1.1 Upgrade: the server's 'upgrade' event. Node hands every request with an Upgrade
 * header here. One that asks for another protocol (`h2c` from `curl --http2`, say) is served
 * as the plain request it also is (`asRequest`, `head` being the start of its body; then the
 * connection closes): a server may ignore Upgrade (RFC 9110 §7.8). With a chunked body it is
 * refused (400 SLUICE_ERR_UPGRADE_REFUSED), as before.
 */
export function handleUpgrade (deps: TunnelDeps, asRequest: (req: IncomingMessage, socket: Duplex, head: Buffer) => void) {
  return function onUpgrade (req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const t0 = performance.now()
    socket.on('error', () => {})
    const protocol = String(req.headers.upgrade ?? '').toLowerCase()
    if (!WEBSOCKET_TOKEN.test(protocol) && req.headers['transfer-encoding'] === undefined) { asRequest(req, socket, head); return }
    // TLS servers end a socket at the client's FIN (allowHalfOpen false; the cleartext server
    // keeps it open): a client that half-closes would lose what the upstream still sends.
    ;(socket as Socket).allowHalfOpen = true
    const snap = deps.current()
    // The tunnel's request carries the request ID upstream too (src/request-id.ts).
    const reqId = assignRequestId(req, snap.requestId)
    // RFC 9112 §3.2, as for any request (gateway.ts): one Host line on HTTP/1.1.
    const hosts = hostLines(req.rawHeaders)
    const badHost = hosts > 1 || (hosts === 0 && req.httpVersion === '1.1') || (hosts === 1 && !HOST_VALUE.test(req.headers.host as string))
    // A WebSocket handshake is a GET without a body (RFC 6455 §4.1). Node's parser does not read
    // one here (its bytes would arrive in `head`, as the first WebSocket frames): an upstream
    // that honours the Content-Length would wait for a body that only goes after its 101, and a
    // chunked one would reach it as frames. So a body is refused (other upgrades with a chunked
    // body are refused below, with the route's message).
    const body = WEBSOCKET_TOKEN.test(protocol) && (req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0)
    new Tunnel(deps, snap, {
      t0,
      reqId,
      clientMethod: req.method ?? 'GET',
      invalid: badHost
        ? { code: 'SLUICE_ERR_BAD_REQUEST', message: 'An HTTP/1.1 request needs exactly one valid Host header' }
        : body ? { code: 'SLUICE_ERR_UPGRADE_REFUSED', message: 'A WebSocket handshake carries no body (Content-Length or Transfer-Encoding)' } : null,
      method: req.method ?? 'GET',
      url: req.url ?? '/',
      headers: req.headers,
      socket: req.socket,
      remoteAddress: req.socket.remoteAddress,
      protocol,
      headerLines: req.rawHeaders.length / 2
    }, {
      proto: 'http/1.1',
      duplex: socket,
      extraHeaders: null,
      early: head,
      started: () => (socket as Socket).bytesWritten > 0,
      reject: (e) => { socket.end(rawError(e, snap.requestId, reqId)) },
      accept (text, rest) {
        const head = relayHead(text, true, snap.requestId, reqId)
        socket.write(rest.length === 0 ? head : Buffer.concat([head, rest]))
        ;(socket as Socket).setKeepAlive?.(true, TUNNEL_KEEPALIVE_MS)
        return null
      },
      // The upstream's answer: its head (relayHead), then its body with its own framing.
      refuse (_fields, _status, headBytes) {
        socket.write(relayHead(headBytes.toString('latin1', 0, headBytes.length - 4), false, snap.requestId, reqId))
        return null
      },
      rawBody: true,
      close (abort) {
        if (abort || socket.destroyed) { socket.destroy(); return }
        // Written out first; a client that keeps its half open is not waited for.
        if (!socket.writableEnded) socket.end()
        if (socket.writableFinished) socket.destroy()
        else {
          const t = setTimeout(() => socket.destroy(), LINGER_MS)
          t.unref()
          socket.once('finish', () => { clearTimeout(t); socket.destroy() })
        }
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

/** Response fields the upstream sent that may go on to an HTTP/2 client: not hop-by-hop nor named by its Connection, not the handshake's own, not Content-Length. */
function h2ResponseHeaders (fields: Array<[string, string]>): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {}
  const named = fields.filter(([k]) => k === 'connection').flatMap(([, v]) => connectionTokens(v))
  for (const [k, v] of fields) {
    if (isHopByHop(k) || named.includes(k) || k === 'content-length' || k === 'sec-websocket-accept') continue
    const prev = out[k]
    out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [String(prev), v]
  }
  return out
}

/**
 * HTTP/2 extended CONNECT (RFC 8441): called by the h2 stream hook for a stream whose
 * `:method` is CONNECT and that carries `:protocol`. `headers.host` is set from `:authority`.
 */
export function handleH2Connect (deps: TunnelDeps, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, rawHeaders: string[]): void {
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
    protocol: String(headers[':protocol']).toLowerCase(),
    // Counted from the fields as sent (a repeated field is one line each), as any h2 request is.
    headerLines: headerLineCount(rawHeaders, 2)
  }, {
    proto: 'h2',
    duplex: stream,
    early: null,
    // The upstream speaks RFC 6455: it needs a key and a version (an h2 client sends the version).
    extraHeaders: { 'sec-websocket-key': key, 'sec-websocket-version': typeof headers['sec-websocket-version'] === 'string' ? headers['sec-websocket-version'] : '13' },
    started: () => stream.headersSent,
    reject,
    accept (head, rest) {
      const fields = headFields(head)
      const accept = fields.find(([k]) => k === 'sec-websocket-accept')?.[1]
      if (accept !== createHash('sha1').update(key + WS_GUID).digest('base64')) {
        deps.log.warn({ reqId: id, path }, 'websocket upstream answered 101 without the right Sec-WebSocket-Accept')
        return { code: 'SLUICE_ERR_UPSTREAM_PROTOCOL', message: 'The upstream\'s WebSocket handshake is not valid (Sec-WebSocket-Accept)' }
      }
      // RFC 8441 §5: success is a 2xx; the subprotocol and extensions the upstream chose go with it.
      const bad = respond(200, fields, null)
      if (bad !== null) return bad
      if (rest.length > 0) stream.write(rest)
      return null
    },
    // The upstream's answer: its status and fields, then its body (decoded from chunked framing).
    refuse (fields, status, _headBytes, length) {
      return respond(status, fields, length !== null && status !== 204 && status !== 304 ? String(length) : null)
    },
    rawBody: false,
    close (abort) {
      if (stream.destroyed || stream.closed) return
      // Ended first: a stream Sluice closes is not counted as the client's reset
      // (src/edge/server.ts, rapid reset). NO_ERROR waits until what was written has gone out.
      if (!stream.writableEnded) stream.end()
      stream.close(abort ? h2c.NGHTTP2_CANCEL : h2c.NGHTTP2_NO_ERROR)
    }
  }).start()
}
