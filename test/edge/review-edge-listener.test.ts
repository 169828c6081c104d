// Review of the edge listener and WebSocket pass-through (src/edge/, src/upstream/websocket.ts)
// as an operator comparing it with nginx and Envoy: what crosses a tunnel's handshake (the 101
// and a refusal relayed to an HTTP/1.1 client), an upgrade request that carries a body, a path
// rewrite and the Sec-WebSocket-* fields, and HTTP/2 back-pressure on a large streamed answer.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createServer as createHttpServer, type ServerResponse } from 'node:http'
import { connect as h2connect } from 'node:http2'
import { connect as tlsConnect } from 'node:tls'
import { writeFileSync } from 'node:fs'
import { createServer as createNetServer, connect as netConnect, type AddressInfo, type Socket } from 'node:net'
import { once } from 'node:events'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { until } from '../helpers/wait.js'

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
const dir = mkdtempSync(join(tmpdir(), 'sluice-edge-review-'))
const keyFile = join(dir, 'k.pem')
const certFile = join(dir, 'c.pem')
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '2'], { stdio: 'ignore' })

const originSockets = new Set<Socket>()
/** Each handshake head the raw origin received, by path. */
const heads = new Map<string, string>()
/** The origin's socket of each handshake, by path. */
const socketOf = new Map<string, Socket>()
let connections = 0
/** A raw origin: reads the handshake head and answers per path. */
const origin = createNetServer((sock) => {
  connections++
  originSockets.add(sock)
  sock.once('close', () => originSockets.delete(sock))
  sock.on('error', () => {})
  let buf = Buffer.alloc(0)
  const onData = (d: Buffer): void => {
    buf = Buffer.concat([buf, d])
    const end = buf.indexOf('\r\n\r\n')
    if (end === -1) return
    sock.off('data', onData)
    const head = buf.toString('latin1', 0, end)
    const path = head.split(' ')[1]
    heads.set(path, head)
    socketOf.set(path, sock)
    const key = /\r\nsec-websocket-key: (.*)/i.exec(head)?.[1] ?? ''
    const accept = createHash('sha1').update(key + WS_GUID).digest('base64')
    if (path.startsWith('/hop101')) {
      sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Hop\r\nX-Hop: internal\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nSec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: chat\r\nX-Kept: yes\r\n\r\n`)
      sock.on('data', (x: Buffer) => sock.write(x))
      return
    }
    if (path.startsWith('/refuse-426')) {
      sock.write('HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n')
      return
    }
    if (path.startsWith('/refuse-keepalive')) {
      sock.write('HTTP/1.1 403 Forbidden\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: internal\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nnope!')
      return
    }
    // Echoes the frames after a 101.
    sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`)
    sock.on('data', (x: Buffer) => sock.write(x))
  }
  sock.on('data', onData)
})

/** An HTTP origin that streams a large body as fast as the gateway takes it. */
const BIG_CHUNK = 64 * 1024
let written = 0
let streamRes: ServerResponse | null = null
const bulkOrigin = createHttpServer((_req, res) => {
  streamRes = res
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'no-store' })
  const chunk = Buffer.alloc(BIG_CHUNK, 0x61)
  const pump = (): void => {
    while (written < 256 * 1024 * 1024) {
      written += BIG_CHUNK
      if (!res.write(chunk)) { res.once('drain', pump); return }
    }
    res.end()
  }
  pump()
})

