// WebSocket (and only WebSocket) upgrades pass through as bytes: Sluice opens a TCP or TLS
// connection to the upstream, replays the handshake with forwarding headers, and pipes both
// ways. No frame parsing, so any subprotocol works.
import { connect as netConnect, isIP, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { Snapshot } from '../config/snapshot.js'
import { applyForwarding, HOST_VALUE, schemeOf } from '../forwarding.js'
import { SluiceError, rawError, type ErrorCode } from '../errors.js'
import { mapUpstreamError } from './errors.js'
import { assignRequestId } from '../request-id.js'
import { normalisePath } from '../stages/path.js'
import { upstreamRequestHeaders } from './headers.js'
import { rewritePath, editRequestHeaders } from './rewrite.js'
import type { TargetRegistry } from './targets.js'
import { hashKeyOf } from './balancer.js'

function reject (socket: Duplex, code: ErrorCode, message?: string): void {
  socket.end(rawError(new SluiceError(code, message)))
}

export function handleUpgrade (current: () => Snapshot, targets: TargetRegistry, log: Logger) {
  return function onUpgrade (req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {})
    const snap = current()
    // The tunnel's request carries the request ID upstream too (src/request-id.ts).
    assignRequestId(req, snap.requestId)
    let url = req.url ?? '/'
    const q = url.indexOf('?')
    let path = q === -1 ? url : url.slice(0, q)
    try {
      const norm = normalisePath(path, snap.config.server.allowEncodedSlashes)
      if (norm !== path) { url = q === -1 ? norm : norm + url.slice(q); path = norm }
    } catch {
      return reject(socket, 'SLUICE_ERR_BAD_PATH')
    }
    // RFC 9112 §3.2, as for any request (gateway.ts): one Host line on HTTP/1.1.
    let hosts = 0
    for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i].toLowerCase() === 'host') hosts++
    if (hosts > 1 || (hosts === 0 && req.httpVersion === '1.1') || (hosts === 1 && !HOST_VALUE.test(req.headers.host as string))) return reject(socket, 'SLUICE_ERR_BAD_REQUEST', 'An HTTP/1.1 request needs exactly one valid Host header')
    const upgrade = String(req.headers.upgrade ?? '').toLowerCase()
    const route = snap.router.match(req.headers.host, req.method ?? 'GET', path)
    if (route === null) return reject(socket, 'SLUICE_ERR_NO_ROUTE')
    if (upgrade !== 'websocket' || !route.websocket) return reject(socket, 'SLUICE_ERR_UPGRADE_REFUSED', `Route "${route.name}" does not accept an upgrade to ${JSON.stringify(upgrade)}`)
    const up = route.upstream
    // The same balancer as requests (hash: on the client address or header; a tunnel is one long
    // request, so it is not failed over: a refused connect answers 502).
    const set = targets.get(up.name)
    const picked = set.pick(Date.now(), up.balance === 'hash' ? hashKeyOf(up.hashKey, req.headers, req.socket.remoteAddress ?? '') : null, null)
    if (picked === null) return reject(socket, 'SLUICE_ERR_NO_HEALTHY_TARGET', `upstream "${up.name}": no target is in rotation`)
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
    const timer = setTimeout(() => { upstream.destroy(); reject(socket, 'SLUICE_ERR_UPSTREAM_TIMEOUT', `upstream "${up.name}": connect timeout`) }, up.config.connectTimeoutMs)
    upstream.once(secure ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer)
      // The same header rules as any request (hop-by-hop and Connection-named headers dropped,
      // forwarding headers replaced from untrusted peers), then the two upgrade headers.
      const headers = upstreamRequestHeaders(req.headers, up.config.preserveHost ? (req.headers.host ?? te.hostHeader) : te.hostHeader)
      if (route.headerEdits !== null) editRequestHeaders(headers, route.headerEdits)
      applyForwarding(headers, req.socket.remoteAddress, snap.trust, req.headers.host, schemeOf(req.socket))
      headers.connection = 'Upgrade'
      headers.upgrade = 'websocket'
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
      const onHead = (d: Buffer) => {
        buf = buf.length === 0 ? d : Buffer.concat([buf, d])
        const end = buf.indexOf('\r\n\r\n')
        if (end === -1) { if (buf.length > 65536) closeBoth(); return }
        upstream.off('data', onHead)
        const text = buf.toString('latin1', 0, end)
        if (/^HTTP\/1\.1 101 /.test(text)) {
          socket.write(buf)
          if (head.length) upstream.write(head)
          upstream.pipe(socket)
          socket.pipe(upstream)
          log.debug({ route: route.name, upstream: up.name }, 'websocket tunnel open')
          return
        }
        // Refused: relay the upstream's answer (its Content-Length, or until it closes), then close.
        const cl = /\r\ncontent-length:[ \t]*(\d+)/i.exec(text)
        if (cl === null) { socket.write(buf); upstream.pipe(socket); return }
        const total = end + 4 + Number(cl[1])
        const relay = (chunk: Buffer) => {
          buf = chunk === buf ? buf : Buffer.concat([buf, chunk])
          if (buf.length < total) return
          upstream.off('data', relay)
          socket.once('finish', closeBoth)
          socket.end(buf.subarray(0, total))
        }
        upstream.on('data', relay)
        relay(buf)
      }
      upstream.on('data', onHead)
    })
    upstream.on('error', (err) => {
      clearTimeout(timer)
      log.warn({ route: route.name, upstream: up.name, err: err.message }, 'websocket upstream error')
      if ((socket as Socket).bytesWritten === 0) {
        // The same codes as an ordinary request's: TLS, DNS, refused, reset (src/upstream/errors.ts).
        const mapped = mapUpstreamError(err, up.name, false)
        reject(socket, mapped.code, mapped.message)
      }
      else socket.destroy()
    })
    // WebSocket never relies on TCP half-close: when either side ends or closes, close both
    // (HTTP server sockets allow half-open connections, which would otherwise linger).
    const closeBoth = () => { socket.destroy(); upstream.destroy() }
    socket.on('end', closeBoth)
    socket.on('close', closeBoth)
    upstream.on('end', closeBoth)
    upstream.on('close', closeBoth)
  }
}