let h1gw: TestGateway
let h2gw: TestGateway
before(async () => {
  origin.listen(0, '127.0.0.1')
  bulkOrigin.listen(0, '127.0.0.1')
  await Promise.all([once(origin, 'listening'), once(bulkOrigin, 'listening')])
  const routes = `upstreams:
  api: { url: "http://127.0.0.1:${(origin.address() as AddressInfo).port}", timeoutMs: 2000 }
  bulk: { url: "http://127.0.0.1:${(bulkOrigin.address() as AddressInfo).port}", timeoutMs: 60000 }
routes:
  - name: bulk
    match: { pathPrefix: /bulk }
    upstream: bulk
  - name: svc
    match: { pathPrefix: /svc }
    upstream: api
    rewrite: { stripPrefix: /svc, addPrefix: /v2 }
  - name: ws
    match: { pathPrefix: / }
    upstream: api
    websocket: true
`
  h1gw = await startTestGateway(routes)
  h2gw = await startTestGateway(`listen:\n  tls: { certFile: "${certFile}", keyFile: "${keyFile}" }\n  http2: true\n${routes}`)
})
after(async () => {
  for (const s of originSockets) s.destroy()
  streamRes?.destroy()
  origin.close()
  bulkOrigin.close()
  await h1gw.close()
  await h2gw.close()
  rmSync(dir, { recursive: true, force: true })
})

async function h1raw (request: string): Promise<Socket> {
  const sock = netConnect(Number(new URL(h1gw.url).port), '127.0.0.1')
  sock.on('error', () => {})
  await once(sock, 'connect')
  sock.write(request)
  return sock
}
/** What a socket receives until `done` says it has enough, or it closes. */
function readUntil (sock: Socket, done: (b: Buffer) => boolean): Promise<{ buf: Buffer, closed: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    const onData = (d: Buffer): void => { chunks.push(d); const b = Buffer.concat(chunks); if (done(b)) { sock.off('data', onData); resolve({ buf: b, closed: false }) } }
    sock.on('data', onData)
    sock.once('close', () => resolve({ buf: Buffer.concat(chunks), closed: true }))
  })
}
const handshake = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`
const headOf = (b: Buffer): string => b.toString('latin1', 0, b.indexOf('\r\n\r\n'))

test('the 101 relayed to an HTTP/1.1 client keeps Upgrade, Connection: Upgrade and the handshake fields, and loses the other hop-by-hop fields and those Connection names', { timeout: 20000 }, async () => {
  const sock = await h1raw(handshake('/hop101'))
  const { buf } = await readUntil(sock, (b) => b.includes('\r\n\r\n'))
  const head = headOf(buf).toLowerCase()
  sock.destroy()
  assert.match(head, /^http\/1\.1 101 /)
  assert.match(head, /\r\nupgrade: websocket/)
  assert.match(head, /\r\nconnection: upgrade(\r|$)/)
  assert.match(head, /\r\nsec-websocket-accept: /)
  assert.match(head, /\r\nsec-websocket-protocol: chat/)
  assert.match(head, /\r\nx-kept: yes/)
  assert.doesNotMatch(head, /x-hop/)
  assert.doesNotMatch(head, /keep-alive/)
  assert.doesNotMatch(head, /proxy-authenticate/)
})

test('a refusal relayed to an HTTP/1.1 client says Connection: close (the gateway closes after it) and loses the upstream\'s hop-by-hop fields', { timeout: 20000 }, async () => {
  const sock = await h1raw(handshake('/refuse-keepalive'))
  const { buf, closed } = await readUntil(sock, () => false)
  const head = headOf(buf).toLowerCase()
  assert.ok(closed)
  assert.match(head, /^http\/1\.1 403 /)
  assert.match(head, /\r\nconnection: close(\r|$)/)
  assert.doesNotMatch(head, /keep-alive/)
  assert.doesNotMatch(head, /x-hop/)
  assert.equal(buf.subarray(buf.indexOf('\r\n\r\n') + 4).toString(), 'nope!')
  // A 426 keeps the Upgrade it must carry (RFC 9110 §15.5.22), and names it in Connection.
  const s426 = await h1raw(handshake('/refuse-426'))
  const h426 = headOf((await readUntil(s426, () => false)).buf).toLowerCase()
  assert.match(h426, /^http\/1\.1 426 /)
  assert.match(h426, /\r\nupgrade: websocket/)
  assert.match(h426, /\r\nsec-websocket-version: 13/)
  assert.match(h426, /\r\nconnection: upgrade, close(\r|$)/)
})

test('HTTP/2: the 101 and a refusal lose the fields the upstream\'s Connection names', { timeout: 20000 }, async () => {
  const s = h2connect(h2gw.url, { rejectUnauthorized: false })
  s.on('error', () => {})
  await once(s, 'remoteSettings')
  const open = async (path: string): Promise<Record<string, unknown>> => {
    const st = s.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': path, ':authority': new URL(h2gw.url).host, 'sec-websocket-version': '13' }, { endStream: false })
    st.on('error', () => {})
    const [h] = await once(st, 'response')
    st.close()
    return h
  }
  const ok = await open('/hop101')
  const refused = await open('/refuse-keepalive')
  s.close()
  assert.equal(ok[':status'], 200)
  assert.equal(ok['sec-websocket-protocol'], 'chat')
  assert.equal(ok['x-kept'], 'yes')
  assert.equal(ok['x-hop'], undefined)
  assert.equal(refused[':status'], 403)
  assert.equal(refused['content-type'], 'text/plain')
  assert.equal(refused['x-hop'], undefined)
})

test('a WebSocket upgrade that carries a body gets 400 SLUICE_ERR_UPGRADE_REFUSED and no upstream handshake', { timeout: 20000 }, async () => {
  const before = connections
  for (const extra of ['Content-Length: 5\r\n', 'Transfer-Encoding: chunked\r\n']) {
    const body = extra.startsWith('Content') ? 'hello' : '5\r\nhello\r\n0\r\n\r\n'
    const sock = await h1raw(handshake('/body', extra) + body)
    const { buf, closed } = await readUntil(sock, () => false)
    assert.ok(closed, extra)
    assert.match(headOf(buf), /^HTTP\/1\.1 400 /, extra)
    assert.match(buf.toString(), /SLUICE_ERR_UPGRADE_REFUSED/, extra)
  }
  // Content-Length: 0 is no body: that handshake goes through.
  const sock = await h1raw(handshake('/body-zero', 'Content-Length: 0\r\n'))
  const { buf } = await readUntil(sock, (b) => b.includes('\r\n\r\n'))
  sock.destroy()
  assert.match(headOf(buf), /^HTTP\/1\.1 101 /)
  assert.equal(connections, before + 1)
  assert.equal(heads.has('/body'), false)
})

test('a WebSocket through a route with a prefix rewrite reaches the rewritten path with its Sec-WebSocket-* fields intact', { timeout: 20000 }, async () => {
  const sock = await h1raw(handshake('/svc/chat?room=1', 'Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n'))
  const { buf } = await readUntil(sock, (b) => b.includes('\r\n\r\n'))
  assert.match(headOf(buf), /^HTTP\/1\.1 101 /)
  const frame = Buffer.from([0x81, 0x82, 1, 2, 3, 4, 0x68 ^ 1, 0x69 ^ 2])
  sock.write(frame)
  const echoed = await readUntil(sock, (b) => b.length >= frame.length)
  sock.destroy()
  assert.deepEqual(echoed.buf.subarray(echoed.buf.length - frame.length), frame)
  const up = heads.get('/v2/chat?room=1')
  assert.ok(up !== undefined, [...heads.keys()].join(' '))
  assert.match(up, /\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==/i)
  assert.match(up, /\r\nsec-websocket-version: 13/i)
  assert.match(up, /\r\nsec-websocket-protocol: chat, superchat/i)
  assert.match(up, /\r\nsec-websocket-extensions: permessage-deflate; client_max_window_bits/i)
})

test('HTTP/2: a client that does not read a large streamed answer pauses the upstream read (back-pressure, bounded memory)', { timeout: 20000 }, async () => {
  const s = h2connect(h2gw.url, { rejectUnauthorized: false })
  s.on('error', () => {})
  const req = s.request({ ':path': '/bulk/x' })
  req.on('error', () => {})
  const [headers] = await once(req, 'response')
  assert.equal(headers[':status'], 200)
  req.pause()
  // The origin stops being able to write once the buffers on the way fill; it must stay far below the whole body.
  let last = -1
  await until('the origin to stop writing', () => { const still = written === last; last = written; return still }, { intervalMs: 500, tries: 120 })
  assert.ok(written < 64 * 1024 * 1024, `the origin wrote ${written} bytes to a client that reads nothing`)
  req.close()
  s.close()
})

/** Whether a TLS handshake at most `max` succeeds against the port. */
async function handshakes (port: number, max: 'TLSv1.2' | 'TLSv1.3'): Promise<boolean> {
  const sock = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, maxVersion: max })
  return await new Promise<boolean>((resolve) => {
    sock.once('secureConnect', () => { sock.destroy(); resolve(true) })
    sock.once('error', () => { sock.destroy(); resolve(false) })
  })
}

test('a reload that changes listen.tls.minVersion applies it to new connections, and says nothing of a restart; a changed handshakeTimeoutMs is logged as needing one', { timeout: 20000 }, async () => {
  const conf = (min: string, hs = 10000): string => `listen:\n  tls: { certFile: "${certFile}", keyFile: "${keyFile}", minVersion: ${min}, handshakeTimeoutMs: ${hs} }\nupstreams:\n  api: { url: "http://127.0.0.1:1" }\nroutes:\n  - name: r\n    upstream: api\n`
  const g = await startTestGateway(conf('TLSv1.2'))
  try {
    const port = Number(new URL(g.url).port)
    assert.equal(await handshakes(port, 'TLSv1.2'), true)
    g.write(conf('TLSv1.3'))
    assert.equal((await g.gw.reloader.reload('test')).ok, true)
    assert.equal(await handshakes(port, 'TLSv1.2'), false, 'a TLS 1.2 client is refused once minVersion is TLSv1.3')
    assert.equal(await handshakes(port, 'TLSv1.3'), true)
    const restartLines = (): unknown[] => g.logs.filter((l) => l.key === 'listen')
    assert.deepEqual(restartLines(), [])
    g.write(conf('TLSv1.3', 5000))
    assert.equal((await g.gw.reloader.reload('test')).ok, true)
    assert.equal(restartLines().length, 1)
  } finally {
    await g.close()
  }
})

test('HTTP/2: a client that resets its stream mid-body aborts the upstream request', { timeout: 20000 }, async () => {
  const s = h2connect(h2gw.url, { rejectUnauthorized: false })
  s.on('error', () => {})
  written = 0
  const req = s.request({ ':path': '/bulk/cut' })
  req.on('error', () => {})
  await once(req, 'response')
  await once(req, 'data')
  const res = streamRes as ServerResponse
  let closed = false
  res.once('close', () => { closed = true })
  req.close(0x8) // CANCEL
  await until('the upstream request is aborted', () => closed)
  s.close()
})

test('quiet tunnels outlive the listener\'s request, keep-alive and HTTP/2 idle timeouts (HTTP/1.1 cleartext and TLS, h2)', { timeout: 30000 }, async () => {
  const routes = `server: { headersTimeoutMs: 300, requestTimeoutMs: 400, keepAliveTimeoutMs: 300, http2: { idleTimeoutMs: 300 } }
upstreams:
  api: { url: "http://127.0.0.1:${(origin.address() as AddressInfo).port}" }
routes:
  - name: ws
    upstream: api
`
  const plain = await startTestGateway(routes)
  const secure = await startTestGateway(`listen:\n  tls: { certFile: "${certFile}", keyFile: "${keyFile}" }\n  http2: true\n${routes}`)
  try {
    const frame = Buffer.from([0x81, 0x82, 1, 2, 3, 4, 0x68 ^ 1, 0x69 ^ 2])
    const a = netConnect(Number(new URL(plain.url).port), '127.0.0.1')
    const b = tlsConnect({ host: '127.0.0.1', port: Number(new URL(secure.url).port), rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] })
    const socks = [a, b] as Socket[]
    for (const x of socks) { x.on('error', () => {}); x.write(handshake('/quiet')) }
    for (const x of socks) assert.match(headOf((await readUntil(x, (d) => d.includes('\r\n\r\n'))).buf), /^HTTP\/1\.1 101 /)
    const s = h2connect(secure.url, { rejectUnauthorized: false })
    s.on('error', () => {})
    const st = s.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/quiet', ':authority': new URL(secure.url).host, 'sec-websocket-version': '13' }, { endStream: false })
    st.on('error', () => {})
    assert.equal((await once(st, 'response'))[0][':status'], 200)
    // Quiet for longer than every timeout of the listener (several checking intervals).
    await new Promise((resolve) => setTimeout(resolve, 2500))
    for (const x of socks) {
      x.write(frame)
      const got = await readUntil(x, (d) => d.length >= frame.length)
      assert.deepEqual(got.buf.subarray(0, frame.length), frame)
      x.destroy()
    }
    st.write(frame)
    const [d] = await once(st, 'data')
    assert.deepEqual(d, frame)
    st.close()
    s.close()
  } finally {
    await plain.close()
    await secure.close()
  }
})

test('a client that goes away mid-tunnel (HTTP/1.1 socket reset, h2 stream reset) closes the origin\'s socket too', { timeout: 20000 }, async () => {
  const sock = await h1raw(handshake('/gone-h1'))
  await readUntil(sock, (b) => b.includes('\r\n\r\n'))
  const s = h2connect(h2gw.url, { rejectUnauthorized: false })
  s.on('error', () => {})
  const st = s.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/gone-h2', ':authority': new URL(h2gw.url).host, 'sec-websocket-version': '13' }, { endStream: false })
  st.on('error', () => {})
  await once(st, 'response')
  const up = ['/gone-h1', '/gone-h2'].map((p) => socketOf.get(p) as Socket)
  assert.ok(up.every((x) => x !== undefined && !x.closed))
  sock.resetAndDestroy()
  st.close(0x8)
  await until('both origin sockets close', () => up.every((x) => x.closed))
  s.close()
})

test('after a certificate reload the h2 listener still offers h2 by ALPN (and HTTP/1.1), with the new certificate', { timeout: 20000 }, async () => {
  const d = mkdtempSync(join(tmpdir(), 'sluice-edge-reload-'))
  const pair = (cn: string): unknown => execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(d, 'k.pem'), '-out', join(d, 'c.pem'), '-subj', `/CN=${cn}`, '-days', '2'], { stdio: 'ignore' })
  pair('first')
  const g = await startTestGateway(`listen:\n  tls: { certFile: "${join(d, 'c.pem')}", keyFile: "${join(d, 'k.pem')}" }\n  http2: true\nupstreams:\n  api: { url: "http://127.0.0.1:${(bulkOrigin.address() as AddressInfo).port}" }\nroutes:\n  - name: r\n    upstream: api\n`)
  const port = Number(new URL(g.url).port)
  const negotiate = async (alpn: string[]): Promise<{ proto: string | false | null, cn: string }> => {
    const sock = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ALPNProtocols: alpn })
    await once(sock, 'secureConnect')
    const out = { proto: sock.alpnProtocol, cn: String(sock.getPeerCertificate().subject.CN) }
    sock.destroy()
    return out
  }
  try {
    assert.deepEqual(await negotiate(['h2', 'http/1.1']), { proto: 'h2', cn: 'first' })
    pair('second')
    assert.equal((await g.gw.reloader.reload('test')).ok, true)
    assert.deepEqual(await negotiate(['h2', 'http/1.1']), { proto: 'h2', cn: 'second' })
    assert.deepEqual(await negotiate(['http/1.1']), { proto: 'http/1.1', cn: 'second' })
  } finally {
    await g.close()
    rmSync(d, { recursive: true, force: true })
  }
})
